-- spec/bench/pipeline.lua: the whole pipeline against cp -a, in one run.
--
--   build/ntt spec/bench/pipeline.lua     (root: loop devices, drop_caches)
--
-- A ~50,000-file ext4 image (1-64 KiB files in 500 directories, ~20%
-- duplicate content) goes through `ntt run policies/default.lua` (identify,
-- inspect, mount, enumerate, copy, unmount; database included, the private
-- cluster already started) and, as the peer, `cp -a` of the same tree from
-- the same image mounted read-only (NTT_BENCH_POLICY names another policy).  Each writes into a freshly made ext4
-- image and starts with a cold page cache.  Prints files/s, the ratio
-- (target >= 1.5) and the claim overhead per batch.
local util = require "ntt.core.util"
local proc = require "ntt.core.proc"
local json = require "ntt.json"
local bench = dofile((arg[0]:match("^(.*)/[^/]+$") or ".") .. "/common.lua")

local NFILES = bench.num("NTT_BENCH_FILES", 50000)
local NDIRS = bench.num("NTT_BENCH_DIRS", 500)
local WORK = os.getenv("NTT_BENCH_PIPE_DIR") or "/var/tmp/ntt-bench-pipe"
local NTT = bench.self()
local SOURCE = arg[0]:match("^(.*)/spec/bench/pipeline%.lua$") or "."
local POLICY = os.getenv("NTT_BENCH_POLICY") or SOURCE .. "/policies/default.lua"

local function sh(argv, may_fail) return bench.sh(argv, may_fail, 7200) end
local drop_caches = bench.drop_caches

-- Unmounts WORK/<name> and detaches its image's loop devices.
local function release(name)
  local img, mnt = WORK .. "/" .. name .. ".img", WORK .. "/" .. name
  sh({ "umount", mnt }, true)
  bench.detach(img)
end

-- A fresh ext4 image mounted at WORK/<name> (bench.fresh_ext4).
local function fresh(name, size_mb)
  local mnt = WORK .. "/" .. name
  release(name)
  bench.fresh_ext4(WORK .. "/" .. name .. ".img", mnt, size_mb)
  sh { "chmod", "0755", mnt }
  return mnt
end

-- The cached image is named by its shape, so a run with other
-- NTT_BENCH_FILES/NTT_BENCH_DIRS builds its own instead of timing another.
local function fixture()
  local name = ("medium-%d-%d"):format(NFILES, NDIRS)
  local img = WORK .. "/" .. name .. ".img"
  local done = io.open(WORK .. "/" .. name .. ".done")
  if done then done:close() return img end
  sh { "mkdir", "-p", WORK }
  local mnt = fresh(name, math.ceil(NFILES * 36 / 1024) + 256)
  local rnd = assert(io.open("/dev/urandom", "rb"))
  local pool = rnd:read(8 * 1048576)
  rnd:close()
  math.randomseed(7)
  local made = {}
  for d = 0, NDIRS - 1 do sh { "mkdir", "-p", ("%s/d%03d"):format(mnt, d) } end
  for n = 1, NFILES do
    local data
    if #made > 10 and math.random() < 0.2 then
      data = made[math.random(#made)]
    else
      local len = math.random(1024, 65536)
      local off = math.random(0, #pool - len)
      data = pool:sub(off + 1, off + len - 16) .. ("%016d"):format(n)
      if #made < 2000 then made[#made + 1] = data else made[math.random(#made)] = data end
    end
    local f = assert(io.open(("%s/d%03d/f%06d"):format(mnt, n % NDIRS, n), "wb"))
    f:write(data); f:close()
  end
  release(name)
  local f = assert(io.open(WORK .. "/" .. name .. ".done", "w")); f:close()
  return img
end

local function main()
  if util.euid() ~= 0 then print("pipeline bench: needs root; skipped") return end
  local img = fixture()
  local size_mb = math.ceil(NFILES * 40 / 1024) + 512
  -- Peer: cp -a from the image mounted read-only.
  local src = WORK .. "/src"
  sh { "mkdir", "-p", src }
  sh({ "umount", src }, true)
  sh { "mount", "-o", "loop,ro,noload", img, src }
  local dst = fresh("dst", size_mb)
  drop_caches()
  local t0 = util.monotonic()
  sh { "cp", "-a", src, dst .. "/copy" }
  sh { "sync" }
  local t_cp = util.monotonic() - t0
  sh { "umount", src }
  release("dst")
  -- ntt: data root (store, database, logs) on a fresh ext4 image.
  local home = fresh("home", size_mb + 512)
  local env = { NTT_HOME = home, NTT_DB_URL = false }
  sh { "env", "NTT_HOME=" .. home, NTT, "db", "start" }
  drop_caches()
  t0 = util.monotonic()
  local r = assert(proc.run { argv = { NTT, "run", "-q", POLICY, img }, env = env, timeout = 7200 })
  local t_ntt = util.monotonic() - t0
  if r.code ~= 0 then error("ntt run exited " .. tostring(r.code) .. ": " .. r.stderr) end
  local stats, stages = {}, {}
  local parts = { claim = 0, paths = 0, copy = 0, write = 0, n = 0, threads = {} }
  for line in io.lines(home .. "/log/ops.jsonl") do
    local e = json.decode(line)
    if e and e.event == "copied" then stats = e end
    if e and e.event == "copy_batch" then
      for _, k in ipairs { "claim", "paths", "copy", "write", "wait" } do parts[k] = (parts[k] or 0) + (e[k] or 0) end
      parts.n = parts.n + 1
      parts.threads[#parts.threads + 1] = e.threads
    end
    if e and e.event == "stage_done" then stages[#stages + 1] = ("%s %.2fs"):format(e.stage, e.seconds) end
    if e and (e.level == "error" or e.level == "warn") then print("pipeline: logged " .. line) end
  end
  sh { "env", "NTT_HOME=" .. home, NTT, "db", "stop" }
  release("home")
  -- The rates are per file of this image: a count that differs means the
  -- figures describe another tree.
  if stats.files and stats.files ~= NFILES then
    error(("pipeline: ntt copied %d files, the fixture has %d"):format(stats.files, NFILES))
  end
  print(("pipeline: %d files; stages: %s"):format(NFILES, table.concat(stages, ", ")))
  print(("files/s: ntt run %.0f (%.2f s), cp -a %.0f (%.2f s); ratio %.2f (target >= 1.5)"):format(
    NFILES / t_ntt, t_ntt, NFILES / t_cp, t_cp, t_cp / t_ntt))
  if parts.n > 0 then
    print(("copy stage time (summed over workers): claims %.2fs, paths %.2fs, copy engine %.2fs (of which waited for %.2fs), results %.2fs; threads per batch %s"):format(
      parts.claim, parts.paths, parts.copy, parts.wait, parts.write, table.concat(parts.threads, ",")))
  end
  if stats.batches and stats.batches > 0 then
    print(("claims: %d batches, %.1f ms per claim, copy threads %s"):format(
      stats.batches, 1000 * stats.claim_seconds / stats.batches, tostring(stats.threads)))
  end
end

main()
