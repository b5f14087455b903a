-- lua/ntt/enumerate.lua: every directory entry of a medium into PostgreSQL.
--
--   enumerate.load(conn, hash, roots, opts) -> summary | nil, msg, code
--     roots: { {fs_index=, root=path}, ... } (the mounted filesystems)
--     opts:  replace=bool, ignore={regex...}, threads=, stall_timeout=,
--            progress=function(entries, dirs)
--     summary: { entries=, files=, inodes=, excluded=, excluded_inodes=, errors={...},
--                duplicates={...}, mountpoints={...}, seconds= }
--
-- The walks stream by binary COPY into fresh tables (one inode row per
-- (fs_index, ino), from the first sighting of a hardlinked inode --
-- hardlinks give several path rows; non-files terminal with their kind),
-- all-excluded inodes are made terminal, and the tables replace the
-- medium's partitions in one short transaction that also sets enum_done.
-- A medium that already has rows is refused unless replace is set, and then
-- the old rows stay until the new ones are complete (nothing is lost if the
-- new load fails).  A stalled walk aborts the load: nothing is committed,
-- code "ESTALLED".
local db = require "ntt.db"
local load = require "ntt.core.load"
local util = require "ntt.core.util"

local M = {}

local function q(conn, sql, ...)
  local r, err, code = conn:exec(sql, ...)
  if not r then error({ db = true, msg = err, code = code }, 0) end
  return r
end

function M.count(conn, hash)
  local _, pname = db.partition_names(hash)
  local ok, r = pcall(q, conn, ("SELECT count(*) AS n FROM %s"):format(conn:escape_identifier(pname)))
  if not ok then return 0 end
  return r[1].n
end

-- A load runs in three steps, so that the slow part -- sorting a million
-- rows into each of four indexes -- can use two connections at once:
--   1. one transaction makes two staging tables (plain tables shaped like
--      the partitions, with a CHECK on the medium's hash), the walks stream
--      into them by binary COPY, all-excluded inodes are made terminal, and
--      it commits.  Tables made and filled in one transaction need no WAL
--      for their rows when wal_level is minimal (the private cluster's).
--   2. the inode keys and the path keys are built at the same time, one
--      connection each (PostgreSQL builds each index once, by sorting); the
--      inode keys in the transaction that then
--   3. drops the medium's old partitions (--replace), renames the staging
--      tables to the partitions' names, attaches them (the CHECK lets ATTACH
--      skip its scan) and adds path -> inode NOT VALID (consistent by
--      construction: both come from the same walk rows; enforced for every
--      later change), and sets enum_done.  The medium's partitions and the
--      parent tables are locked only for this last part.
-- Until step 3 commits, the medium's partitions are untouched: a failed or
-- interrupted load leaves the old rows (or none) and drops its staging
-- tables; staging tables a killed process left are dropped by the next load
-- of the same medium.
local function staging_names(iname, pname)
  local function s(n) return (n:gsub("^(%a+)_p_", "%1_s_"):gsub("^(%a+)_h_", "%1_g_")) end
  return s(iname), s(pname)
end

local function drop_staging(conn, si, sp)
  conn:exec(("DROP TABLE IF EXISTS %s, %s"):format(si, sp))
end

local function existing_rows(conn, pname)
  local r = q(conn, "SELECT to_regclass($1) IS NOT NULL AS present", conn:escape_identifier(pname))
  if not r[1].present then return 0 end
  return q(conn, ("SELECT count(*) AS n FROM %s"):format(conn:escape_identifier(pname)))[1].n
end

-- Step 2 starts the path keys on a second connection (nil when none can be
-- had: then they are built here, one after the other).
local function start_path_keys(conn, path_keys)
  local pg = require "ntt.core.pg"
  local other = pg.connect(conn:url())
  if not other then return nil end
  if not other:send("SET statement_timeout = '30min'; SET maintenance_work_mem = '256MB'; " .. path_keys) then
    other:close()
    return nil
  end
  return other
end

function M.load(conn, hash, roots, opts)
  opts = opts or {}
  local iname, pname = db.ensure_partitions(conn, hash, { create = false })
  if not iname then return nil, pname end
  local t0 = util.monotonic()
  local summary = { entries = 0, inodes = 0, files = 0, excluded = 0, errors = {}, duplicates = {}, mountpoints = {},
                    error_count = 0, duplicate_count = 0 }
  local it, pt = conn:escape_identifier(iname), conn:escape_identifier(pname)
  local siname, spname = staging_names(iname, pname)
  local si, sp = conn:escape_identifier(siname), conn:escape_identifier(spname)
  local lit = conn:escape_literal(hash)
  local function refuse(existing)
    return nil, ("medium %s already has %d entries: refusing to load it again (use --replace to "
                 .. "replace them)"):format(hash, existing), "EEXIST"
  end
  local staged = false
  local ok, res, emsg, ecode = pcall(function()
    -- 1. walk into the staging tables
    local r1, e1, c1 = db.tx(conn, function()
      q(conn, "SET LOCAL statement_timeout = '30min'")
      local existing = existing_rows(conn, pname)
      if existing > 0 then
        if not opts.replace then return refuse(existing) end
        summary.replaced = existing
      end
      q(conn, "SELECT pg_advisory_xact_lock($1, $2)", db.LOCK_NS, db.LOCK_PARTITIONS)
      q(conn, ("DROP TABLE IF EXISTS %s, %s"):format(sp, si))
      for _, t in ipairs { { si, "inode" }, { sp, "path" } } do
        q(conn, ("CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS, CHECK (medium_hash = %s))")
          :format(t[1], t[2], lit))
      end
      for _, r in ipairs(roots) do
        local st, err, code = load.walk(conn, {
          root = r.root, inode_table = siname, path_table = spname, medium = hash, fs_index = r.fs_index,
          ignore = opts.ignore, threads = opts.threads, stall_timeout = opts.stall_timeout, progress = opts.progress,
          freeze = true })
        if not st then return nil, err, code end
        summary.entries = summary.entries + st.entries
        summary.inodes, summary.files = summary.inodes + st.inodes, summary.files + st.files
        summary.excluded = summary.excluded + st.excluded
        summary.error_count = summary.error_count + st.error_count
        summary.duplicate_count = summary.duplicate_count + st.duplicate_count
        for _, e in ipairs(st.errors) do e.fs_index = r.fs_index; summary.errors[#summary.errors + 1] = e end
        for _, d in ipairs(st.duplicates) do summary.duplicates[#summary.duplicates + 1] = { fs_index = r.fs_index, path = d } end
        for _, m in ipairs(st.mountpoints) do summary.mountpoints[#summary.mountpoints + 1] = { fs_index = r.fs_index, path = m } end
        if st.interrupted then return nil, "interrupted", "EINTR" end
        if st.stalled then
          summary.stalled = { fs_index = r.fs_index, path = st.stalled_path, seconds = st.seconds }
          return nil, ("walk of p%d stalled in '%s' (no progress for %gs)"):format(r.fs_index,
            tostring(st.stalled_path), opts.stall_timeout or 120), "ESTALLED"
        end
      end
      summary.excluded_inodes = 0
      if summary.excluded > 0 then
        summary.excluded_inodes = q(conn, ([[
          UPDATE %s i SET state = 'excluded', reason = 'every path excluded by policy'
           WHERE state = 'pending' AND NOT EXISTS (
             SELECT 1 FROM %s p WHERE p.fs_index = i.fs_index AND p.ino = i.ino
                                  AND p.exclude_reason IS NULL)]]):format(si, sp)).n
      end
      return true
    end)
    if not r1 then return nil, e1, c1 end
    staged = true
    -- 2. keys, two at a time: the path keys on another connection, the
    -- inode keys here, in the transaction that then 3. swaps them in
    local path_keys = ("SELECT ntt_path_keys(%s::regclass)"):format(conn:escape_literal(sp))
    local other = start_path_keys(conn, path_keys)
    local function other_done()
      if not other then return end
      local r, err, code = other:wait()
      other:close()
      other = nil
      if not r then error({ db = true, msg = err, code = code }, 0) end
    end
    local ok2, r2, e2, c2 = pcall(db.tx, conn, function()
      q(conn, "SET LOCAL statement_timeout = '30min'")
      q(conn, "SET LOCAL maintenance_work_mem = '256MB'")
      q(conn, ("SELECT ntt_inode_keys(%s::regclass)"):format(conn:escape_literal(si)))
      if other then other_done() else q(conn, path_keys) end
      q(conn, "SELECT pg_advisory_xact_lock($1, $2)", db.LOCK_NS, db.LOCK_PARTITIONS)
      local existing = existing_rows(conn, pname)
      if existing > 0 and not opts.replace then return refuse(existing) end
      q(conn, ("DROP TABLE IF EXISTS %s, %s"):format(pt, it))
      q(conn, ("ALTER TABLE %s RENAME TO %s"):format(si, it))
      q(conn, ("ALTER TABLE %s RENAME TO %s"):format(sp, pt))
      q(conn, ("ALTER TABLE inode ATTACH PARTITION %s FOR VALUES IN (%s)"):format(it, lit))
      q(conn, ("ALTER TABLE path ATTACH PARTITION %s FOR VALUES IN (%s)"):format(pt, lit))
      q(conn, "SELECT ntt_path_inode_fk($1::regclass, $2::regclass, false)", it, pt)
      q(conn, "UPDATE medium SET enum_done = now() WHERE medium_hash = $1", hash)
      return true
    end)
    if other then pcall(other_done) end
    if not ok2 then error(r2, 0) end
    return r2, e2, c2
  end)
  if not (ok and res) and staged then drop_staging(conn, si, sp) end
  if not ok then
    if type(res) == "table" and res.db then return nil, res.msg, res.code, summary end
    error(res, 0)
  end
  if not res then return nil, emsg, ecode, summary end
  -- Row counts and rough distributions are all the claim and report queries
  -- need; a small sample keeps ANALYZE from reading every page again.
  conn:exec("SET default_statistics_target = 10")
  conn:exec(("ANALYZE %s, %s"):format(it, pt))
  conn:exec("RESET default_statistics_target")
  summary.seconds = util.monotonic() - t0
  return summary
end

return M
