-- lua/ntt/cmd/run.lua: `ntt run POLICY [TARGET...]`.
local usage = [[
usage: ntt run [options] POLICY [TARGET | --images DIR | --tree DIR | --rescue-of OLD IMAGE]...

Loads and validates POLICY (before any side effect), then runs its stages
over each TARGET: a disk image, a folder of images (with their .map files),
or a plain directory.  Whether a file is a disk image is read from its
content (a partition table or filesystem, ISO9660/UDF, a Zip disk, a blank
medium, a ddrescue mapfile beside it), never from its name.  A folder is
taken as its images when every entry not hidden is a disk image or one of
its ddrescue files, else as one directory medium whose files are all copied
(the policy's targets.folders: auto, images or tree).  Every entry of a
folder is logged as taken (as what) or left (and why) and counted in the
summary.

options:
  --images DIR  take each disk image in folder DIR as a medium (with its
                mapfile); every other entry is left, with its reason
  --tree DIR    take folder DIR as one directory medium (every file copied
                as a file, images too)
  --rescue-of OLD IMAGE
                IMAGE is a new rescue of the known medium OLD (its hash, a
                unique hash prefix or its name): linked to it whatever the
                maps say.  Without it, an image sharing size and first and
                last MiB with a known medium is linked as its new rescue
                when its ddrescue map rescued that medium further
  --more MEDIUM  rescue more: the device imaged as MEDIUM (the device's hash,
                or an image medium made from it; hash, prefix or name) is
                imaged again in the policy's image.more_phases, over the same
                image and map, making a new rescue in its lineage (its
                recorded device path is the target when no device is given)
  --workers N   worker processes for the copy stage (default: the policy's)
  --dry-run     print what the run would do -- per medium: filesystems and
                how each is read, entries by kind, files and bytes to copy,
                files the map says are damaged, ignore-pattern exclusions,
                stages to run and those done, copy threads -- and write
                nothing (no database row, no blob, no log file; the mounts
                it makes are undone); --json: the same as one JSON array
  --limit N     copy at most N files of each medium (one process); the
                medium stays not done, so a later run continues
  --replace     enumerate media again, replacing their entries (in one transaction)
  -v            more messages on stderr (info)
  --debug       everything on stderr (debug)
  -q            only errors on stderr

Exit status: 0 all done and clean: every file of every medium copied, or
terminal by policy without loss (excluded, not a file); 1 finished, but
files were skipped, failed or damaged (in this run or an earlier one), were
left pending, a medium had problems or places its walk could not read, or
an entry of a folder could not be looked at (only the media of this run
count: an older rescue's losses do not, once a new rescue is run); 2 could not run (policy, database, target: e.g. --images of a
folder with no image), or could not proceed: the store is full, below the
free space the policy keeps (store.min_free_bytes), read-only or failing --
the run stopped cleanly with one message naming the store and the space it
needs, nothing counted against the media; free space and run again; 64
usage; 130 interrupted (^C, SIGINT), 143 stopped by SIGTERM: copy workers
stop with their batches released, and the media this run mounted are
unmounted unless another live run uses them.]]

local EXIT = { ok = 0, problems = 1, failed = 2, usage = 64, interrupted = 130, terminated = 143 }

local SIGNAMES = { [2] = "SIGINT", [15] = "SIGTERM" }

-- The one line an interrupted run ends with: what it stopped and unmounted.
local function stopped_line(sig, results)
  local workers, unmounted, left, copying = 0, 0, 0, false
  for _, r in ipairs(results) do
    workers = workers + (r.ctx.workers_stopped or 0)
    copying = copying or r.ctx.copy_stopped or false
    if r.ctx.unmount == "unmounted" then unmounted = unmounted + 1
    elseif r.ctx.unmount == "left" then left = left + 1 end
  end
  local parts = { ("ntt run: stopped by %s"):format(SIGNAMES[sig] or ("signal " .. tostring(sig))) }
  if workers > 0 then parts[#parts + 1] = ("%d copy worker(s) stopped"):format(workers) end
  if copying then parts[#parts + 1] = "batches being copied released (pending again)" end
  parts[#parts + 1] = ("%d medium(s) unmounted"):format(unmounted)
  if left > 0 then parts[#parts + 1] = ("%d left mounted for another live run"):format(left) end
  return table.concat(parts, "; "), { signal = sig, workers = workers, unmounted = unmounted, left = left }
end

local function parse(args)
  local o = { targets = {} }
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--workers" then
      o.workers = math.tointeger(tonumber(args[i + 1] or ""))
      if not o.workers or o.workers < 1 then return nil, "--workers needs a positive number", "EINVAL" end
      i = i + 1
    elseif a == "--images" or a == "--tree" then
      local dir = args[i + 1]
      if not dir or dir == "" then return nil, a .. " needs a folder", "EINVAL" end
      o.targets[#o.targets + 1] = { path = dir, mode = a:sub(3) }
      i = i + 1
    elseif a == "--rescue-of" then
      local old, img = args[i + 1], args[i + 2]
      if not old or old == "" or not img or img == "" or img:match("^%-") then
        return nil, "--rescue-of needs a medium and an image", "EINVAL"
      end
      o.targets[#o.targets + 1] = img
      o.rescues = o.rescues or {}
      o.rescues[#o.rescues + 1] = { old = old, target = img }
      i = i + 2
    elseif a == "--limit" then
      o.limit = math.tointeger(tonumber(args[i + 1] or ""))
      if not o.limit or o.limit < 1 then return nil, "--limit needs a positive number of files", "EINVAL" end
      i = i + 1
    elseif a == "--dry-run" then o.dry_run = true
    elseif a == "--json" then o.json = true
    elseif a == "--more" then
      local m = args[i + 1]
      if not m or m == "" or m:match("^%-") then return nil, "--more needs a medium", "EINVAL" end
      o.more = o.more or {}
      o.more[#o.more + 1] = m
      i = i + 1
    elseif a == "--replace" then o.replace = true
    elseif a == "-v" or a == "--verbose" then o.stderr = "info"
    elseif a == "--debug" then o.stderr = "debug"; o.level = "debug"
    elseif a == "-q" or a == "--quiet" then o.stderr = "error"; o.quiet = true
    elseif a:match("^%-") then return nil, "unknown option " .. a, "EINVAL"
    elseif not o.policy then o.policy = a
    else o.targets[#o.targets + 1] = a end
    i = i + 1
  end
  if not o.policy then return nil, "a POLICY is required", "EINVAL" end
  -- `ntt run IMAGE`: a policy and a target are both needed; nothing is loaded
  if #o.targets == 0 and not o.more then return nil, "a POLICY and a TARGET are required", "EINVAL" end
  if o.json and not o.dry_run then return nil, "--json goes with --dry-run", "EINVAL" end
  return o
end

local function main(args)
  local ntt = require "ntt"
  local util = require "ntt.core.util"
  local o, err = parse(args)
  if not o then
    io.stderr:write("ntt run: ", err, "\n", usage, "\n")
    return EXIT.usage
  end
  -- 1. The policy, validated before anything else happens.
  local policy, perr = ntt.policy.load(o.policy)
  if not policy then
    io.stderr:write("ntt: ", perr, "\n")
    return EXIT.failed
  end
  local pipeline = require "ntt.pipeline"
  local ok, serr = pipeline.check(policy)
  if not ok then
    io.stderr:write(("ntt: %s: %s\n"):format(o.policy, serr))
    return EXIT.failed
  end
  if #o.targets == 0 and not o.more then
    io.stderr:write("ntt run: no TARGET given (an image, a folder of images, or a directory)\n")
    return EXIT.usage
  end
  -- --dry-run: the plan of every target, and nothing written (no log file,
  -- a read-only database session, mounts undone: ntt.plan)
  if o.dry_run then
    local db = require "ntt.db"
    local conn = db.connect { autostart = true }
    local plan = require "ntt.plan"
    local plans, pcode = plan.run(policy, o.targets, { conn = conn, workers = o.workers })
    if conn then conn:close() end
    if o.json then io.stdout:write(require("ntt.json").encode(require("ntt.json").array(plans)), "\n")
    else io.stdout:write(plan.text(plans)) end
    return pcode == 0 and EXIT.ok or EXIT.failed
  end
  -- 2. Logs under the data root.
  local config = require "ntt.config"
  local lcfg = policy.log or {}
  local log, lerr = ntt.log.open {
    dir = config.path("log"), level = o.level or lcfg.level or "info",
    stderr = o.stderr or "warn", max_bytes = lcfg.max_bytes, keep = lcfg.keep,
    fields = { pid = util.pid() },
  }
  if not log then
    io.stderr:write("ntt: ", lerr, "\n")
    return EXIT.failed
  end
  ntt.log.set_default(log)
  log:info("run_start", { policy = o.policy, targets = o.targets })
  -- 3. The database (the private cluster starts itself when NTT_DB_URL is unset).
  local db = require "ntt.db"
  local conn, derr = db.connect { autostart = true }
  if conn then
    local v, merr = db.migrate(conn)
    if not v then conn:close(); conn, derr = nil, merr end
  end
  if not conn then
    log:error("db_unavailable", { error = derr }, "cannot use the database: " .. tostring(derr))
    log:close()
    return EXIT.failed
  end
  -- --rescue-of: the older medium must be known, the new one an image file.
  local rescue_targets
  for _, rq in ipairs(o.rescues or {}) do
    local st = require("ntt.core.fs").stat(rq.target)
    local m, rerr = require("ntt.accounting").resolve(conn, rq.old)
    if not m or (st and st.type == "directory") then
      rerr = m and (rq.target .. ": --rescue-of takes an image, not a folder") or rerr
      log:error("rescue_of_invalid", { old = rq.old, target = rq.target, error = rerr }, "ntt run: --rescue-of: " .. tostring(rerr))
      conn:close()
      log:close()
      return EXIT.failed
    end
    rescue_targets = rescue_targets or {}
    rescue_targets[rq.target] = m.medium_hash
  end
  -- --more: the device imaged as that medium, at its recorded path unless one is given.
  local more_media
  if o.more then
    local given = #o.targets > 0
    more_media = {}
    for _, name in ipairs(o.more) do
      local row, merr = require("ntt.imaging").resolve(conn, name)
      if not row then
        log:error("more_invalid", { medium = name, error = merr }, "ntt run: --more: " .. tostring(merr))
        conn:close()
        log:close()
        return EXIT.failed
      end
      more_media[row.device_hash] = true
      if not given then o.targets[#o.targets + 1] = row.device_path end
    end
  end
  -- The run's row (rule hits gather there).
  local runs = require "ntt.runs"
  local run_id, rerr = runs.start(conn, o.policy)
  if not run_id then log:warn("run_not_recorded", { error = rerr }) end
  -- The control socket `ntt attach` connects to (ntt.live; docs/operations.md).
  local live = require "ntt.live"
  local sock, serr2 = live.open { run_id = run_id, log = log, policy = policy, db = conn }
  if not sock then log:warn("console_unavailable", { error = serr2 }) end
  -- 4. The stages: a first SIGINT lets the current step finish; a second one raises.
  util.raise_on_interrupt(false)
  local t0 = util.monotonic()
  local started = ntt.log.timestamp(util.now())
  local base = {
    policy = policy, policy_path = o.policy, log = log, db = conn, run_id = run_id,
    workers = o.workers or policy.workers or 1,
    interrupted = util.interrupted, replace = o.replace, rescue_targets = rescue_targets, limit = o.limit,
    more_media = more_media,
  }
  local results = pipeline.run(base, o.targets)
  util.raise_on_interrupt(true)
  live.close()
  -- ^C anywhere (a stage's EINTR, or the flag) is 130 (143 for SIGTERM),
  -- the largest code; the pipeline keeps the signal when it clears the
  -- flag to unmount.
  local sig = util.interrupted() or base.signal
  local stopped = sig and true or false
  for _, r in ipairs(results) do
    if r.interrupted or r.code == "EINTR" then stopped = true end
  end
  sig = sig or 2
  local code = stopped and (sig == 15 and EXIT.terminated or EXIT.interrupted) or EXIT.ok
  for _, r in ipairs(results) do
    if stopped then break
    elseif not r.ok then code = math.max(code, EXIT.failed)
    elseif #r.ctx.problems > 0 or (r.ctx.counts.skipped or 0) + (r.ctx.counts.failed or 0)
           + (r.ctx.counts.damaged or 0) > 0 then
      code = math.max(code, EXIT.problems)
    end
  end
  -- What the media hold at the end, whichever run (this one or an earlier)
  -- decided it: a file left pending by a run that was not interrupted (a
  -- policy without a copy stage, a filesystem not mounted), a file skipped,
  -- failed or damaged, a place the walk could not read -- all a loss.
  -- A new rescue: how many of the older medium's lost files it now holds.
  for _, r in ipairs(results) do
    local m = r.ctx.medium
    if m and m.rescue_of then
      local c, cerr = require("ntt.lineage").recovered(conn, m.hash)
      if c then
        r.ctx.recovered = c
        log:info("rescue_recovered", { medium = m.hash, rescue_of = c.rescue_of, lost = c.lost, recovered = c.recovered,
                                       not_copied = c.not_copied, not_found = c.not_found, places = c.places,
                                       places_read = c.places_read },
                 ("medium %s, a new rescue of %s: %d of its %d files skipped, failed, damaged or pending there are copied here (%d found but not copied, %d not found); %d of %d unreadable places read")
                 :format(m.hash, c.rescue_of, c.recovered, c.lost, c.not_copied, c.not_found, c.places_read, c.places))
      elseif c == nil then
        log:warn("rescue_recovered_unknown", { medium = m.hash, error = cerr })
      end
    end
  end
  if not stopped then
    local accounting = require "ntt.accounting"
    for _, r in ipairs(results) do
      local m = r.ok and r.ctx.medium
      if m and m.hash then
        local left, aerr = accounting.loss(conn, m.hash)
        if not left then
          log:error("loss_unknown", { medium = m.hash, error = aerr }, "cannot account for the medium: " .. tostring(aerr))
          code = math.max(code, EXIT.failed)
        elseif left.pending + left.lost + left.unread > 0 then
          log:warn("medium_not_clean", { medium = m.hash, pending = left.pending, lost = left.lost, unread = left.unread },
                   ("medium %s: %d files still to copy (pending, or failed and to be retried), %d skipped, failed for good or damaged, %d places not read")
                     :format(m.human or m.hash, left.pending, left.lost, left.unread))
          code = math.max(code, EXIT.problems)
        end
      end
    end
  end
  -- an entry of a folder that could not be looked at is a loss
  if results.targets and results.targets.counts.lost > 0 then code = math.max(code, EXIT.problems) end
  -- The summary counts problems and diagnostic events as the database holds them.
  for _, r in ipairs(results) do
    local m = r.ctx.medium
    if m and m.hash then
      local rec, perr = require("ntt.problems").count(conn, m.hash, started)
      if rec then r.ctx.recorded = rec else log:warn("problems_unknown", { medium = m.hash, error = perr }) end
    end
  end
  local text, totals = require("ntt.summary").format(results, util.monotonic() - t0)
  if not o.quiet then io.stdout:write(text) end
  if stopped then
    local line, fields = stopped_line(sig, results)
    log:warn("run_stopped", fields, line)
  end
  log:info("run_done", { exit = code, totals = totals, run = run_id })
  if run_id then runs.finish(conn, run_id, code) end
  ntt.policy.call_hook(policy, log, "on_finish", totals, results)
  conn:close()
  log:close()
  return code
end

return { summary = "run a policy's stages over targets (images, folders, directories)",
         usage = usage, main = main, EXIT = EXIT }
