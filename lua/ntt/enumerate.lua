-- lua/ntt/enumerate.lua: every directory entry of a medium into PostgreSQL.
--
--   enumerate.load(conn, hash, roots, opts) -> summary | nil, msg, code, summary
--     roots: { {fs_index=, root=path}, ... } (the mounted filesystems)
--     opts:  replace=bool, ignore={Regex or pattern...}, threads=, stall_timeout=,
--            progress=function(entries, dirs), parallel=false (one connection)
--     summary: { entries=, files=, inodes=, excluded=, excluded_inodes=, errors={...},
--                duplicates={...}, mountpoints={...}, seconds= }
--     on failure the summary so far (the walk's errors, stalled=), with
--     sqlstate= when the database gave one (code "EDB")
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
local failures = require "ntt.enumerate.failures"
local session = require "ntt.enumerate.session"

local M = {}

-- The medium's path rows (0 when they cannot be counted).
function M.count(conn, hash)
  local _, pname = db.partition_names(hash)
  local r = conn:exec(("SELECT count(*) AS n FROM %s"):format(conn:escape_identifier(pname)))
  if not r then return 0 end
  return r[1].n
end

-- A load runs in two steps, so that the slow parts -- loading a million
-- rows into each table and sorting them into four indexes -- run on two
-- connections (two server processes) at once:
--   1. each table is made, filled and finished in one transaction of its
--      own connection: a staging table shaped like the partition but for
--      the medium's column, one binary COPY FREEZE streaming into it for the
--      whole walk, the medium's column (keys_sql), its keys, ANALYZE, COMMIT.  A table made and
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

-- -> n | nil, msg, code, SQLSTATE
local function existing_rows(conn, pname)
  local r, err, code, state = conn:exec("SELECT to_regclass($1) IS NOT NULL AS present", conn:escape_identifier(pname))
  if not r then return nil, err, code, state end
  if not r[1].present then return 0 end
  r, err, code, state = conn:exec(("SELECT count(*) AS n FROM %s"):format(conn:escape_identifier(pname)))
  if not r then return nil, err, code, state end
  return r[1].n
end

local function refuse(hash, existing)
  return nil, ("medium %s already has %d entries: refusing to load it again (use --replace to "
               .. "replace them)"):format(hash, existing), "EEXIST"
end

-- what a load counts from its walks
local WALK_COUNTS = { "entries", "inodes", "files", "excluded", "excluded_inodes", "error_count", "duplicate_count" }

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
-- No parallel workers for the index builds: the two connections already
-- build at once, and a parallel build sorts in runs written to temporary
-- files and merged, more work in all than one sort in memory.
-- Their COMMITs do not wait for the WAL to reach the disk: the tables' own
-- files are synced at commit all the same (wal_level minimal), a staging
-- table lost to a crash is only made again by the next load, and the
-- swap's COMMIT, which does wait, flushes the WAL before it.
local FILL_SETTINGS = "SET LOCAL statement_timeout = '30min'; SET LOCAL maintenance_work_mem = '256MB'; "
                      .. "SET LOCAL max_parallel_maintenance_workers = 0; SET LOCAL default_statistics_target = 10; "
                      .. "SET LOCAL synchronous_commit = off"

-- The medium's column, added once the rows are in: a column added with a
-- constant default is not written into the rows already there (PostgreSQL
-- keeps the value once, in the catalogue), so the 64-character hash costs
-- neither the COPY nor the heap; the CHECK lets ATTACH skip its scan.
-- The parent's own CHECK constraints come in the same statement: checked
-- row by row during the COPY they cost it about an eighth of its server
-- time, here they ride on the one scan the medium's CHECK needs anyway.
local function keys_sql(conn, fn, t, lit, checks)
  return ("ALTER TABLE %s ADD COLUMN medium_hash text NOT NULL DEFAULT %s, ADD CHECK (medium_hash = %s)%s; "
          .. "ALTER TABLE %s ALTER COLUMN medium_hash DROP DEFAULT; SELECT %s(%s::regclass); ANALYZE %s")
    :format(t, lit, lit, checks, t, fn, conn:escape_literal(t), t)
end

-- The CHECK constraints of the parents inode and path as ALTER TABLE clauses
-- (", ADD CONSTRAINT name CHECK (...)", ...), their names kept: ATTACH
-- matches a partition's constraints to the parent's by name.
-- -> { inode = s, path = s } | nil, msg, code, SQLSTATE
local function parent_checks(conn)
  local r, err, code, state = conn:exec([[
    SELECT c.relname AS parent,
           coalesce(string_agg(format(', ADD CONSTRAINT %I %s', k.conname, pg_get_constraintdef(k.oid)), ''
                               ORDER BY k.conname), '') AS clauses
      FROM pg_class c LEFT JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'c'
     WHERE c.oid IN ('inode'::regclass, 'path'::regclass)
     GROUP BY c.relname]])
  if not r then return nil, err, code, state end
  local out = {}
  for _, row in ipairs(r) do out[row.parent] = row.clauses end
  return out
end

-- The two steps, on conn (holding the medium's lock) and other (nil: conn
-- alone); track.open_a/open_b: a transaction left open there, track.staged:
-- staging tables committed.  -> true | nil, msg, code [, SQLSTATE]
local function fill_and_swap(conn, other, hash, roots, opts, summary, track)
  local pconn = other or conn
  local iname, pname = db.partition_names(hash)
  local it, pt = conn:escape_identifier(iname), conn:escape_identifier(pname)
  local siname, spname = staging_names(iname, pname)
  local si, sp = conn:escape_identifier(siname), conn:escape_identifier(spname)
  local lit = conn:escape_literal(hash)
  local existing, err, code, state = existing_rows(conn, pname)
  if not existing then return nil, err, code, state end
  if existing > 0 then
    if not opts.replace then return refuse(hash, existing) end
    summary.replaced = existing
  end
  local ok
  ok, err, code, state = conn:exec(("DROP TABLE IF EXISTS %s, %s"):format(sp, si))
  if not ok then return nil, err, code, state end
  local checks
  checks, err, code, state = parent_checks(conn)
  if not checks then return nil, err, code, state end
  -- 1. fill each staging table in its connection's transaction
  track.open_a = true   -- (a ROLLBACK outside a transaction only warns)
  ok, err, code, state = conn:exec_script("BEGIN; " .. FILL_SETTINGS)
  if not ok then return nil, err, code, state end
  if other then
    track.open_b = true
    ok, err, code, state = other:exec_script("BEGIN; " .. FILL_SETTINGS)
    if not ok then return nil, err, code, state end
  end
  -- shaped like the partitions but for the medium's column and the CHECKs (keys_sql)
  ok, err, code, state = session.steps(conn, {
    -- (INCLUDING GENERATED: a partition's `copied` must be the parent's generated column)
    { ("CREATE TABLE %s (LIKE inode INCLUDING DEFAULTS INCLUDING GENERATED)"):format(si) },
    { ("ALTER TABLE %s DROP COLUMN medium_hash"):format(si) },
    -- the index the parent has on blobid, so that ATTACH finds it instead of
    -- building it under the parents' lock; made empty, as no new row has a
    -- blob, it costs the COPY one predicate per row and no second scan
    { ("CREATE INDEX ON %s (blobid) WHERE blobid IS NOT NULL"):format(si) } })
  if not ok then return nil, err, code, state end
  ok, err, code, state = pconn:exec_script(("CREATE TABLE %s (LIKE path INCLUDING DEFAULTS); "
                                            .. "ALTER TABLE %s DROP COLUMN medium_hash"):format(sp, sp))
  if not ok then return nil, err, code, state end
  for _, r in ipairs(roots) do
    local st
    st, err, code, state = load.walk(conn, {
      root = r.root, inode_table = siname, path_table = spname, fs_index = r.fs_index,
      path_conn = other, ignore = opts.ignore, threads = opts.threads, stall_timeout = opts.stall_timeout,
      progress = opts.progress, freeze = true })
    if not st then return nil, err, code, state end
    ok, err, code = session.absorb(summary, st, r.fs_index, WALK_COUNTS, opts.stall_timeout)
    if not ok then return nil, err, code end
  end
  -- keys and statistics, the two tables at once
  if other then
    ok, err, code, state = other:send(keys_sql(conn, "ntt_path_keys", sp, lit, checks.path) .. "; COMMIT")
  else
    ok, err, code, state = conn:exec_script(keys_sql(conn, "ntt_path_keys", sp, lit, checks.path))
  end
  if not ok then return nil, err, code, state end
  local kok, kerr, kcode, kstate = conn:exec_script(keys_sql(conn, "ntt_inode_keys", si, lit, checks.inode))
  if other then
    ok, err, code, state = other:wait()
    track.open_b = false
    if not ok then return nil, err, code, state end
    track.staged = true   -- the path table is committed: dropped if the rest fails
  end
  if not kok then return nil, kerr, kcode, kstate end
  track.staged = true
  ok, err, code, state = conn:commit()
  track.open_a = false
  if not ok then return nil, err, code, state end
  -- 2. swap them in
  return db.tx(conn, function()
    local r, xerr, xcode, xstate = session.steps(conn, {
      { "SET LOCAL statement_timeout = '30min'" },
      { "SELECT pg_advisory_xact_lock($1, $2)", db.LOCK_NS, db.LOCK_PARTITIONS } })
    if not r then return nil, xerr, xcode, xstate end
    r, xerr, xcode, xstate = existing_rows(conn, pname)
    if not r then return nil, xerr, xcode, xstate end
    if r > 0 and not opts.replace then return refuse(hash, r) end
    r, xerr, xcode, xstate = session.steps(conn, {
      { ("DROP TABLE IF EXISTS %s, %s"):format(pt, it) },
      { ("ALTER TABLE %s RENAME TO %s"):format(si, it) },
      { ("ALTER TABLE %s RENAME TO %s"):format(sp, pt) },
      { ("ALTER TABLE inode ATTACH PARTITION %s FOR VALUES IN (%s)"):format(it, lit) },
      { ("ALTER TABLE path ATTACH PARTITION %s FOR VALUES IN (%s)"):format(pt, lit) },
      { "SELECT ntt_path_inode_fk($1::regclass, $2::regclass, false)", it, pt },
      { "SELECT ntt_path_fk_index($1::regclass)", pt },   -- its index named after it (migration 013)
      { "UPDATE medium SET enum_done = now(), enum_inodes = $2 WHERE medium_hash = $1", hash, summary.inodes } })
    if not r then return nil, xerr, xcode, xstate end
    -- with enum_done, what this walk could not read (a rerun walks it again)
    r, xerr, xcode, xstate = failures.record(conn, hash, summary)
    if not r then return nil, xerr, xcode, xstate end
    return true
  end)
end

function M.load(conn, hash, roots, opts)
  opts = opts or {}
  local iname, pname, pcode = db.ensure_partitions(conn, hash, { create = false })
  if not iname then return nil, pname, pcode end
  local summary = { entries = 0, inodes = 0, files = 0, excluded = 0, excluded_inodes = 0, errors = {},
                    duplicates = {}, mountpoints = {}, error_count = 0, duplicate_count = 0 }
  return session.run(conn, hash, summary, function()
    local other = second_connection(conn, opts)
    local track = { open_a = false, open_b = false, staged = false }
    -- the pcall only cleans up after a raised error, which goes on up
    local done = table.pack(pcall(fill_and_swap, conn, other, hash, roots, opts, summary, track))
    if track.open_b then other:rollback() end
    if other then other:close() end
    if track.open_a then conn:rollback() end
    if not (done[1] and done[2]) and track.staged then
      local si, sp = staging_names(iname, pname)
      conn:exec(("DROP TABLE IF EXISTS %s, %s"):format(conn:escape_identifier(si), conn:escape_identifier(sp)))
    end
    if not done[1] then error(done[2], 0) end
    return table.unpack(done, 2, done.n)
  end)
end

return M
