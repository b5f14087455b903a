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
-- (NTT_BENCH_THREADS, default the CPUs online).  Best of NTT_BENCH_ROUNDS
-- (default 3) for each set alone and for both; prints MB/s and the ratio
-- b3sum time / ntt time (>= 0.9 is the target).
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
  for _, set in ipairs { { "small", small }, { "big", big }, { "both", all } } do
    local name, list = set[1], set[2]
    local bytes = bytes_of(list)
    local t_ntt, t_b3 = math.huge, math.huge
    for _ = 1, ROUNDS do
      t_ntt = math.min(t_ntt, (timed(function()
        local r = assert(verify.files(list, { threads = THREADS }))
        for _, x in ipairs(r) do assert(x.blake3, x.msg) end
      end)))
      t_b3 = math.min(t_b3, (timed(function() b3sum(list) end)))
    end
    print(("%-6s ntt verify %8.1f MB/s (%.3f s)   b3sum %8.1f MB/s (%.3f s)   ratio (b3sum time / ntt time) %.2f")
          :format(name, bytes / t_ntt / 1e6, t_ntt, bytes / t_b3 / 1e6, t_b3, t_b3 / t_ntt))
  end
end

main()
