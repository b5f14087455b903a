-- lua/ntt/enumerate/retry.lua: a rerun of an enumerated medium walks again
-- the places its walk could not read, and only those.
--
--   retry.run(conn, hash, roots, opts) -> summary | nil, msg, code, summary
--     roots: the mounted filesystems ({ {fs_index=, root=}, ... }); places
--            of a filesystem not mounted now wait for a later run
--     opts:  ignore=, threads=, stall_timeout=
--     summary: { tried=, walked={ {fs_index=, path=} }, still=, resolved=,
--                entries=, inodes=, files=, errors={...}, duplicates={...},
--                error_count=, duplicate_count=, seconds= }
--     (nothing to retry: summary.tried == 0, nothing touched)
--
-- Each unresolved place (ntt.enumerate.failures) is walked again from its
-- parent directory, keeping only its name (load.walk start/only), so a
-- directory that could not be listed, or an entry that could not be
-- stat'ed, gets its own row and everything below it; a place below another
-- place being retried is covered by it.  The rows go by COPY into
-- temporary tables, then into the medium's partitions, leaving the rows
-- already there as they are (the walk meets some again: the entries a
-- partial listing gave, the place's own row); a hardlinked file excluded
-- until now that has gained a path not excluded becomes pending.  The
-- failures are settled in the same transaction (failures.settle).  A
-- stalled walk commits nothing ("ESTALLED"); a second load or retry of the
-- medium at the same time: "EBUSY".
local db = require "ntt.db"
local load = require "ntt.core.load"
local util = require "ntt.core.util"
local states = require "ntt.states"
local failures = require "ntt.enumerate.failures"

local M = {}

local function q(conn, sql, ...)
  local r, err, code = conn:exec(sql, ...)
  if not r then error({ db = true, msg = err, code = code }, 0) end
  return r
end

local INODE_COLS = "medium_hash, fs_index, ino, state, reason, size, mode, nlink, mtime_ns, fs_type, dir_key, link_target"
local PATH_COLS = "medium_hash, fs_index, path, ino, parent_ino, exclude_reason"

-- The places to walk: those not below another one of the same filesystem.
local function places(open, mounted)
  local out = {}
  for _, f in ipairs(open) do
    if mounted[f.fs_index] then
      local covered = false
      for _, g in ipairs(open) do
        if g ~= f and g.fs_index == f.fs_index and failures.under(f.path, g.path)
           and (g.path ~= f.path) then covered = true; break end
      end
      if not covered then out[#out + 1] = f end
    end
  end
  return out
end

-- start (the parent, "" the root) and only (the name; nil for the root).
local function split(path)
  if path == "" then return "", nil end
  local parent, name = path:match("^(.*)/([^/]+)$")
  if parent then return parent, name end
  return "", path
end

function M.run(conn, hash, roots, opts)
  opts = opts or {}
  local t0 = util.monotonic()
  local summary = { tried = 0, walked = {}, still = 0, resolved = 0, entries = 0, inodes = 0, files = 0,
                    errors = {}, duplicates = {}, error_count = 0, duplicate_count = 0 }
  local iname, pname = db.partition_names(hash)
  local mounted, rootof = {}, {}
  for _, r in ipairs(roots or {}) do mounted[r.fs_index] = true; rootof[r.fs_index] = r.root end
  local ok0, open = pcall(failures.open, conn, hash)
  if not ok0 then
    if type(open) ~= "table" then error(open, 0) end
    return nil, open.msg, open.code, summary
  end
  local tried = {}
  for _, f in ipairs(open) do if mounted[f.fs_index] then tried[#tried + 1] = f end end
  summary.tried = #tried
  if #tried == 0 then return summary end
  local lockkey = "ntt load " .. hash
  local got, lerr, lcode = conn:exec("SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS ok", lockkey)
  if not got then return nil, lerr, lcode, summary end
  if not got[1].ok then
    return nil, ("medium %s is being loaded by another process"):format(hash), "EBUSY", summary
  end
  local it, pt = conn:escape_identifier(iname), conn:escape_identifier(pname)
  local ok, res, emsg, ecode = pcall(db.tx, conn, function()
    q(conn, "SET LOCAL statement_timeout = '30min'")
    q(conn, "CREATE TEMP TABLE ntt_retry_inode (LIKE inode INCLUDING DEFAULTS) ON COMMIT DROP")
    q(conn, "CREATE TEMP TABLE ntt_retry_path (LIKE path INCLUDING DEFAULTS) ON COMMIT DROP")
    for _, f in ipairs(places(tried, mounted)) do
      local start, only = split(f.path)
      summary.walked[#summary.walked + 1] = { fs_index = f.fs_index, path = f.path }
      local st, err, code = load.walk(conn, {
        root = rootof[f.fs_index], start = start, only = only, inode_table = "ntt_retry_inode",
        path_table = "ntt_retry_path", medium = hash, fs_index = f.fs_index, ignore = opts.ignore,
        threads = opts.threads, stall_timeout = opts.stall_timeout })
      if not st then return nil, err, code end
      summary.entries = summary.entries + st.entries
      summary.error_count = summary.error_count + st.error_count
      summary.duplicate_count = summary.duplicate_count + st.duplicate_count
      for _, e in ipairs(st.errors) do e.fs_index = f.fs_index; summary.errors[#summary.errors + 1] = e end
      for _, d in ipairs(st.duplicates) do summary.duplicates[#summary.duplicates + 1] = { fs_index = f.fs_index, path = d } end
      if st.interrupted then return nil, "interrupted", "EINTR" end
      if st.stalled then
        summary.stalled = { fs_index = f.fs_index, path = st.stalled_path, seconds = st.seconds }
        return nil, ("walk of p%d stalled in '%s' (no progress for %gs)"):format(f.fs_index,
          tostring(st.stalled_path), opts.stall_timeout or 120), "ESTALLED"
      end
    end
    -- Two walks may meet the same inode (a hardlink): its first row counts.
    local ins = q(conn, ([[
      INSERT INTO %s AS i (%s)
      SELECT DISTINCT ON (fs_index, ino) %s FROM ntt_retry_inode ORDER BY fs_index, ino
      ON CONFLICT (fs_index, ino) DO UPDATE SET link_target = EXCLUDED.link_target
       WHERE i.fs_type = 'l' AND coalesce(i.link_target, ''::bytea) = ''::bytea
         AND coalesce(EXCLUDED.link_target, ''::bytea) <> ''::bytea
      RETURNING (xmax = 0) AS new, fs_type]]):format(it, INODE_COLS, INODE_COLS))
    for _, r in ipairs(ins) do
      if r.new then
        summary.inodes = summary.inodes + 1
        if r.fs_type == "f" then summary.files = summary.files + 1 end
      end
    end
    q(conn, ([[INSERT INTO %s (%s) SELECT DISTINCT ON (fs_index, path) %s FROM ntt_retry_path
               ORDER BY fs_index, path ON CONFLICT (fs_index, path) DO NOTHING]]):format(pt, PATH_COLS, PATH_COLS))
    q(conn, ([[UPDATE %s i SET state = 'pending', reason = NULL
                WHERE i.state = $1 AND i.reason = $2
                  AND EXISTS (SELECT 1 FROM ntt_retry_path p WHERE p.fs_index = i.fs_index
                                 AND p.ino = i.ino AND p.exclude_reason IS NULL)]]):format(it),
      states.EXCLUDED, states.REASONS.excluded)
    -- the rows this walk added, on top of what the loads recorded (ntt status checks them)
    q(conn, "UPDATE medium SET enum_inodes = enum_inodes + $2 WHERE medium_hash = $1", hash, summary.inodes)
    summary.still, summary.resolved = failures.settle(conn, hash, tried, summary)
    return true
  end)
  conn:exec("SELECT pg_advisory_unlock(hashtextextended($1, 0))", lockkey)
  if not ok then
    if type(res) == "table" and res.db then return nil, res.msg, res.code, summary end
    error(res, 0)
  end
  if not res then return nil, emsg, ecode, summary end
  summary.seconds = util.monotonic() - t0
  return summary
end

return M
