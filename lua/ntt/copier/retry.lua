-- lua/ntt/copier/retry.lua: what happens to the files of a batch that
-- failed: attempts counted in their rows, backoff, findings gathered at the
-- checkpoint and handed to the policy's diagnose rules, give-up at the
-- maximum, a remount when a rule asks for one; every decision recorded.
--
--   retry.new(o) -> d
--     o = { rows=ntt.copier.rows, policy=, log=, medium=, worker=, roots={fs_index -> root},
--           devices={ "loop3", ... }, remount=function() -> roots | nil, msg, code,
--           view=function(item) -> findings of the honest view ("view:beyond_eof", ...),
--           view_file=the honest view's file or nil (the mount check opens it) }
--     A file whose mount is lost (ENOTCONN, or the mount check is not ok)
--     is handed to the rules at once, not at the checkpoint: every file of
--     a lost mount fails alike, and the rules decide whether to remount.
--   d:settle(failed, final, recopy) -> true | nil, msg, code
--     failed: items { fs_index=, ino=, attempts=, root=, path=,
--             res={err=, errno=, phase=, msg=, offset=} } (the engine's failure fields)
--     final:  the batch's results; each decided file gets its entry there
--     recopy(items) -> the items that failed again (each with its new res),
--             or nil, msg, code, more: settle stops there and returns that
--     Retries until every file is decided or ^C (the undecided then go back
--     pending, their claims released by the batch's write).  A lost mount
--     that cannot be mounted again (the budget mount.remounts spent, or the
--     helper failing) ends it with nil, msg, "ENOTCONN": the copy stops.
--   d:record(processed, errored) -> true | nil, msg, code
--     after a batch committed: its diagnostic events and the medium's
--     summaries (beyond_eof_detected, high_error_rate) into medium.problems
--   d:rule_hits() -> { [rules.label] = hits }
--   d.kernel: "available" | "unavailable: why";  d:close()
local util = require "ntt.core.util"
local kmsg = require "ntt.core.kmsg"
local json = require "ntt.json"
local S = require "ntt.states"

-- The findings of a failed read: at the maximum, such a file is failed_permanent.
local IO_FINDINGS = { detected_io_error = true, detected_beyond_eof = true }

-- the decisions: the policy's rules over the findings diagnose gathers
local rules = require "ntt.rules"
local diagnose = require "ntt.diagnose"
local problems = require "ntt.problems"

local D = { __name = "ntt.copier.retry" }   -- the metatable of a retry state
D.__index = D
local M = {}

function M.backoff(b, attempt)
  local d = (b.base or 0.02) * (b.factor or 1.5) ^ math.max(0, attempt - 1)
  return math.min(d, b.cap or 0.25)
end

local function trim(s, n)
  s = tostring(s or "")
  return #s > n and s:sub(1, n) or s
end

local function now() return require("ntt.log").timestamp(util.now()) end

function M.new(o)
  local rp = o.policy.retry or {}
  local kernel, kerr = kmsg.open()
  return setmetatable({
    rows = o.rows, policy = o.policy, log = o.log, medium = o.medium, worker = o.worker,
    roots = o.roots, devices = o.devices or {}, remount = o.remount, view = o.view,
    view_file = o.view_file, directory = (o.medium or {}).kind == "directory",
    checkpoint = rp.checkpoint or 10, max = rp.max or 50, history = rp.history or 10,
    confirm = rp.confirm or { attempts = 5, seconds = 2 },
    backoff_of = rp.backoff or {},
    kmsg = kernel, kernel = kernel and "available" or ("unavailable: " .. tostring(kerr)),
    kernel_lines = {}, hits = {}, events = {}, summary = {},
  }, D)
end

-- This medium's kernel lines since the copy began (the last 500).
function D:read_kernel()
  if not self.kmsg then return end
  local lines = self.kernel_lines
  for _, rec in ipairs(self.kmsg:read()) do
    for _, d in ipairs(self.devices) do
      if rec.text:find((d:gsub("^/dev/", "")), 1, true) then
        lines[#lines + 1] = rec.text
        if #lines > 500 then table.remove(lines, 1) end
        break
      end
    end
  end
end

function D:event(item, attempts, checks, action)
  local res = item.res
  -- a decision the kernel's lines took part in keeps the last of them
  -- (`kernel(h)` in ntt repl shows them)
  local kernel
  for _, c in ipairs(checks) do
    if tostring(c):find("^dmesg:") and #self.kernel_lines > 0 then
      kernel = json.array(table.move(self.kernel_lines, math.max(1, #self.kernel_lines - 4), #self.kernel_lines, 1, {}))
      break
    end
  end
  self.events[#self.events + 1] = {
    ino = item.ino, fs_index = item.fs_index, retry_count = attempts, checks = json.array(checks),
    action = action, timestamp = now(), worker_id = self.worker,
    exception_type = res.err, exception_msg = trim(res.msg, 100), kernel = kernel,
  }
end

-- The checkpoint: findings to the rules; returns true when the file is
-- tried again, and whether a remount is asked for.
function D:diagnose(item, attempts, final)
  local res, policy = item.res, self.policy
  local checks = diagnose.gather {
    err = res.err, phase = res.phase, root = item.root, view_file = self.view_file, directory = self.directory,
    kernel_lines = self.kernel_lines,
    devices = self.devices, patterns = policy.kernel_patterns, kernel_unavailable = self.kmsg == nil,
    -- no loop device (a directory medium): the kernel confirms nothing, a
    -- failure repeated alike confirms itself (retry.confirm)
    tries = #self.devices == 0 and item.tries or nil, confirm = self.confirm,
    more = self.view and self.view(item) }
  local action = rules.decide(policy.diagnose or {}, checks, self.hits) or rules.CONTINUE
  if action.kind == "skip" then
    final[#final + 1] = { fs_index = item.fs_index, ino = item.ino, state = S.SKIPPED, reason = action.reason }
    self:event(item, attempts, checks, "skipped")
    -- A file skipped on the finding (not on the wording of the rule's reason)
    -- counts towards the medium's beyond-EOF summary.
    if diagnose.beyond_eof(checks) then
      local b = self.summary.beyond_eof or { fs_index = item.fs_index, ino = item.ino, count = 0 }
      b.count = b.count + 1
      self.summary.beyond_eof = b
    end
    return false
  elseif action.kind == "give_up" then
    final[#final + 1] = { fs_index = item.fs_index, ino = item.ino, state = action.reason,
                          reason = S.REASONS.given_up:format(trim(res.msg, 200)) }
    self:event(item, attempts, checks, "max_retries")
    return false
  elseif action.kind == "remount" then
    self:event(item, attempts, checks, "remounted")
    return true, true
  end
  self:event(item, attempts, checks, "continuing")
  return true
end

-- A medium with no loop device has no kernel to wait for: once a failure
-- has repeated alike retry.confirm.attempts times, the findings are
-- gathered then (once per file and process, besides the checkpoints), so
-- the file is decided well within the 2 s budget.
function D:confirmed_early(item)
  if #self.devices > 0 or item.early then return false end
  local c = self.confirm
  if not diagnose.repeated(item.tries, c.attempts or 5, c.seconds or 2) then return false end
  item.early = true
  return true
end

-- One round: count the attempt of each failed item, decide what is
-- decided, remount if asked.  Returns the items to try again.
function D:round(failed, final, round)
  local errs, t = {}, util.monotonic()
  for i, item in ipairs(failed) do
    errs[i] = { err = item.res.err, msg = trim(item.res.msg, 200), offset = item.res.offset, at = now() }
    local tries = item.tries or {}
    tries[#tries + 1] = { err = item.res.err, offset = item.res.offset, at = t }
    if #tries > 50 then table.remove(tries, 1) end
    item.tries = tries
  end
  local attempts_of, err, code, state = self.rows:count_attempts(failed, errs, self.history)
  if not attempts_of then return nil, err, code, state end
  self:read_kernel()
  local again, reset = {}, {}
  local lost = {}   -- root -> whether its mount is lost (checked once a round)
  local function mount_lost(item)
    if self.directory or not item.root then return false end
    if item.res.err == "ENOTCONN" then return true end
    if lost[item.root] == nil then
      lost[item.root] = diagnose.mount_check(item.root, self.view_file) ~= "mount_check:ok"
    end
    return lost[item.root]
  end
  for _, item in ipairs(failed) do
    local attempts = attempts_of[item.fs_index .. ":" .. item.ino] or (item.attempts + round)
    local res = item.res
    if attempts >= self.max then
      local class = diagnose.classify(res)
      final[#final + 1] = { fs_index = item.fs_index, ino = item.ino,
                            state = IO_FINDINGS[class] and S.FAILED_PERMANENT or S.FAILED_RETRYABLE,
                            reason = S.REASONS.after_attempts:format(res.err, attempts, trim(res.msg, 200)) }
      self:event(item, attempts, { class }, "max_retries")
    elseif (attempts >= self.checkpoint and (attempts - self.checkpoint) % self.checkpoint == 0)
        or self:confirmed_early(item) or mount_lost(item) then
      local retry, remount = self:diagnose(item, attempts, final)
      if retry then again[#again + 1] = item end
      if remount then reset[#reset + 1] = item end
    else
      again[#again + 1] = item
    end
  end
  if #reset > 0 and self.remount then
    local m = self.medium
    local t0 = util.monotonic()
    local new_roots, rerr, rcode = self.remount()
    local seconds = util.monotonic() - t0
    if new_roots then
      for _, r in ipairs(new_roots) do self.roots[r.fs_index] = r.root end
      for _, item in ipairs(again) do item.root = self.roots[item.fs_index] end
      local ok, e, c, st = self.rows:reset_attempts(reset)
      if not ok then return nil, e, c, st end
      self.remounts = (self.remounts or 0) + 1
      self.log:warn("remounted", { medium = m.hash, seconds = seconds, files = #reset },
                    ("%s: remounted in %.2f s after the mount was lost (%d files to try again)")
                      :format(m.human or m.hash, seconds, #reset))
    else
      -- Without its mount every file would fail alike and use up its
      -- attempts: the copy stops instead, the batch released untouched.
      self.log:error("remount_failed", { medium = m.hash, error = rerr, code = rcode },
                     ("%s: the mount is lost and not mounted again: %s"):format(m.human or m.hash, tostring(rerr)))
      return nil, ("%s: the mount is lost and not mounted again: %s"):format(m.human or m.hash, tostring(rerr)), "ENOTCONN"
    end
  end
  return again
end

function D:settle(failed, final, recopy)
  local round = 1
  while #failed > 0 do
    if util.interrupted() then
      for _, item in ipairs(failed) do
        final[#final + 1] = { fs_index = item.fs_index, ino = item.ino, state = S.PENDING, release = true }
      end
      break
    end
    local again, err, code, state = self:round(failed, final, round)
    if not again then return nil, err, code, state end
    if #again == 0 then break end
    util.sleep(M.backoff(self.backoff_of, round))
    round = round + 1
    local more
    failed, err, code, more = recopy(again)
    if not failed then return nil, err, code, more end
  end
  return true
end

function D:record(processed, errored)
  local conn, hash, pp = self.rows.conn, self.medium.hash, self.policy.problems or {}
  for _, ev in ipairs(self.events) do
    local ok, err, code, state = problems.event(conn, hash, ev, pp.max_events)
    if not ok then return nil, err, code, state end
  end
  self.events = {}
  -- The summaries take the seed's shape (problems.beyond_eof,
  -- problems.high_error_rate); this batch's skips are added to the medium's
  -- count, whichever worker wrote it first.
  local s = self.summary
  if s.beyond_eof then
    local b = s.beyond_eof
    b.at, b.worker = now(), self.worker
    local ok, err, code, state = problems.beyond_eof(conn, hash, b)
    if not ok then return nil, err, code, state end
    s.beyond_eof = nil
  end
  local hr = pp.high_error_rate or {}
  local threshold = hr.rate or 0.10
  if not s.high_error_rate and processed >= (hr.min_files or 100) and errored / processed > threshold then
    s.high_error_rate = true
    local ok, err, code, state = problems.high_error_rate(conn, hash, {
      error_rate = math.floor(errored / processed * 1000 + 0.5) / 1000, errors = errored, processed = processed,
      threshold = threshold, at = now(), worker = self.worker })
    if not ok then return nil, err, code, state end
  end
  return true
end

function D:rule_hits()
  local out = {}
  for i, n in pairs(self.hits) do out[rules.label(self.policy.diagnose or {}, i)] = n end
  return out
end

function D:close()
  if self.kmsg then self.kmsg:close(); self.kmsg = nil end
end

return M
