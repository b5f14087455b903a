-- spec/bench/pipeline.lua: the whole pipeline against cp -a, three runs
-- alternated in one bench.
--
--   build/ntt spec/bench/pipeline.lua     (root: loop devices, drop_caches)
--
-- A ~50,000-file ext4 image (NTT_BENCH_FILES 1-64 KiB files in
-- NTT_BENCH_DIRS, default 500, directories, ~20% duplicate content;
-- bench.files_image, cached per shape under NTT_BENCH_PIPE_DIR) goes
-- through `ntt run` of the default policy cut to identify, inspect, mount,
-- enumerate, copy, unmount (database included, the private cluster already
-- started; NTT_BENCH_STAGES=all keeps the default's tree, verify, report
-- and archive, NTT_BENCH_POLICY names another policy) and, as the peer, `cp -a`
-- of the same tree from the same image mounted read-only, then sync.  Each
-- writes into a freshly made ext4 image (ntt: a new data root, cluster
-- included) and starts with a cold page cache.  bench.rounds runs both
-- NTT_BENCH_ROUNDS (default 3) times, alternating, and prints each round's
-- ratio, the median and spread (target >= 2.0 in every run), and per round
-- of ntt the stage timings and the copy stage's parts from its log.
local util = require "ntt.core.util"
local proc = require "ntt.core.proc"
local json = require "ntt.json"
local bench = dofile((arg[0]:match("^(.*)/[^/]+$") or ".") .. "/common.lua")

local NFILES = bench.num("NTT_BENCH_FILES", 50000)
local NDIRS = bench.num("NTT_BENCH_DIRS", 500)
local WORK = os.getenv("NTT_BENCH_PIPE_DIR") or "/var/tmp/ntt-bench-pipe"
local NTT = bench.self()
-- The stages that do what cp -a does (the default policy's tree, verify,
-- report and archive come after it); NTT_BENCH_STAGES=all runs them all.
local STAGES = { "identify", "inspect", "mount", "enumerate", "copy", "unmount" }
if os.getenv("NTT_BENCH_STAGES") == "all" then STAGES = nil end
local POLICY = os.getenv("NTT_BENCH_POLICY") or bench.policy(WORK, STAGES)

local function sh(argv, may_fail) return bench.sh(argv, may_fail, 7200) end

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

-- What ntt's log says of one run: the stages' seconds, the copy stage's
-- parts summed over its batches, the claims.
local function from_log(home)
  local stats, stages = {}, {}
  local parts = { claim = 0, paths = 0, copy = 0, write = 0, wait = 0, n = 0, threads = {} }
  for line in io.lines(home .. "/log/ops.jsonl") do
    local e = json.decode(line)
    if e and e.event == "copied" then stats = e end
    if e and e.event == "copy_batch" then
      for _, k in ipairs { "claim", "paths", "copy", "write", "wait" } do parts[k] = parts[k] + (e[k] or 0) end
      parts.n = parts.n + 1
      parts.threads[#parts.threads + 1] = e.threads
    end
    if e and e.event == "stage_done" then stages[#stages + 1] = ("%s %.2fs"):format(e.stage, e.seconds) end
    if e and (e.level == "error" or e.level == "warn") then print("pipeline: logged " .. line) end
  end
  local out = { "  stages: " .. table.concat(stages, ", ") }
  if parts.n > 0 then
    out[#out + 1] = ("  copy stage (summed over workers): claims %.2fs, paths %.2fs, copy engine %.2fs (waited %.2fs), results %.2fs; threads per batch %s"):format(
      parts.claim, parts.paths, parts.copy, parts.wait, parts.write, table.concat(parts.threads, ","))
  end
  if stats.batches and stats.batches > 0 then
    out[#out + 1] = ("  claims: %d batches, %.1f ms per claim"):format(stats.batches,
                                                                     1000 * stats.claim_seconds / stats.batches)
  end
  return stats, table.concat(out, "\n")
end

local function main()
  if util.euid() ~= 0 then print("pipeline bench: needs root; skipped") return end
  local img = bench.files_image(WORK, { files = NFILES, dirs = NDIRS, min = 1024, max = 65536, seed = 7 })
  local size_mb = math.ceil(NFILES * 40 / 1024) + 512
  local src = WORK .. "/src"
  sh { "mkdir", "-p", src }
  local home
  local contenders = {
    { name = "ntt run",
      prepare = function()
        -- data root (store, the image's archive, database, logs) on a
        -- fresh ext4 image
        home = fresh("home", 2 * size_mb + 1024)
        sh { "env", "NTT_HOME=" .. home, NTT, "db", "start" }
        bench.drop_caches()
      end,
      run = function()
        local r = assert(proc.run { argv = { NTT, "run", "-q", POLICY, img },
                                    env = { NTT_HOME = home, NTT_DB_URL = false, NTT_MOUNT_ROOT = WORK .. "/mnt" }, timeout = 7200 })
        if r.code ~= 0 then
          sh({ "env", "NTT_HOME=" .. home, NTT, "db", "stop" }, true)
          release("home")
          error("ntt run exited " .. tostring(r.code) .. ": " .. r.stderr)
        end
      end,
      done = function(round)
        local stats, text = from_log(home)
        sh { "env", "NTT_HOME=" .. home, NTT, "db", "stop" }
        release("home")
        -- The rates are per file of this image: a count that differs means
        -- the figures describe another tree.
        if stats.files ~= NFILES then
          error(("pipeline: ntt copied %s files, the fixture has %d"):format(tostring(stats.files), NFILES))
        end
        print(("ntt run, round %d:\n%s"):format(round, text))
      end },
    { name = "cp -a",
      prepare = function()
        sh({ "umount", src }, true)
        sh { "mount", "-o", "loop,ro,noload", img, src }
        fresh("dst", size_mb)
        bench.drop_caches()
      end,
      run = function()
        sh { "cp", "-a", src, WORK .. "/dst/copy" }
        sh { "sync" }
      end,
      done = function()
        sh { "umount", src }
        release("dst")
      end },
  }
  print(("pipeline: %d files in %d dirs (%s), policy %s"):format(NFILES, NDIRS, img, POLICY))
  bench.rounds(contenders, { work = NFILES, unit = "files/s", ratios = { { "ntt run", "cp -a", target = 2.0 } } })
end

main()
