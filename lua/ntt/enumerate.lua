-- lua/ntt/enumerate.lua: every directory entry of a medium into PostgreSQL.
--
--   enumerate.load(conn, hash, roots, opts) -> summary | nil, msg, code
--     roots: { {fs_index=, root=path}, ... } (the mounted filesystems)
--     opts:  replace=bool, ignore={regex...}, threads=, stall_timeout=,
--            progress=function(entries, dirs)
--     summary: { entries=, files=, inodes=, excluded=, errors={...},
--                duplicates={...}, mountpoints={...}, seconds= }
--
-- One transaction: the walks stream into a temporary table by binary COPY,
-- then the medium's own partitions are filled from it (one inode row per
-- (fs_index, ino) -- hardlinks give several path rows), non-files and
-- all-excluded inodes are made terminal, and enum_done is set.  A medium
-- that already has rows is refused unless replace is set, and then the old
-- rows go in the same transaction (nothing is lost if the new load fails).
-- A stalled walk aborts the load: nothing is committed, code "ESTALLED".
local db = require "ntt.db"
local load = require "ntt.core.load"
local util = require "ntt.core.util"

local M = {}

local TEMP = "ntt_walk_load"

local KIND = { d = "directory", l = "symlink", b = "block device", c = "character device",
               p = "fifo", s = "socket", ["?"] = "unknown type" }

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

function M.load(conn, hash, roots, opts)
  opts = opts or {}
  local iname, pname = db.ensure_partitions(conn, hash)
  if not iname then return nil, pname end
  local it, pt = conn:escape_identifier(iname), conn:escape_identifier(pname)
  local t0 = util.monotonic()
  local summary = { entries = 0, excluded = 0, errors = {}, duplicates = {}, mountpoints = {},
                    error_count = 0, duplicate_count = 0 }
  local ok, res, emsg, ecode = pcall(db.tx, conn, function()
    q(conn, "SET LOCAL statement_timeout = '30min'")
    local existing = q(conn, ("SELECT count(*) AS n FROM %s"):format(pt))[1].n
    if existing > 0 then
      if not opts.replace then
        return nil, ("medium %s already has %d entries: refusing to load it again (use --replace to "
                     .. "replace them)"):format(hash, existing), "EEXIST"
      end
      q(conn, ("DELETE FROM %s"):format(pt))
      q(conn, ("DELETE FROM %s"):format(it))
      summary.replaced = existing
    end
    q(conn, ([[CREATE TEMP TABLE %s (fs_index int4, ino int8, parent int8, type text, mode int4,
              nlink int8, size int8, mtime_ns int8, path bytea, target bytea, exclude text)
              ON COMMIT DROP]]):format(TEMP))
    for _, r in ipairs(roots) do
      local st, err, code = load.walk(conn, {
        root = r.root, table = TEMP, fs_index = r.fs_index, ignore = opts.ignore,
        threads = opts.threads, stall_timeout = opts.stall_timeout, progress = opts.progress })
      if not st then return nil, err, code end
      summary.entries = summary.entries + st.entries
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
    local kinds = {}
    for k, v in pairs(KIND) do kinds[#kinds + 1] = ("WHEN %s THEN %s"):format(conn:escape_literal(k), conn:escape_literal(v)) end
    q(conn, ([[
      INSERT INTO %s (medium_hash, fs_index, ino, state, reason, size, mode, nlink, mtime_ns, fs_type, dir_key, link_target)
      SELECT DISTINCT ON (fs_index, ino) $1, fs_index, ino,
             CASE WHEN type = 'f' THEN 'pending'::inode_state ELSE 'non_file'::inode_state END,
             CASE type %s END, size, mode, nlink, mtime_ns, type, parent, target
        FROM %s ORDER BY fs_index, ino, path]]):format(it, table.concat(kinds, " "), TEMP), hash)
    q(conn, ([[INSERT INTO %s (medium_hash, fs_index, path, ino, parent_ino, exclude_reason)
               SELECT $1, fs_index, path, ino, parent, exclude FROM %s]]):format(pt, TEMP), hash)
    q(conn, ([[UPDATE %s i SET state = 'excluded', reason = 'every path excluded by policy'
                WHERE state = 'pending' AND NOT EXISTS (
                  SELECT 1 FROM %s p WHERE p.fs_index = i.fs_index AND p.ino = i.ino
                                       AND p.exclude_reason IS NULL)]]):format(it, pt))
    local c = q(conn, ([[SELECT count(*) AS inodes, count(*) FILTER (WHERE fs_type = 'f') AS files,
                                count(*) FILTER (WHERE state = 'excluded') AS excluded_inodes
                           FROM %s]]):format(it))[1]
    summary.inodes, summary.files, summary.excluded_inodes = c.inodes, c.files, c.excluded_inodes
    q(conn, "UPDATE medium SET enum_done = now() WHERE medium_hash = $1", hash)
    return true
  end)
  if not ok then
    if type(res) == "table" and res.db then return nil, res.msg, res.code, summary end
    error(res, 0)
  end
  if not res then return nil, emsg, ecode, summary end
  conn:exec(("ANALYZE %s"):format(it))
  conn:exec(("ANALYZE %s"):format(pt))
  summary.seconds = util.monotonic() - t0
  return summary
end

return M
