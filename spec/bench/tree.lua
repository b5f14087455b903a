-- spec/bench/tree.lua: the tree stage's links (ntt.core.tree) against
-- `cp -al` of the same tree, on one fresh ext4 filesystem: 100,000 names in
-- 1,000 directories over 5,000 blobs.  ntt's tree is built first (it is
-- also cp's source), then each is made again into a new folder,
-- NTT_BENCH_ROUNDS (default 3) rounds, alternating (which goes first
-- alternates too); prints each one's times, median links/s and spread (max -
-- min over the median), the ratio of the medians with the range of the
-- per-round ratios, and the load average before and after.  The stage
-- around it (a batch query, a commit per 5,000 paths) is not timed here.
-- The filesystem image lives under NTT_BENCH_DIR (default
-- /var/tmp/ntt-bench-tree), removed at the end.
--   build/ntt spec/bench/tree.lua [names [threads]]
local bench = dofile((arg[0]:match("^(.*)/[^/]+$") or ".") .. "/common.lua")
local store = require "ntt.core.store"
local tree = require "ntt.core.tree"
local fs = require "ntt.core.fs"

local N = tonumber(arg[1]) or 100000
local THREADS = tonumber(arg[2]) or 4
local BLOBS, PER_DIR = 5000, 100

-- Rounds of contenders, alternated, each timed; median and spread (max -
-- min, in % of the median) of each, and the load average before and after.
local loadavg, median, spread = bench.loadavg, bench.median, bench.spread

local ROUNDS = bench.num("NTT_BENCH_ROUNDS", 3)
local work = os.getenv("NTT_BENCH_DIR") or "/var/tmp/ntt-bench-tree"
bench.sh { "rm", "-rf", work }
bench.sh { "mkdir", "-p", work }
local img, mnt = work .. "/fs.img", work .. "/mnt"
bench.fresh_ext4(img, mnt, 1024)
local ok, err = pcall(function()
  local st = assert(store.open(mnt .. "/store"))
  local blobs = {}
  for i = 1, BLOBS do blobs[i] = assert(st:put(("blob %d\n"):format(i))) end
  local entries = {}
  for i = 1, N do
    entries[i] = { path = ("p1/dir%04d/file %06d.dat"):format((i - 1) // PER_DIR, i), kind = "f",
                   blob = blobs[(i * 7919) % BLOBS + 1] }
  end
  local function ntt_tree(name)
    assert(fs.mkdirp(mnt .. "/" .. name))
    local s, fails = tree.build(st, mnt .. "/" .. name, entries, { threads = THREADS })
    assert(s and #fails == 0 and s.links == N, "tree.build failed")
  end
  ntt_tree("src")
  bench.sh { "sync" }
  local t_ntt, t_cp = {}, {}
  local load0 = loadavg()
  for round = 1, ROUNDS do
    local function cp()
      t_cp[round] = bench.timed(function() bench.sh { "cp", "-al", mnt .. "/src", mnt .. "/cp" .. round } end)
      bench.sh { "sync" }
    end
    local function nt()
      t_ntt[round] = bench.timed(function() ntt_tree("ntt" .. round) end)
      bench.sh { "sync" }
    end
    if round % 2 == 1 then cp(); nt() else nt(); cp() end
  end
  st:close()
  local function show(ts)
    local l = {}
    for i, t in ipairs(ts) do l[i] = ("%.2f"):format(t) end
    return table.concat(l, " ")
  end
  local rs = {}
  for i = 1, ROUNDS do rs[i] = t_cp[i] / t_ntt[i] end
  table.sort(rs)
  print(("tree: %d links in %d directories, %d threads; %d rounds alternated"):format(N, N // PER_DIR, THREADS, ROUNDS))
  print(("  ntt tree.build  median %6.2f s  %9.0f links/s  spread %4.1f%%  (%s s)"):format(median(t_ntt),
        N / median(t_ntt), spread(t_ntt), show(t_ntt)))
  print(("  cp -al          median %6.2f s  %9.0f links/s  spread %4.1f%%  (%s s)"):format(median(t_cp),
        N / median(t_cp), spread(t_cp), show(t_cp)))
  print(("  ratio (cp time / ntt time, of the medians) %.2f (rounds %.2f-%.2f)  (target >= 1.0)"):format(
        median(t_cp) / median(t_ntt), rs[1], rs[#rs]))
  print(("  load average: before %s, after %s"):format(load0, loadavg()))
end)
bench.sh({ "umount", mnt }, true)
bench.detach(img)
bench.sh { "rm", "-rf", work }
if not ok then error(err, 0) end
