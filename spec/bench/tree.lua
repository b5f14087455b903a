-- spec/bench/tree.lua: the tree stage's links (ntt.core.tree) against
-- `cp -al` of the same tree, on one fresh ext4 filesystem: 100,000 names in
-- 1,000 directories over 5,000 blobs.  ntt's tree is built first (it is
-- also cp's source), then each is made again into a new folder, three times,
-- alternating; the best of each counts.  The stage around it (a batch
-- query, a commit per 5,000 paths) is not timed here.
--   build/ntt spec/bench/tree.lua [names [threads]]
local bench = dofile((arg[0]:match("^(.*)/[^/]+$") or ".") .. "/common.lua")
local store = require "ntt.core.store"
local tree = require "ntt.core.tree"
local fs = require "ntt.core.fs"

local N = tonumber(arg[1]) or 100000
local THREADS = tonumber(arg[2]) or 4
local BLOBS, PER_DIR = 5000, 100

local work = "/tmp/ntt-bench-tree"
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
  local best_ntt, best_cp = math.huge, math.huge
  for round = 1, 3 do
    local t = bench.timed(function() bench.sh { "cp", "-al", mnt .. "/src", mnt .. "/cp" .. round } end)
    best_cp = math.min(best_cp, t)
    bench.sh { "sync" }
    t = bench.timed(function() ntt_tree("ntt" .. round) end)
    best_ntt = math.min(best_ntt, t)
    bench.sh { "sync" }
  end
  st:close()
  print(("tree: %d links in %d directories, %d threads"):format(N, N // PER_DIR, THREADS))
  print(("  ntt tree.build  %6.2f s  %9.0f links/s"):format(best_ntt, N / best_ntt))
  print(("  cp -al          %6.2f s  %9.0f links/s"):format(best_cp, N / best_cp))
  print(("  ratio (cp time / ntt time) %.2f  (target >= 1.0)"):format(best_cp / best_ntt))
end)
bench.sh({ "umount", mnt }, true)
bench.detach(img)
bench.sh { "rm", "-rf", work }
if not ok then error(err, 0) end
