-- spec/bench/scale.lua: how the pipeline's cost grows with the number of
-- files on a medium.
--
--   build/ntt spec/bench/scale.lua      (root: loop devices, drop_caches)
--   NTT_BENCH_SCALE=10000,50000,200000,1000000   the sizes (this default:
--                                  about 5 minutes here on a quiet machine,
--                                  25 under a load of 15, 1M most of it;
--                                  building the images once ~3 minutes more;
--                                  a size named twice, e.g.
--                                  50000,1000000,50000, runs twice and counts
--                                  with its median)
--
-- For each size an ext4 image of that many small files (1-8 KiB: smaller
-- than the pipeline bench's 1-64 KiB, so a million fit in ~7 GB; 100 per
-- directory, ~20% duplicate content; bench.files_image, cached per shape
-- under NTT_BENCH_SCALE_DIR, default /var/tmp/ntt-bench-scale) goes through
-- `ntt run` of the default policy cut to identify, inspect, mount,
-- enumerate, copy, unmount, as in pipeline.lua (NTT_BENCH_STAGES=all keeps
-- every stage, NTT_BENCH_POLICY names another policy) into a
-- fresh data root on its own ext4 image, the private cluster started
-- before and the page cache dropped.  Prints per size:
--   files/s      files / the wall time of `ntt run`
--   claim ms     the copy stage's claim query per batch (copy_batch's
--                claim field): median, and first -> last batch (growth
--                within the run)
--   peak RSS     VmHWM of every process of the run, sampled from
--                /proc/<pid>/status every 0.2 s (a process living less
--                than that may be missed): `ntt run` itself, its workers,
--                the mount helper, ntt-tskfs (the Sleuth Kit reader; on an
--                ext4 image the enumerate stage's --report pass) and FUSE
--                drivers, the postgres backends
--                (the largest; VmHWM counts the shared buffers a backend
--                touched) and the postmaster.  A process belongs to the run
--                when its environment holds this data root's NTT_HOME.
--   DB MB/M      database growth per million files: pg_database_size
--                after the run minus before it (schema migrated), and the
--                medium's own inode and path tables (pg_total_relation_size,
--                indexes and TOAST included), each scaled to 1,000,000 files
-- The run's ops log of each size is kept as WORK/ops-<files>.jsonl.
-- then the stages' seconds per size, and whether files/s falls by more
-- than 20% from 50k to the largest size (the target: it must not).
local util = require "ntt.core.util"
local proc = require "ntt.core.proc"
local fs = require "ntt.core.fs"
local json = require "ntt.json"
local bench = dofile((arg[0]:match("^(.*)/[^/]+$") or ".") .. "/common.lua")

local WORK = os.getenv("NTT_BENCH_SCALE_DIR") or "/var/tmp/ntt-bench-scale"
local NTT = bench.self()
-- pipeline.lua's stages: up to the copy (NTT_BENCH_STAGES=all: every
-- stage of the default policy)
local STAGES = { "identify", "inspect", "mount", "enumerate", "copy", "unmount" }
if os.getenv("NTT_BENCH_STAGES") == "all" then STAGES = nil end
local POLICY = os.getenv("NTT_BENCH_POLICY") or bench.policy(WORK, STAGES)
local SIZES = {}
for n in (os.getenv("NTT_BENCH_SCALE") or "10000,50000,200000,1000000"):gmatch("%d+") do SIZES[#SIZES + 1] = tonumber(n) end

local function sh(argv, may_fail) return bench.sh(argv, may_fail, 7200) end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- ---- the run's processes and their peaks ----

-- Which part of the run a process is, or false.  A postgres backend is
-- known by its parent: it writes its title over its environment.
local function role(pid, ppid, run_pid, marker, known)
  if pid == run_pid then return "ntt run" end
  local comm = (read("/proc/" .. pid .. "/comm") or "?"):gsub("%s+$", "")
  local cmd = (read("/proc/" .. pid .. "/cmdline") or ""):gsub("%z", " ")
  if known[ppid] == "postmaster" then
    -- client backends name user and database; the rest are the server's own
    if cmd:match("^postgres: %S+ %S+ ") and not cmd:match("^postgres: autovacuum") then return "pg backend" end
    return "pg other"
  end
  local env = read("/proc/" .. pid .. "/environ")
  if not (known[ppid] or (env and env:find(marker, 1, true))) then return false end
  if comm == "postgres" then return "postmaster" end
  if comm == "ntt" then return "ntt worker" end
  if comm:match("^ntt%-mount") then return "mount helper" end
  if comm:match("^ntt%-tskfs") then return "ntt-tskfs" end   -- the Sleuth Kit reader, or its report at enumerate
  if cmd:match("fuse") then return "FUSE (" .. comm .. ")" end
  return "other (" .. comm .. ")"
end

local function sampler(home, run_pid)
  local marker = "NTT_HOME=" .. home .. "\0"
  local self = util.pid()
  -- known[pid]: the role of the process now holding pid; started[pid]: its
  -- start time (pids are reused within a long run on a busy machine)
  local known, started, peaks = {}, {}, {}
  local s = {}
  function s.sample()
    for _, name in ipairs(fs.readdir("/proc") or {}) do
      local pid = tonumber(name)
      local stat = pid and pid ~= self and read("/proc/" .. pid .. "/stat")
      local ppid, start = (stat or ""):match("^%d+ %b() %S+ (%d+)" .. (" %S+"):rep(17) .. " (%d+)")
      if start then
        if started[pid] ~= start then
          started[pid] = start
          known[pid] = role(pid, tonumber(ppid), run_pid, marker, known)
        end
        local r = known[pid]
        if r then
          local st = read("/proc/" .. pid .. "/status")
          local hwm = st and tonumber(st:match("VmHWM:%s*(%d+)"))
          if hwm then
            local p = peaks[r] or { kib = 0, pids = {} }
            peaks[r] = p
            p.pids[pid] = math.max(p.pids[pid] or 0, hwm)
            p.kib = math.max(p.kib, hwm)
          end
        end
      end
    end
  end
  function s.text()
    local names = {}
    for r in pairs(peaks) do names[#names + 1] = r end
    table.sort(names)
    local out = {}
    for _, r in ipairs(names) do
      local n = 0
      for _ in pairs(peaks[r].pids) do n = n + 1 end
      out[#out + 1] = ("%s %d MB%s"):format(r, math.ceil(peaks[r].kib / 1024), n > 1 and (" (max of " .. n .. ")") or "")
    end
    return table.concat(out, ", ")
  end
  function s.peak(r) return peaks[r] and peaks[r].kib or 0 end
  return s
end

-- ---- the database's size ----

local function db_bytes(home)
  util.setenv("NTT_HOME", home)
  util.setenv("NTT_DB_URL", nil)
  local db = require "ntt.db"
  local conn = assert(db.connect { autostart = false, migrate = true })
  local total = assert(conn:exec("SELECT pg_database_size(current_database()) AS b"))[1].b
  -- the medium's own tables, where they exist under their partition names
  local tables = 0
  for _, m in ipairs(assert(conn:exec("SELECT medium_hash FROM medium"))) do
    local it, pt = db.partitions(conn, m.medium_hash)
    if it then
      local r = assert(conn:exec("SELECT pg_total_relation_size($1::regclass) + pg_total_relation_size($2::regclass) AS b",
                                 it, pt))
      tables = tables + r[1].b
    end
  end
  conn:close()
  return tonumber(total), tables
end

-- ---- one size ----

local function release(name)
  sh({ "umount", WORK .. "/" .. name }, true)
  bench.detach(WORK .. "/" .. name .. ".img")
end

local function median_of(list)
  return #list > 0 and bench.median(list) or 0
end

local function one(n)
  local img = bench.files_image(WORK, { files = n, min = 1024, max = 8192, seed = 7 })
  release("home")
  -- store (~80% of the files unique, 1-2 blocks each), the image's
  -- archive (as big as the files), database, logs
  local home = bench.fresh_ext4(WORK .. "/home.img", WORK .. "/home", math.ceil(n * 22 / 1024) + 2048,
                                n * 1.3 + 200000)
  sh { "chmod", "0755", home }
  sh { "env", "NTT_HOME=" .. home, NTT, "db", "start" }
  local before = db_bytes(home)
  bench.drop_caches()
  local t0 = util.monotonic()
  local p = assert(proc.spawn { argv = { NTT, "run", "-q", POLICY, img }, env = { NTT_HOME = home, NTT_DB_URL = false, NTT_MOUNT_ROOT = WORK .. "/mnt" },
                                stdout = WORK .. "/run.out", stderr = WORK .. "/run.err" })
  local s = sampler(home, p:pid())
  local how, code
  repeat
    s.sample()
    how, code = p:wait(0.2)
  until how
  local secs = util.monotonic() - t0
  if how ~= "exit" or code ~= 0 then
    sh({ "env", "NTT_HOME=" .. home, NTT, "db", "stop" }, true)
    release("home")
    error(("ntt run: %s %s: %s"):format(how, tostring(code), read(WORK .. "/run.err") or ""))
  end
  local after, tables = db_bytes(home)
  local stats, stages, claims = {}, {}, {}
  for line in io.lines(home .. "/log/ops.jsonl") do
    local e = json.decode(line)
    if e and e.event == "copied" then stats = e end
    if e and e.event == "copy_batch" and e.claim then claims[#claims + 1] = e.claim end
    if e and e.event == "stage_done" then stages[e.stage] = (stages[e.stage] or 0) + e.seconds end
    -- the walk and load alone; the rest of the enumerate stage is the
    -- Sleuth Kit's report of deleted entries and its rows
    if e and e.event == "enumerated" then stages["enumerate: walk+load"] = (stages["enumerate: walk+load"] or 0) + e.seconds end
    if e and (e.level == "error" or e.level == "warn") then print("scale: logged " .. line) end
  end
  sh { "env", "NTT_HOME=" .. home, NTT, "db", "stop" }
  -- kept for a closer look at the batches (copy_batch) of each size
  sh { "cp", home .. "/log/ops.jsonl", ("%s/ops-%d.jsonl"):format(WORK, n) }
  release("home")
  if stats.files ~= n then error(("scale: ntt copied %s files, the image has %d"):format(tostring(stats.files), n)) end
  return { n = n, secs = secs, rate = n / secs, claims = claims, stages = stages, procs = s,
           db = (after - before) * 1e6 / n, tables = tables * 1e6 / n, batches = stats.batches }
end

local function main()
  if util.euid() ~= 0 then print("scale bench: needs root; skipped") return end
  print(("scale: %s files of 1-8 KiB, 100 per directory; policy %s; load %s"):format(
    table.concat(SIZES, ", "), POLICY, bench.loadavg()))
  local rows = {}
  for _, n in ipairs(SIZES) do
    local r = one(n)
    rows[#rows + 1] = r
    print(("%8d files: %.1f s, %.0f files/s; claims %d, %.1f ms median (first %.1f, last %.1f); DB %.0f MB per M files (medium tables %.0f MB); load %s"):format(
      n, r.secs, r.rate, #r.claims, 1000 * median_of(r.claims), 1000 * (r.claims[1] or 0),
      1000 * (r.claims[#r.claims] or 0), r.db / 1048576, r.tables / 1048576,
      bench.loadavg()))
    print("          peak RSS: " .. r.procs.text())
    io.stdout:flush()
  end
  print()
  print(("%9s %9s %8s %17s %9s %9s %9s %9s %9s %11s %11s"):format("files", "seconds", "files/s", "claim ms med/max",
        "ntt run", "workers", "helper", "tskfs", "pg back.", "DB MB/M", "tables MB/M"))
  for _, r in ipairs(rows) do
    local mx = 0
    for _, c in ipairs(r.claims) do mx = math.max(mx, c) end
    print(("%9d %9.1f %8.0f %8.1f/%-8.1f %6d MB %6d MB %6d MB %6d MB %6d MB %11.0f %11.0f"):format(
      r.n, r.secs, r.rate, 1000 * median_of(r.claims), 1000 * mx,
      math.ceil(r.procs.peak("ntt run") / 1024), math.ceil(r.procs.peak("ntt worker") / 1024),
      math.ceil(r.procs.peak("mount helper") / 1024), math.ceil(r.procs.peak("ntt-tskfs") / 1024),
      math.ceil(r.procs.peak("pg backend") / 1024),
      r.db / 1048576, r.tables / 1048576))
  end
  local names = {}
  for _, r in ipairs(rows) do for k in pairs(r.stages) do names[k] = true end end
  local list = {}
  for k in pairs(names) do list[#list + 1] = k end
  table.sort(list)
  print()
  print("stage seconds per size:")
  for _, r in ipairs(rows) do
    local w = {}
    for _, k in ipairs(list) do w[#w + 1] = ("%s %.1f"):format(k, r.stages[k] or 0) end
    print(("%9d  %s"):format(r.n, table.concat(w, ", ")))
  end
  -- A size given more than once (50000,1000000,50000: brackets the big
  -- one against load that changes meanwhile) counts with its median rate.
  local rates, top = {}, 0
  for _, r in ipairs(rows) do
    rates[r.n] = rates[r.n] or {}
    table.insert(rates[r.n], r.rate)
    top = math.max(top, r.n)
  end
  if rates[50000] and top > 50000 then
    local base, last = bench.median(rates[50000]), bench.median(rates[top])
    local fall = 1 - last / base
    print(("files/s from 50000 to %d: %.0f -> %.0f (medians of %d and %d runs), %s %.0f%% (target: falls by at most 20%%): %s"):format(
      top, base, last, #rates[50000], #rates[top], fall >= 0 and "falls" or "rises", math.abs(100 * fall),
      fall <= 0.2 and "met" or "NOT met"))
  end
end

main()
