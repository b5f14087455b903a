-- lua/ntt/enumerate/failures.lua: the places a walk could not read, in the
-- enum_failure table (migration 006): the one owner of its SQL.
--
--   record(conn, hash, summary) -> true   a full load's errors and duplicates replace
--       the medium's rows (call inside the load's transaction, so that a
--       medium with enum_done set always has its failures recorded)
--   open(conn, hash) -> { {fs_index=, path=, err=, msg=}, ... }
--       the unresolved places a rerun walks again
--   settle(conn, hash, tried, found)  after a rerun walked the tried places
--       again: found = { errors={ {fs_index=, path=, err=, msg=} },
--       duplicates={ {fs_index=, path=} } }, what that walk met.  An error
--       met again (at the place, or above it) stays recorded (tries + 1); a
--       tried place with none is resolved; a new one is added.
--       -> still, resolved (counts of the tried places)
--   state(conn, hash) -> { errors=, first={...20}, resolved=, duplicates=, first_duplicates={...} }
-- Each returns nil, msg, "EDB", SQLSTATE on a database error
-- (docs/errors.md); none raises (record and settle run inside their
-- caller's transaction, which rolls back on that return).
local pg = require "ntt.core.pg"

local M = {}

-- A cycle or a depth note (ELOOP) would be met again the same way, or, a
-- walk started below the cycle's top, not be seen at all: never retried.
local function retryable(e) return e.err ~= "ELOOP" end

local function upsert(conn, hash, fs_index, path, kind, err, msg, retry)
  return conn:exec([[
    INSERT INTO enum_failure (medium_hash, fs_index, path, kind, err, msg, retry)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (medium_hash, fs_index, path, kind) DO UPDATE
       SET err = EXCLUDED.err, msg = EXCLUDED.msg, retry = EXCLUDED.retry, last_seen = now(),
           tries = enum_failure.tries + 1, resolved_at = NULL]],
    hash, fs_index, pg.bytea(path), kind, err, msg, retry)
end

-- found's errors and duplicates, each row added or met again.
local function add(conn, hash, found)
  for _, e in ipairs(found.errors or {}) do
    local r, err, code, state = upsert(conn, hash, e.fs_index, e.path, "error", e.err, e.msg, retryable(e))
    if not r then return nil, err, code, state end
  end
  for _, d in ipairs(found.duplicates or {}) do
    local r, err, code, state = upsert(conn, hash, d.fs_index, d.path, "duplicate", nil, "listed twice", false)
    if not r then return nil, err, code, state end
  end
  return true
end

function M.record(conn, hash, summary)
  local r, err, code, state = conn:exec("DELETE FROM enum_failure WHERE medium_hash = $1", hash)
  if not r then return nil, err, code, state end
  return add(conn, hash, summary)
end

function M.open(conn, hash)
  local r, err, code, state = conn:exec([[
    SELECT fs_index, path, err, msg FROM enum_failure
     WHERE medium_hash = $1 AND kind = 'error' AND retry AND resolved_at IS NULL
     ORDER BY fs_index, path]], hash)
  if not r then return nil, err, code, state end
  local out = {}
  for i, row in ipairs(r) do out[i] = { fs_index = row.fs_index, path = row.path, err = row.err, msg = row.msg } end
  return out
end

-- p is q or below it (paths relative to the filesystem root; "" the root).
function M.under(p, q)
  return q == "" or p == q or (#p > #q and p:sub(1, #q) == q and p:byte(#q + 1) == 47)
end

function M.settle(conn, hash, tried, found)
  local still, resolved = 0, 0
  for _, t in ipairs(tried) do
    local met
    for _, e in ipairs(found.errors or {}) do
      if e.fs_index == t.fs_index and M.under(t.path, e.path) then met = true; break end
    end
    if met then
      still = still + 1
    else
      resolved = resolved + 1
      local r, err, code, state = conn:exec([[UPDATE enum_failure SET resolved_at = now()
                 WHERE medium_hash = $1 AND fs_index = $2 AND path = $3 AND kind = 'error']],
        hash, t.fs_index, pg.bytea(t.path))
      if not r then return nil, err, code, state end
    end
  end
  local r, err, code, state = add(conn, hash, found)
  if not r then return nil, err, code, state end
  return still, resolved
end

local function brief(rows)
  local out = {}
  for i, row in ipairs(rows) do
    out[i] = { fs_index = row.fs_index, path = row.path, err = row.err, msg = row.msg }
  end
  return out
end

local STATE_SQL = {
  counts = [[
    SELECT count(*) FILTER (WHERE kind = 'error' AND resolved_at IS NULL) AS errors,
           count(*) FILTER (WHERE kind = 'error' AND resolved_at IS NOT NULL) AS resolved,
           count(*) FILTER (WHERE kind = 'duplicate') AS duplicates
      FROM enum_failure WHERE medium_hash = $1]],
  first = [[SELECT fs_index, path, err, msg FROM enum_failure
             WHERE medium_hash = $1 AND kind = 'error' AND resolved_at IS NULL
             ORDER BY fs_index, path LIMIT 20]],
  dups = [[SELECT fs_index, path FROM enum_failure
            WHERE medium_hash = $1 AND kind = 'duplicate' ORDER BY fs_index, path LIMIT 20]],
}

function M.state(conn, hash)
  local res = {}
  for name, sql in pairs(STATE_SQL) do
    local r, err, code, state = conn:exec(sql, hash)
    if not r then return nil, err, code, state end
    res[name] = r
  end
  local c = res.counts[1]
  return { errors = c.errors, resolved = c.resolved, duplicates = c.duplicates,
           first = brief(res.first), first_duplicates = brief(res.dups) }
end

return M
