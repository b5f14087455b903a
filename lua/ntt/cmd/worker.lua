-- lua/ntt/cmd/worker.lua: `ntt worker POLICY HASH` -- one more copy worker.
--
-- Started by `ntt run --workers N` (or by hand, on this or another machine
-- sharing the database and the store): mounts the medium (the helper's
-- lock makes that the existing mount), then claims and copies batches until
-- nothing of the medium is pending.  Its counts so far go to stdout as one
-- JSON line after each batch and at the end (the last line is the total).
local usage = [[
usage: ntt worker POLICY HASH

Claims and copies batches of medium HASH's pending files until none is left.
Several workers (processes or machines sharing the database and the store)
cooperate through their claims.  After each batch and when done, prints
its counts so far (files, copied, new, deduplicated, skipped, failed,
damaged, salvaged, bytes, reasons, rule_hits) as one JSON line on stdout.

Exit status: 0 done; 3 stopped by the store (full, read-only or failing:
the counts so far are printed, the claims released); 2 could not run; 64 usage.]]

local function main(args)
  local ntt = require "ntt"
  local util = require "ntt.core.util"
  local policy, perr = args[1] and ntt.policy.load(args[1])
  if not policy or not args[2] then
    io.stderr:write(policy and usage or ("ntt: " .. tostring(perr or usage)), "\n")
    return policy and 64 or 2
  end
  local config = require "ntt.config"
  local log = assert(ntt.log.open { dir = config.path("log"), level = (policy.log or {}).level,
                                    fields = { pid = util.pid(), worker = true } })
  ntt.log.set_default(log)   -- the problems it records are logged here
  local db = require "ntt.db"
  local conn, err = db.connect { autostart = true }
  if not conn then log:error("db_unavailable", { error = err }, tostring(err)); return 2 end
  local rows = assert(conn:exec("SELECT medium_hash, medium_human, kind, image_path, map_path, size FROM medium WHERE medium_hash = $1", args[2]))
  local row = rows[1]
  if not row then log:error("no_medium", { medium = args[2] }, "no medium " .. args[2]); return 2 end
  local lease = require "ntt.lease"
  local leased = false
  local medium = { hash = row.medium_hash, human = row.medium_human, kind = row.kind,
                   image_path = row.image_path, map_path = row.map_path, size = row.size }
  local ctx = { db = conn, log = log, policy = policy, medium = medium, problems = {}, counts = {} }
  if medium.kind == "directory" then
    ctx.roots = { { fs_index = 0, root = medium.image_path } }
  else
    -- its own mount lease: the run that started it (or any other) leaves
    -- the mount while this worker reads it
    local lok, lerr = lease.take(conn, medium.hash)
    if not lok then log:error("lease_failed", { error = lerr }, tostring(lerr)); return 2 end
    leased = true
    local mp = policy.mount or {}
    local res, merr = ntt.mount.mount(medium.hash, medium.image_path,
                                      { map = medium.map_path, timeout = mp.timeout, reader = mp.reader })
    if not res then
      lease.release(conn, medium.hash)
      log:error("mount_failed", { error = merr }, tostring(merr)); return 2
    end
    ctx.mount_result, ctx.roots = res, ntt.mount.roots_of(res)
    if medium.map_path then
      ctx.inspection = { map = ntt.mapfile.read(medium.map_path) }
    end
  end
  -- its diagnostic events are problems too: the policy's on_problem hears them
  require("ntt.problems").watch(function(...) ntt.policy.call_hook(policy, log, "on_problem", ...) end)
  util.raise_on_interrupt(false)
  local opts = require("ntt.stage.copy").setup(ctx)
  -- a console socket of its own, which the run's console reaches (docs/operations.md)
  local live = require "ntt.live"
  live.open { name = "workers/" .. util.pid(), log = log, policy = policy, db = conn }
  live.stage(ctx, "copy")
  -- The counts, one JSON line, for the `ntt run` that started this worker
  -- (its summary covers every worker's files): after each batch written,
  -- so that a worker killed later still has those counted, and at the end.
  local function tell(s)
    local counts = { reasons = s.reasons, rule_hits = s.rule_hits }
    for _, k in ipairs(require("ntt.copier").COUNTS) do counts[k] = s[k] end
    io.write(require("ntt.json").encode(counts), "\n")
    io.flush()
  end
  opts.on_batch = tell
  local stats, cerr, _, fault = require("ntt.copier").run(opts)
  -- the lease goes, the mount stays: unmounting is the run's unmount stage
  if leased then lease.release(conn, medium.hash) end
  live.close()
  conn:close()
  local status = 0
  if not stats and type(fault) == "table" and fault.side == "store" then
    -- the run that started this worker says it once, for every process
    log:info("copy_stopped", { medium = medium.hash, error = cerr })
    stats, status = fault.stats, 3
  end
  if not stats then log:error("copy_failed", { error = cerr }, tostring(cerr)); log:close(); return 2 end
  log:info("worker_done", { medium = medium.hash, files = stats.files, copied = stats.copied })
  log:close()
  tell(stats)
  return status
end

return { summary = "one more copy worker for a medium (used by run --workers)", usage = usage, main = main }
