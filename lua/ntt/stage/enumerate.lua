-- lua/ntt/stage/enumerate.lua: load every entry of the mounted filesystems.
--
-- Done once: a medium with enum_done set is not walked again (use `ntt run
-- --replace` to enumerate it again), except the places its walk could not
-- read (ntt.enumerate.retry): those are walked again, and only those.
-- Unreadable directories and entries, duplicate names and a stalled walk
-- are problems of the medium (medium.problems, heard by on_problem) and of
-- the run (ctx.problems, one entry per kind with its count: the summary's
-- "medium problems recorded" and the exit code).  A rerun counts the places
-- still unreadable and what it found anew.
local enumerate = require "ntt.enumerate"
local failures = require "ntt.enumerate.failures"
local retry = require "ntt.enumerate.retry"
local problems = require "ntt.problems"
local progress = require "ntt.progress"
local reader = require "ntt.reader"

local M = {}

local function first(list, n)
  local out = {}
  for i = 1, math.min(#list, n) do out[i] = list[i] end
  return out
end

-- A path for a human line (the log's fields keep the bytes): no control
-- characters to break the line or the terminal.
local function shown(path) return (tostring(path):gsub("%c", "?")) end

-- ntt's own data root (its database, store, logs...) inside a filesystem
-- being walked -- a folder given as a medium that holds it -- is never
-- loaded as the medium's files: an ignore pattern for it (its entries
-- recorded excluded, "ignore:^<path>(/|$)"), logged once.
local function ERE(s) return (s:gsub("[%.%[%]{}()\\*+?^$|]", "\\%0")) end

local function own_ignores(ctx, m)
  local fs = require "ntt.core.fs"
  local real = fs.realpath(require("ntt.config").home())   -- (the store is in it)
  local out = {}
  for _, r in ipairs(ctx.roots or {}) do
    local root = fs.realpath(r.root)
    local rel = real and root and (real == root and "" or root == "/" and real:sub(2)
                                   or real:sub(1, #root + 1) == root .. "/" and real:sub(#root + 2))
    if rel then
      -- (the data root itself given as the folder: all of it)
      out[#out + 1] = rel == "" and "^" or "^" .. ERE(rel) .. "(/|$)"
      ctx.log:warn("enumerate_own_data", { medium = m.hash, fs_index = r.fs_index, path = real },
                   ("%s: p%d holds ntt's own data at %s: left out of the medium (excluded)")
                   :format(m.human or m.hash, r.fs_index, real))
    end
  end
  return out
end

local function ignores(ctx, m)
  local list = {}
  for i, re in ipairs(require("ntt.policy").ignore_of(ctx.policy)) do list[i] = re end
  for _, pat in ipairs(own_ignores(ctx, m)) do list[#list + 1] = pat end
  return list
end

local function count_problem(ctx, kind, n)
  if n > 0 then ctx.problems[#ctx.problems + 1] = { kind = kind, count = n } end
end

-- medium.problems from the table, after a rerun: enum_errors lists the
-- places still unreadable (gone when none is), duplicate_paths every name
-- listed twice.
local function restate(db, m)
  local st, err, code = failures.state(db, m.hash)
  if not st then return nil, err, code end
  if st.errors > 0 then
    problems.set(db, m.hash, "enum_errors", { count = st.errors, first = st.first, resolved = st.resolved })
  else
    problems.clear(db, m.hash, "enum_errors")
  end
  return st
end

-- A medium enumerated before: walk again what could not be read.
local function rerun(ctx, m, done)
  local db, p = ctx.db, ctx.policy.enumerate or {}
  if not ctx.roots or #ctx.roots == 0 then
    ctx.log:info("enumerate_skipped", { medium = m.hash, reason = "already enumerated", at = done })
    return true
  end
  local s, err, code, partial = retry.run(db, m.hash, ctx.roots, {
    ignore = ignores(ctx, m), threads = p.threads, stall_timeout = p.stall_timeout })
  if not s then
    if code == "ESTALLED" then
      problems.set(db, m.hash, "enum_stalled", (partial or {}).stalled or { error = err })
      ctx.problems[#ctx.problems + 1] = { kind = "enum_stalled" }
    end
    return nil, err, code, (partial or {}).sqlstate
  end
  if s.tried == 0 then
    ctx.log:info("enumerate_skipped", { medium = m.hash, reason = "already enumerated", at = done })
    return true
  end
  local st, serr, scode = restate(db, m)
  if not st then return nil, serr, scode end
  if s.duplicate_count > 0 then
    problems.set(db, m.hash, "duplicate_paths", { count = st.duplicates, first = st.first_duplicates })
  end
  -- still unreadable, and unreadable anew below what became readable
  count_problem(ctx, "enum_errors", math.max(s.error_count, s.still))
  count_problem(ctx, "duplicate_paths", s.duplicate_count)
  ctx.counts.found = (ctx.counts.found or 0) + s.files
  local where = {}
  for i, w in ipairs(s.walked) do
    if i > 5 then where[#where + 1] = "..."; break end
    where[i] = ("p%d:'%s'"):format(w.fs_index, shown(w.path))
  end
  local level = s.still > 0 and "warn" or "info"
  ctx.log[level](ctx.log, "enumerate_retried", { medium = m.hash, walked = s.walked, tried = s.tried,
      resolved = s.resolved, still = s.still, entries = s.entries, files = s.files, inodes = s.inodes,
      errors = s.error_count, seconds = s.seconds },
    ("%s: %d unreadable place(s) walked again (%s): %d now read, %d still unreadable"):format(
      m.human or m.hash, s.tried, table.concat(where, ", "), s.resolved, s.still))
  return true
end

-- The deleted entries of the filesystems the kernel mounted come from a
-- reader's report of the image alone (a whole image only: without the
-- honest view TSK would read unrescued bytes as data), started here so that
-- it reads while the walk runs.  -> { [root] = handle }
local function side_reports(ctx, m)
  local out, res = {}, ctx.mount_result or {}
  if m.kind ~= "image" or res.view then return out end
  for _, r in ipairs(ctx.roots) do
    if not reader.is_reader(r) and reader.LISTED[r.fstype or ""] then
      local offset
      for _, fs in ipairs(res.filesystems or {}) do
        if fs.fs_index == r.fs_index then offset = fs.offset end
      end
      local h, err = reader.side_report_start(m.image_path, offset or 0, r.fstype)
      if h then out[r] = h
      else ctx.log:warn("reader_report_failed", { medium = m.hash, fs_index = r.fs_index, error = err }) end
    end
  end
  return out
end

local function once(ctx)
  local m = ctx.medium
  local db = ctx.db
  local row = assert(db:exec("SELECT enum_done::text AS done FROM medium WHERE medium_hash = $1", m.hash))[1]
  if row and row.done and not ctx.replace then return rerun(ctx, m, row.done) end
  if not ctx.roots or #ctx.roots == 0 then
    ctx.log:warn("enumerate_nothing", { medium = m.hash }, (m.human or m.hash) .. ": nothing mounted to enumerate")
    return true
  end
  local p = ctx.policy.enumerate or {}
  local reports = side_reports(ctx, m)   -- read beside the walk
  local pr = progress.new { label = "enumerate " .. (m.human or m.hash), unit = "entries",
                            interval = (ctx.policy.progress or {}).interval,
                            bar = (ctx.policy.progress or {}).bar }
  local done = table.pack(pcall(enumerate.load, db, m.hash, ctx.roots, {
    replace = ctx.replace, ignore = ignores(ctx, m), threads = p.threads, stall_timeout = p.stall_timeout,
    progress = function(entries) pr:set(entries); require("ntt.live").service() end }))
  pr:finish()
  if not (done[1] and done[2]) then
    for _, h in pairs(reports) do reader.side_report_cancel(h) end
    if not done[1] then error(done[2], 0) end
  end
  local summary, err, code, partial = table.unpack(done, 2, 5)
  local s = summary or partial or {}
  if (s.error_count or 0) > 0 then
    problems.set(db, m.hash, "enum_errors", { count = s.error_count, first = first(s.errors or {}, 20) })
  elseif summary then
    problems.clear(db, m.hash, "enum_errors")   -- a --replace that read everything
  end
  if (s.duplicate_count or 0) > 0 then
    problems.set(db, m.hash, "duplicate_paths", { count = s.duplicate_count, first = first(s.duplicates or {}, 20) })
  end
  count_problem(ctx, "enum_errors", s.error_count or 0)
  count_problem(ctx, "duplicate_paths", s.duplicate_count or 0)
  for _, e in ipairs(first(s.errors or {}, 20)) do
    ctx.log:warn("enum_error", { medium = m.hash, fs_index = e.fs_index, path = e.path, err = e.err, msg = e.msg },
                 ("%s: p%d: '%s' could not be read (%s): what is below it is missing"):format(
                   m.human or m.hash, e.fs_index or 0, shown(e.path), e.msg or e.err))
  end
  if not summary then
    if code == "ESTALLED" then
      problems.set(db, m.hash, "enum_stalled", s.stalled or { error = err })
      ctx.problems[#ctx.problems + 1] = { kind = "enum_stalled" }
    end
    return nil, err, code, s.sqlstate
  end
  ctx.enumerated = summary
  -- what a reader found besides the live files: deleted entries, the label, metadata damage
  for _, r in ipairs(ctx.roots) do
    local rep
    if reports[r] then
      local rerr
      rep, rerr = reader.side_report_finish(reports[r])
      if rep then rep.damaged = {}   -- the kernel read the live files: its word stands
      else ctx.log:warn("reader_report_failed", { medium = m.hash, fs_index = r.fs_index, error = rerr }) end
    end
    if reader.is_reader(r) or rep then
      local rs, rerr, rcode, rstate = reader.record(db, m.hash, r, rep)
      if not rs then
        for _, h in pairs(reports) do reader.side_report_cancel(h) end
        return nil, rerr, rcode, rstate
      end
      if rs.damaged > 0 then ctx.problems[#ctx.problems + 1] = { kind = "metadata_damage", count = rs.damaged } end
      ctx.log:info("reader_recorded", { medium = m.hash, fs_index = r.fs_index, deleted = rs.deleted,
                                        damaged = rs.damaged, label = rs.label })
    end
  end
  if p.raw_audit then
    -- An audit copy of the enumeration, byte-exact and compressed (docs/walk.md).
    local config = require "ntt.config"
    local walk = require "ntt.core.walk"
    local dir = config.path("raw")
    require("ntt.core.fs").mkdirp(dir)
    for _, r in ipairs(ctx.roots) do
      local file = ("%s/%s.p%d.walk.zst"):format(dir, m.hash, r.fs_index)
      local ok, aerr = walk.to_file(r.root, file, { threads = p.threads, stall_timeout = p.stall_timeout })
      if not ok then ctx.log:warn("raw_audit_failed", { medium = m.hash, file = file, error = aerr })
      else ctx.log:info("raw_audit", { medium = m.hash, file = file }) end
    end
  end
  ctx.counts.found = (ctx.counts.found or 0) + summary.files
  ctx.log:info("enumerated", { medium = m.hash, entries = summary.entries, files = summary.files,
                               inodes = summary.inodes, excluded = summary.excluded,
                               errors = summary.error_count, duplicates = summary.duplicate_count,
                               replaced = summary.replaced, seconds = summary.seconds })
  return true
end

-- Another process loading (or walking again) the same medium -- a second
-- run of the same image, a worker of another host -- is waited for, then
-- what it left is looked at again: done (its rows serve this run's copy,
-- whose claims share the work), or not (it failed: this run loads).
function M.run(ctx)
  if not ctx.medium then return nil, "enumerate needs identify first", "EINVAL" end
  local util = require "ntt.core.util"
  local live = require "ntt.live"
  local waited, loaded_meanwhile
  while true do
    local ok, err, code, state = once(ctx)
    -- (loaded by another process between this one's look and its lock:
    -- looked at again, once, as loaded)
    if code == "EEXIST" and not ctx.replace and not loaded_meanwhile then
      loaded_meanwhile = true
      ok, err, code, state = once(ctx)
    end
    if ok or code ~= "EBUSY" then
      if waited then
        ctx.log:info("enumerate_waited", { medium = ctx.medium.hash, seconds = util.monotonic() - waited })
      end
      return ok, err, code, state
    end
    if not waited then
      waited = util.monotonic()
      ctx.log:info("enumerate_wait", { medium = ctx.medium.hash, why = err },
                   ("%s: %s: waiting for it to finish"):format(ctx.medium.human or ctx.medium.hash, err))
    end
    if util.monotonic() - waited > ((ctx.policy.enumerate or {}).busy_wait or 3600) then
      return nil, ("%s (waited %.0f s, enumerate.busy_wait)"):format(err, util.monotonic() - waited), code
    end
    live.sleep(1)
    if util.interrupted() then return nil, "interrupted while waiting for another load of the medium", "EINTR" end
  end
end

return M
