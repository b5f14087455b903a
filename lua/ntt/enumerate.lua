-- lua/ntt/enumerate.lua: every directory entry of a medium into PostgreSQL.
--
--   enumerate.load(conn, hash, roots, opts) -> summary | nil, msg, code
--     roots: { {fs_index=, root=path}, ... } (the mounted filesystems)
--     opts:  replace=bool, ignore={Regex or pattern...}, threads=, stall_timeout=,
--            progress=function(entries, dirs), parallel=false (one connection)
--     summary: { entries=, files=, inodes=, excluded=, excluded_inodes=, errors={...},
--                duplicates={...}, mountpoints={...}, seconds= }
--
-- The walks stream by binary COPY into fresh tables (one inode row per
-- (fs_index, ino), from the first sighting of a hardlinked inode --
-- hardlinks give several path rows; non-files terminal with their kind,
-- files whose every path is excluded terminal too: each row's state is the
-- loader's, decided once, src/pg/states.h), and the tables replace the
-- medium's partitions in one short transaction that also sets enum_done.
-- A medium that already has rows is refused unless replace is set, and then
-- the old rows stay until the new ones are complete (nothing is lost if the
-- new load fails).  A stalled walk aborts the load: nothing is committed,
-- code "ESTALLED".  A second load of a medium while one runs: "EBUSY".
-- The walk's errors and duplicates are recorded (enum_failure, in the
-- transaction that sets enum_done) for a later run to walk again:
-- ntt.enumerate.retry.
local db = require "ntt.db"
local load = require "ntt.core.load"
local util = require "ntt.core.util"
local failures = require "ntt.enumerate.failures"

local M = {}

local function q(conn, sql, ...)
  local r, err, code = conn:exec(sql, ...)
  if not r then error({ db = true, msg = err, code = code }, 0) end
  return r
end

-- Several statements in one round trip (no parameters).
local function script(conn, sql)
  local r, err, code = conn:exec_script(sql)
  if not r then error({ db = true, msg = err, code = code }, 0) end
  return r
end

function M.count(conn, hash)
  local _, pname = db.partition_names(hash)
  local ok, r = pcall(q, conn, ("SELECT count(*) AS n FROM %s"):format(conn:escape_identifier(pname)))
  if not ok then return 0 end
  return r[1].n
end

-- A load runs in two steps, so that the slow parts -- loading a million
-- rows into each table and sorting them into four indexes -- run on two
-- connections (two server processes) at once:
--   1. each table is made, filled and finished in one transaction of its
--      own connection: a staging table shaped like the partition (with a
--      CHECK on the medium's hash), one binary COPY FREEZE streaming into it
--      for the whole walk, its keys, ANALYZE, COMMIT.  A table made and
--      filled in one transaction needs no WAL for its rows when wal_level is
--      minimal (the private cluster's), and frozen rows need no hint bits
--      set (so no page rewritten) by their first readers.
--   2. one short transaction drops the medium's old partitions (--replace),
--      renames the staging tables to the partitions' names, attaches them
--      (the CHECK lets ATTACH skip its scan; the indexes the parents want
--      are there already), adds path -> inode NOT VALID (consistent by
--      construction: both come from the same walk rows; enforced for every
--      later change) and sets enum_done.  Only this step locks the parents.
-- Until step 2 commits, the medium's partitions are untouched: a failed or
-- interrupted load leaves the old rows (or none) and drops its staging
-- tables; staging tables a killed process left are dropped by the next load
-- of the same medium.  A session advisory lock keeps two loads of one
-- medium apart (the second is refused at once).
local function staging_names(iname, pname)
  local function s(n) return (n:gsub("^(%a+)_p_", "%1_s_"):gsub("^(%a+)_h_", "%1_g_")) end
  return s(iname), s(pname)
end

local function existing_rows(conn, pname)
  local r = q(conn, "SELECT to_regclass($1) IS NOT NULL AS present", conn:escape_identifier(pname))
  if not r[1].present then return 0 end
  return q(conn, ("SELECT count(*) AS n FROM %s"):format(conn:escape_identifier(pname)))[1].n
end

-- The connection for the path table (nil when none can be had, or
-- opts.parallel is false: then both tables load on conn, one after the other).
local function second_connection(conn, opts)
  if opts.parallel == false then return nil end
  local pg = require "ntt.core.pg"
  return pg.connect(conn:url())
end

-- Settings for the transactions that fill and index the staging tables;
-- ANALYZE needs only row counts and rough distributions (the claim and
-- report queries), so a small sample keeps it from reading every page.
local FILL_SETTINGS = "SET LOCAL statement_timeout = '30min'; SET LOCAL maintenance_work_mem = '256MB'; "
                      .. "SET LOCAL default_statistics_target = 10"

local function keys_sql(conn, fn, t)
  return ("SELECT %s(%s::regclass); ANALYZE %s"):format(fn, conn:escape_literal(t), t)
end

function M.load(conn, hash, roots, opts)
  opts = opts or {}
  local iname, pname, pcode = db.ensure_partitions(conn, hash, { create = false })
  if not iname then return nil, pname, pcode end
  local t0 = util.monotonic()
  local summary = { entries = 0, inodes = 0, files = 0, excluded = 0, excluded_inodes = 0, errors = {},
                    duplicates = {}, mountpoints = {}, error_count = 0, duplicate_count = 0 }
  local it, pt = conn:escape_identifier(iname), conn:escape_identifier(pname)
  local siname, spname = staging_names(iname, pname)
  local si, sp = conn:escape_identifier(siname), conn:escape_identifier(spname)
  local lit = conn:escape_literal(hash)
  local function refuse(existing)
    return nil, ("medium %s already has %d entries: refusing to load it again (use --replace to "
                 .. "replace them)"):format(hash, existing), "EEXIST"
  end
  local lockkey = "ntt load " .. hash
  local got, lerr, lcode = conn:exec("SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS ok", lockkey)
  if not got then return nil, lerr, lcode, summary end
  if not got[1].ok then
    return nil, ("medium %s is being loaded by another process"):format(hash), "EBUSY", summary
  end
  local other = second_connection(conn, opts)
  local pconn = other or conn
  local open_a, open_b, staged = false, false, false
  local ok, res, emsg, ecode = pcall(function()
    local existing = existing_rows(conn, pname)
    if existing > 0 then
      if not opts.replace then return refuse(existing) end
      summary.replaced = existing
    end
    q(conn, ("DROP TABLE IF EXISTS %s, %s"):format(sp, si))
    -- 1. fill each staging table in its connection's transaction
    open_a = true   -- (a ROLLBACK outside a transaction only warns)
    script(conn, "BEGIN; " .. FILL_SETTINGS)
    if other then open_b = true; script(other, "BEGIN; " .. FILL_SETTINGS) end
    q(conn, ("CREATE TABLE %s (LIKE inode INCLUDING DEFAULTS INCLUDING CONSTRAINTS, CHECK (medium_hash = %s))")
      :format(si, lit))
    -- the index the parent has on blobid, so that ATTACH finds it instead of
    -- building it under the parents' lock; made empty, as no new row has a
    -- blob, it costs the COPY one predicate per row and no second scan
    q(conn, ("CREATE INDEX ON %s (blobid) WHERE blobid IS NOT NULL"):format(si))
    q(pconn, ("CREATE TABLE %s (LIKE path INCLUDING DEFAULTS INCLUDING CONSTRAINTS, CHECK (medium_hash = %s))")
      :format(sp, lit))
    for _, r in ipairs(roots) do
      local st, err, code = load.walk(conn, {
        root = r.root, inode_table = siname, path_table = spname, medium = hash, fs_index = r.fs_index,
        path_conn = other, ignore = opts.ignore, threads = opts.threads, stall_timeout = opts.stall_timeout,
        progress = opts.progress, freeze = true })
      if not st then return nil, err, code end
      summary.entries = summary.entries + st.entries
      summary.inodes, summary.files = summary.inodes + st.inodes, summary.files + st.files
      summary.excluded = summary.excluded + st.excluded
      summary.excluded_inodes = summary.excluded_inodes + st.excluded_inodes
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
    -- keys and statistics, the two tables at once
    if other then
      local sent, err, code = other:send(keys_sql(conn, "ntt_path_keys", sp) .. "; COMMIT")
      if not sent then error({ db = true, msg = err, code = code }, 0) end
    else
      script(conn, keys_sql(conn, "ntt_path_keys", sp))
    end
    local okk, kerr = pcall(script, conn, keys_sql(conn, "ntt_inode_keys", si))
    if other then
      local r, err, code = other:wait()
      open_b = false
      if not r then error({ db = true, msg = err, code = code }, 0) end
      staged = true   -- the path table is committed: dropped if the rest fails
    end
    if not okk then error(kerr, 0) end
    staged = true
    local c_ok, c_err, c_code = conn:commit()
    open_a = false
    if not c_ok then return nil, c_err, c_code end
    -- 2. swap them in
    return db.tx(conn, function()
      q(conn, "SET LOCAL statement_timeout = '30min'")
      q(conn, "SELECT pg_advisory_xact_lock($1, $2)", db.LOCK_NS, db.LOCK_PARTITIONS)
      existing = existing_rows(conn, pname)
      if existing > 0 and not opts.replace then return refuse(existing) end
      q(conn, ("DROP TABLE IF EXISTS %s, %s"):format(pt, it))
      q(conn, ("ALTER TABLE %s RENAME TO %s"):format(si, it))
      q(conn, ("ALTER TABLE %s RENAME TO %s"):format(sp, pt))
      q(conn, ("ALTER TABLE inode ATTACH PARTITION %s FOR VALUES IN (%s)"):format(it, lit))
      q(conn, ("ALTER TABLE path ATTACH PARTITION %s FOR VALUES IN (%s)"):format(pt, lit))
      q(conn, "SELECT ntt_path_inode_fk($1::regclass, $2::regclass, false)", it, pt)
      q(conn, "UPDATE medium SET enum_done = now(), enum_inodes = $2 WHERE medium_hash = $1", hash,
        summary.inodes)
      -- with enum_done, what this walk could not read (a rerun walks it again)
      failures.record(conn, hash, summary)
      return true
    end)
  end)
  if open_b then other:rollback() end
  if other then other:close() end
  if open_a then conn:rollback() end
  if not (ok and res) and staged then conn:exec(("DROP TABLE IF EXISTS %s, %s"):format(si, sp)) end
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
