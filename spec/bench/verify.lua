-- spec/bench/verify.lua: `ntt verify`'s re-hashing (ntt.core.verify.files:
-- several blobs at once, a big one tree-hashed on every thread) against
-- `b3sum --num-threads T` over the same blobs, in one run.
--
--   build/ntt spec/bench/verify.lua
--
-- The blobs are written once under NTT_BENCH_DIR (default
-- /var/tmp/ntt-bench-verify): NTT_BENCH_VERIFY_SMALL (default 3000) files
-- of 4 KiB to 256 KiB, as a store of documents holds, and two files of
-- NTT_BENCH_VERIFY_BIG_MB (default 128) MiB, as a store of images and
-- videos holds.  The page cache is warm (everything read once before), so
-- hashing is measured, not the disk; both get the same thread count
-- (NTT_BENCH_THREADS, default the CPUs online).  NTT_BENCH_ROUNDS (default
-- 3) rounds alternated (which goes first alternates too) for each set alone
-- and for both; prints median MB/s and spread (max - min over the median) of
-- each, the ratio of the medians b3sum time / ntt time (>= 0.9 is the
-- target) with the range of the per-round ratios, and the load average
-- before and after each set.
local fs = require "ntt.core.fs"
local util = require "ntt.core.util"
local hash = require "ntt.core.hash"
local verify = require "ntt.core.verify"
local bench = dofile((arg[0]:match("^(.*)/[^/]+$") or ".") .. "/common.lua")

local SMALL = bench.num("NTT_BENCH_VERIFY_SMALL", 3000)
local BIG_MB = bench.num("NTT_BENCH_VERIFY_BIG_MB", 128)
local ROUNDS = bench.num("NTT_BENCH_ROUNDS", 3)
local THREADS = bench.num("NTT_BENCH_THREADS", util.cores())
local WORK = os.getenv("NTT_BENCH_DIR") or "/var/tmp/ntt-bench-verify"

local sh, timed = bench.sh, bench.timed

-- Rounds of contenders, alternated, each timed; median and spread (max -
-- min, in % of the median) of each, and the load average before and after.
local loadavg, median, spread = bench.loadavg, bench.median, bench.spread

local function make_blobs()
  sh { "mkdir", "-p", WORK .. "/small", WORK .. "/big" }
  local pool = WORK .. "/pool"
  if not fs.stat(pool) then sh { "sh", "-c", 'head -c 1048576 /dev/urandom > "$1"', "-", pool } end
  local f = assert(io.open(pool, "rb"))
  local rnd = f:read("a")
  f:close()
  local small, big = {}, {}
  local x = 12345
  for i = 1, SMALL do
    local p = ("%s/small/%05d"):format(WORK, i)
    x = (x * 1103515245 + 12345) % 2147483648
    local size = 4096 + x % (256 * 1024 - 4096)
    local st = fs.stat(p)
    if not (st and st.size == size) then
      local at = x % (#rnd - size)
      local g = assert(io.open(p, "wb"))
      g:write(("%08d"):format(i), rnd:sub(at + 9, at + size))
      g:close()
    end
    small[i] = p
  end
  for i = 1, 2 do
    local p = ("%s/big/%d"):format(WORK, i)
    local st = fs.stat(p)
    if not (st and st.size == BIG_MB * 1048576) then
      sh { "sh", "-c", 'head -c "$2" /dev/urandom > "$1"', "-", p, tostring(BIG_MB * 1048576) }
    end
    big[i] = p
  end
  return small, big
end

local function bytes_of(list)
  local n = 0
  for _, p in ipairs(list) do n = n + fs.stat(p).size end
  return n
end

local function b3sum(list)
  local argv = { "b3sum", "--num-threads", tostring(THREADS) }
  for _, p in ipairs(list) do argv[#argv + 1] = p end
  return sh(argv)
end

local function main()
  if not sh({ "sh", "-c", "command -v b3sum" }, true).stdout:match("b3sum") then
    print("b3sum is not installed: nothing to compare with")
    return
  end
  local small, big = make_blobs()
  local all = {}
  for _, p in ipairs(small) do all[#all + 1] = p end
  for _, p in ipairs(big) do all[#all + 1] = p end
  sh { "sh", "-c", 'cat "$1"/small/* "$1"/big/* > /dev/null', "-", WORK }   -- warm
  -- the same digests
  local res = assert(verify.files({ small[1], big[1] }, { threads = THREADS }))
  local want = b3sum({ small[1], big[1] }).stdout
  for i, p in ipairs({ small[1], big[1] }) do
    assert(want:find(res[i].blake3 .. "  " .. p, 1, true), "digest of " .. p)
  end
  assert(res[1].blake3 == hash.file(small[1]))
  print(("blobs: %d small (%.1f MB), 2 big (%d MiB each), %s; threads %d"):format(
    #small, bytes_of(small) / 1e6, BIG_MB, WORK, THREADS))
  -- warm: hashing measured; cold (the page cache emptied before each
  -- contender, untimed): what a verify of blobs not read for years meets
  for _, set in ipairs { { "small", small }, { "big", big }, { "both", all },
                         { "big, cold", big, true }, { "both, cold", all, true } } do
    local name, list, cold = set[1], set[2], set[3]
    local bytes = bytes_of(list)
    local t_ntt, t_b3 = {}, {}
    local load0 = loadavg()
    for round = 1, ROUNDS do
      local function nt()
        if cold then bench.drop_caches() end
        t_ntt[round] = timed(function()
          local r = assert(verify.files(list, { threads = THREADS }))
          for _, x in ipairs(r) do assert(x.blake3, x.msg) end
        end)
      end
      local function b3()
        if cold then bench.drop_caches() end
        t_b3[round] = timed(function() b3sum(list) end)
      end
      if round % 2 == 1 then nt(); b3() else b3(); nt() end
    end
    local rs = {}
    for i = 1, ROUNDS do rs[i] = t_b3[i] / t_ntt[i] end
    table.sort(rs)
    print(("%-10s ntt verify %8.1f MB/s (%.3f s, spread %4.1f%%)   b3sum %8.1f MB/s (%.3f s, spread %4.1f%%)   "
           .. "ratio (b3sum time / ntt time, medians) %.2f (rounds %.2f-%.2f)   load %s -> %s")
          :format(name, bytes / median(t_ntt) / 1e6, median(t_ntt), spread(t_ntt), bytes / median(t_b3) / 1e6,
                  median(t_b3), spread(t_b3), median(t_b3) / median(t_ntt), rs[1], rs[#rs], load0, loadavg()))
  end
end

main()
