-- lua/ntt/enumerate.lua: every directory entry of a medium into PostgreSQL.
--
--   enumerate.load(conn, hash, roots, opts) -> summary | nil, msg, code
--     roots: { {fs_index=, root=path}, ... } (the mounted filesystems)
--     opts:  replace=bool, ignore={regex...}, threads=, stall_timeout=,
--            progress=function(entries, dirs)
--     summary: { entries=, files=, inodes=, excluded=, excluded_inodes=, errors={...},
--                duplicates={...}, mountpoints={...}, seconds= }
--
-- One transaction: the walks stream by binary COPY straight into the
-- medium's own fresh partitions (one inode row per (fs_index, ino), from the
-- first sighting of a hardlinked inode -- hardlinks give several path rows;
-- non-files terminal with their kind), all-excluded inodes are made
-- terminal, and enum_done is set.  A medium
-- that already has rows is refused unless replace is set, and then the old
-- rows go in the same transaction (nothing is lost if the new load fails).
-- A stalled walk aborts the load: nothing is committed, code "ESTALLED".
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

-- The medium's partitions are made anew inside the load transaction as
-- plain tables, filled, attached, and only then given their keys and
-- indexes (ntt_partition_keys): PostgreSQL builds each index once by sorting
-- instead of growing it row by row, no per-row foreign-key triggers queue up,
-- and a table created in the same transaction needs no WAL for its rows when
-- wal_level is minimal (the private cluster's setting).  The CHECK on the
-- medium's hash lets ATTACH skip its validation scan.  path -> inode is
-- consistent by construction (both come from the same walk rows), so its
-- foreign key is added NOT VALID: enforced for every later change, without
-- another pass over a million rows.
local function fresh_partitions(conn, hash, iname, pname)
  local it, pt = conn:escape_identifier(iname), conn:escape_identifier(pname)
  local lit = conn:escape_literal(hash)
  q(conn, "SELECT pg_advisory_xact_lock($1, $2)", db.LOCK_NS, db.LOCK_PARTITIONS)
  q(conn, ("DROP TABLE IF EXISTS %s, %s"):format(pt, it))
  for _, t in ipairs { { it, "inode" }, { pt, "path" } } do
    q(conn, ("CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS, CHECK (medium_hash = %s))")
      :format(t[1], t[2], lit))
  end
  return it, pt, lit
end

local function attach(conn, it, pt, lit)
  q(conn, ("ALTER TABLE inode ATTACH PARTITION %s FOR VALUES IN (%s)"):format(it, lit))
  q(conn, ("ALTER TABLE path ATTACH PARTITION %s FOR VALUES IN (%s)"):format(pt, lit))
  q(conn, "SELECT ntt_partition_keys($1::regclass, $2::regclass, false)", it, pt)
end

function M.load(conn, hash, roots, opts)
  opts = opts or {}
  local iname, pname = db.ensure_partitions(conn, hash)
  if not iname then return nil, pname end
  local t0 = util.monotonic()
  local summary = { entries = 0, inodes = 0, files = 0, excluded = 0, errors = {}, duplicates = {}, mountpoints = {},
                    error_count = 0, duplicate_count = 0 }
  local it, pt, lit
  local ok, res, emsg, ecode = pcall(db.tx, conn, function()
    q(conn, "SET LOCAL statement_timeout = '30min'")
    q(conn, "SET LOCAL maintenance_work_mem = '256MB'")
    local existing = q(conn, ("SELECT count(*) AS n FROM %s"):format(conn:escape_identifier(pname)))[1].n
    if existing > 0 then
      if not opts.replace then
        return nil, ("medium %s already has %d entries: refusing to load it again (use --replace to "
                     .. "replace them)"):format(hash, existing), "EEXIST"
      end
      summary.replaced = existing
    end
    it, pt, lit = fresh_partitions(conn, hash, iname, pname)
    for _, r in ipairs(roots) do
      local st, err, code = load.walk(conn, {
        root = r.root, inode_table = iname, path_table = pname, medium = hash, fs_index = r.fs_index,
        ignore = opts.ignore, threads = opts.threads, stall_timeout = opts.stall_timeout, progress = opts.progress })
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
                                AND p.exclude_reason IS NULL)]]):format(it, pt)).n
    end
    attach(conn, it, pt, lit)
    q(conn, "UPDATE medium SET enum_done = now() WHERE medium_hash = $1", hash)
    return true
  end)
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
