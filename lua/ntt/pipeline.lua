-- lua/ntt/pipeline.lua: runs a policy's stages over its targets.
--
-- A stage named in policy.stages is the module ntt.stage.<name>, which
-- returns { run = function(ctx) -> true | nil, msg, code }, code being a
-- name from docs/errors.md ("EINTR" when ^C stopped it).  A stage given as a
-- function is called the same way.  ctx carries: policy, log, db (when the
-- run has one), target, medium (filled by identify), problems (list), and
-- counters for the end-of-run summary.  Each stage decides itself whether
-- its work is already done (stages are idempotent).  The policy's hooks:
-- on_stage(name, ctx) after each stage that succeeded, on_problem(hash,
-- kind, detail) for each problem recorded on a medium (ntt.problems.watch);
-- a failing hook is logged and the run goes on.
local M = {}

local function stage_impl(name)
  if type(name) == "function" then return { run = name }, "function" end
  if not require("ntt.modules").exists("ntt.stage." .. name) then
    return nil, ("stage '%s' is not available in this build of ntt"):format(name), "ENOSYS"
  end
  return require("ntt.stage." .. name), name
end

-- Check every stage exists before doing anything.
function M.check(policy)
  for _, s in ipairs(policy.stages or {}) do
    local impl, err, code = stage_impl(s)
    if not impl then return nil, err, code end
  end
  return true
end

-- The media of a run's targets (ntt.targets: classified by content, each
-- entry of a folder reported taken or left): expand(targets [, opts]) ->
-- media, report.  A target is a path or {path=, mode="auto"|"images"|"tree"};
-- opts.mode is the folders' default (policy targets.folders), opts.log
-- gets one line per decision.
function M.expand(targets, opts)
  return require("ntt.targets").expand(targets, opts)
end

-- A target whose run stopped early: its medium is still unmounted when the
-- policy has an unmount stage.  After ^C the flag is cleared first, or the
-- helper would be killed at once (proc.run stops its child on an interrupt);
-- a second ^C during this unmount still stops it; base.signal keeps the
-- signal's number.  An unmount stage that
-- failed is not tried again, unless ^C is what stopped it.
local function unmount_after(base, ctx, name, code)
  -- the signal that stopped the run outlives the flag (`ntt run`'s exit status)
  base.signal = require("ntt.core.util").interrupted() or base.signal
  if not ctx.mount_result or (name == "unmount" and code ~= "EINTR") then return end
  for _, later in ipairs(base.policy.stages) do
    if later == "unmount" then
      require("ntt.core.util").clear_interrupt()
      local uok, done, uerr = pcall(require("ntt.stage.unmount").run, ctx)
      if not (uok and done) then
        base.log:error("unmount_failed", { target = ctx.target, error = tostring(uok and uerr or done) })
      end
    end
  end
end

-- A database whose disk filled says which of its files it could not
-- extend; the operator needs to hear which disk, and that a rerun after
-- freeing it goes on where this one stopped.
local DISK_FULL = { ["53100"] = true }
local function disk_full(msg)
  local config = require "ntt.config"
  local where = config.db_url() and "the database server's disk"
                or ("the disk of ntt's database, %s"):format(config.path("pg"))
  return ("%s: %s is full; free space there, then run again (what is recorded is kept)"):format(tostring(msg), where)
end

-- run(ctx_base, targets) -> results (one per medium: {target=, ok=, failed_stage=,
-- error=, code=, interrupted=}); results.targets is the report of
-- M.expand.  A target that cannot be run at all (a folder that cannot be
-- read, --images of a folder with no image) is a result with
-- failed_stage "targets".
-- A stage that fails ends that target's run, but a mounted medium is still
-- unmounted when the policy has an unmount stage.  An interrupt (code
-- "EINTR" from a stage, or base.interrupted() true) ends the whole run
-- after that unmount: res.interrupted is set and no further target starts.
-- So does a failed stage that set ctx.halt (the store cannot take more:
-- res.halted; no further target starts).
function M.run(base, targets)
  local results = {}
  local policy = require "ntt.policy"
  local problems = require "ntt.problems"
  local function hook(name, ...) policy.call_hook(base.policy, base.log, name, ...) end
  local watched = problems.watch(function(...) hook("on_problem", ...) end)
  local function interrupted() return base.interrupted and base.interrupted() and true or false end
  local media, report = M.expand(targets, { mode = (base.policy.targets or {}).folders, log = base.log })
  results.targets = report
  for _, m in ipairs(media) do
    local target = m.path
    local ctx = setmetatable({ target = target, problems = {}, counts = {} }, { __index = base })
    local res = { target = target, ok = true, ctx = ctx }
    if m.error then
      res.ok, res.failed_stage, res.error, res.code = false, "targets", m.error, m.code
      base.log:error("target_failed", { target = target, error = m.error, code = m.code }, m.error)
    end
    for _, s in ipairs(res.ok and base.policy.stages or {}) do
      local impl, name = stage_impl(s)
      if interrupted() then
        res.ok, res.error, res.code, res.interrupted = false, "interrupted", "EINTR", true
        base.log:warn("run_interrupted", { stage = name, target = target }, target .. ": interrupted")
        unmount_after(base, ctx)
        break
      end
      local t0 = require("ntt.core.util").monotonic()
      require("ntt.live").stage(ctx, name)   -- what `ntt attach` shows
      base.log:debug("stage_start", { stage = name, target = target })
      local ok, done, err, code, state = pcall(impl.run, ctx)
      if not ok or not done then
        res.ok, res.failed_stage, res.error = false, name, ok and err or done
        res.code = ok and code or nil
        -- (the SQLSTATE, or a load's partial summary holding it)
        local sqlstate = type(state) == "table" and state.sqlstate or state
        if ok and code == "EDB" and DISK_FULL[sqlstate] then res.error = disk_full(res.error) end
        res.interrupted = res.code == "EINTR" or interrupted()
        base.log:error("stage_failed", { stage = name, target = target, error = tostring(res.error),
                                         code = res.code },
                       ("%s: stage %s failed: %s"):format(target, name, tostring(res.error)))
        unmount_after(base, ctx, name, res.interrupted and "EINTR" or res.code)
        res.halted = ctx.halt and true or nil
        break
      end
      base.log:info("stage_done", { stage = name, target = target,
                                    seconds = require("ntt.core.util").monotonic() - t0 })
      hook("on_stage", name, ctx)
    end
    require("ntt.live").stage(ctx, res.ok and "done" or ("failed: " .. tostring(res.failed_stage)))
    results[#results + 1] = res
    if res.interrupted or res.halted then break end
  end
  problems.watch(watched)
  return results
end

return M
