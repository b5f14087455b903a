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
--     (nothing to retry: summary.tried == 0, nothing touched; on failure
--     the summary so far, with sqlstate= when the database gave one)
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
local states = require "ntt.states"
local failures = require "ntt.enumerate.failures"
local session = require "ntt.enumerate.session"

local M = {}

local INODE_COLS = "medium_hash, fs_index, ino, state, reason, size, mode, nlink, mtime_ns, fs_type, dir_key, link_target"
local PATH_COLS = "medium_hash, fs_index, path, ino, parent_ino, exclude_reason"
-- what a retry counts from its walks (its inodes and files: the rows it adds)
local WALK_COUNTS = { "entries", "error_count", "duplicate_count" }

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
  local summary = { tried = 0, walked = {}, still = 0, resolved = 0, entries = 0, inodes = 0, files = 0,
                    errors = {}, duplicates = {}, error_count = 0, duplicate_count = 0 }
  local iname, pname = db.partition_names(hash)
  local mounted, rootof = {}, {}
  for _, r in ipairs(roots or {}) do mounted[r.fs_index] = true; rootof[r.fs_index] = r.root end
  local open, oerr, ocode, ostate = failures.open(conn, hash)
  if not open then summary.sqlstate = ostate; return nil, oerr, ocode, summary end
  local tried = {}
  for _, f in ipairs(open) do if mounted[f.fs_index] then tried[#tried + 1] = f end end
  summary.tried = #tried
  if #tried == 0 then return summary end
  local it, pt = conn:escape_identifier(iname), conn:escape_identifier(pname)
  return session.run(conn, hash, summary, function() return db.tx(conn, function()
    local ok, err, code, state = session.steps(conn, {
      { "SET LOCAL statement_timeout = '30min'" },
      { "CREATE TEMP TABLE ntt_retry_inode (LIKE inode INCLUDING DEFAULTS) ON COMMIT DROP" },
      { "CREATE TEMP TABLE ntt_retry_path (LIKE path INCLUDING DEFAULTS) ON COMMIT DROP" } })
    if not ok then return nil, err, code, state end
    for _, f in ipairs(places(tried, mounted)) do
      local start, only = split(f.path)
      summary.walked[#summary.walked + 1] = { fs_index = f.fs_index, path = f.path }
      local st, werr, wcode, wstate = load.walk(conn, {
        root = rootof[f.fs_index], start = start, only = only, inode_table = "ntt_retry_inode",
        path_table = "ntt_retry_path", medium = hash, fs_index = f.fs_index, ignore = opts.ignore,
        threads = opts.threads, stall_timeout = opts.stall_timeout })
      if not st then return nil, werr, wcode, wstate end
      local fine, aerr, acode = session.absorb(summary, st, f.fs_index, WALK_COUNTS, opts.stall_timeout)
      if not fine then return nil, aerr, acode end
    end
    -- Two walks may meet the same inode (a hardlink): its first row counts.
    local ins, ierr, icode, istate = conn:exec(([[
      INSERT INTO %s AS i (%s)
      SELECT DISTINCT ON (fs_index, ino) %s FROM ntt_retry_inode ORDER BY fs_index, ino
      ON CONFLICT (fs_index, ino) DO UPDATE SET link_target = EXCLUDED.link_target
       WHERE i.fs_type = 'l' AND coalesce(i.link_target, ''::bytea) = ''::bytea
         AND coalesce(EXCLUDED.link_target, ''::bytea) <> ''::bytea
      RETURNING (xmax = 0) AS new, fs_type]]):format(it, INODE_COLS, INODE_COLS))
    if not ins then return nil, ierr, icode, istate end
    for _, r in ipairs(ins) do
      if r.new then
        summary.inodes = summary.inodes + 1
        if r.fs_type == "f" then summary.files = summary.files + 1 end
      end
    end
    ok, err, code, state = session.steps(conn, {
      { ([[INSERT INTO %s (%s) SELECT DISTINCT ON (fs_index, path) %s FROM ntt_retry_path
           ORDER BY fs_index, path ON CONFLICT (fs_index, path) DO NOTHING]]):format(pt, PATH_COLS, PATH_COLS) },
      { ([[UPDATE %s i SET state = 'pending', reason = NULL
            WHERE i.state = $1 AND i.reason = $2
              AND EXISTS (SELECT 1 FROM ntt_retry_path p WHERE p.fs_index = i.fs_index
                             AND p.ino = i.ino AND p.exclude_reason IS NULL)]]):format(it),
        states.EXCLUDED, states.REASONS.excluded },
      -- the rows this walk added, on top of what the loads recorded (ntt status checks them)
      { "UPDATE medium SET enum_inodes = enum_inodes + $2 WHERE medium_hash = $1", hash, summary.inodes } })
    if not ok then return nil, err, code, state end
    local still, resolved, scode, sstate = failures.settle(conn, hash, tried, summary)
    if not still then return nil, resolved, scode, sstate end
    summary.still, summary.resolved = still, resolved
    return true
  end) end)
end

return M
