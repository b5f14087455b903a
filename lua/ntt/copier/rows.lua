-- lua/ntt/copier/rows.lua: all the SQL of copying a medium -- its inode
-- rows (claims, paths, attempts, results, release) and its copy_done.
--
--   rows.open(conn, hash) -> r         (statements on the medium's partitions)
--   r:claim(n, worker, lease)          -> { {fs_index=, ino=, size=, attempts=, dir_key=} }
--   r:paths(list)                      -> { ["fs_index:ino"] = first non-excluded path }
--   r:count_attempts(items, errs, keep)-> { ["fs_index:ino"] = attempts after this one }
--   r:reset_attempts(items)            -> true   (after a remount)
--   r:write(final, worker)             -> true   (blobs + results, one transaction;
--                                                 a skipped file's reason goes in claimed_by)
--   r:release(worker)                  -> true   (this worker's claims)
--   r:unclaim(list, worker)            -> true   (those of its claims, rows unchanged)
--   r:renew(worker, lease)             -> true   (its claims' leases from now on)
--   r:release_prefix(prefix)           -> true   (a dead process's pending claims)
--   r:claimers()                       -> { worker id, ... } holding pending rows
--   r:release_claimers(ids)            -> number of pending rows released
--   r:pending()                        -> number of pending rows
--   r:pending_size()                   -> { files=, bytes= } of the pending rows
--   r:retry_failed()                   -> n: failed_retryable rows nobody holds made
--                                         pending again, attempts reset (a run's retry)
--   r:recover(states, dry_run)         -> { {fs_index=, ino=, state=, reason=, attempts=,
--                                         size=} } the rows in one of states nobody
--                                         holds, made pending with attempts reset
--                                         (dry_run: only listed); copy_done cleared
--   r:take_path(path, worker, lease)   -> { fs_index=, ino=, size= }: the file at path
--                                         (bytes) reset (pending, attempts 0, reason and
--                                         damage cleared) and claimed by worker -- an
--                                         operator's retry; ENOENT no such path, EBUSY
--                                         another holds it; copy_done cleared
--   r:counts()                         -> { pending=, total= }
--   r:finished()                       -> number of rows no longer pending
--   r:copy_done(keep)                  -> true   (sets medium.copy_done; keep: an
--                                                 earlier time stays)
-- Every function returns its value or nil, msg, code, SQLSTATE (docs/errors.md); none raises.
-- items/list are arrays of { fs_index=, ino= }; final entries are
-- { fs_index=, ino=, state=, reason=, blobid=, size=, damage=, release= }
-- (release: leave the row as it was, only drop the claim).
local db = require "ntt.db"
local json = require "ntt.json"
local S = require "ntt.states"
local pg = require "ntt.core.pg"

local M = {}
local R = {}
R.__index = R

function M.open(conn, hash)
  local it, pt = db.partition_names(hash)
  return setmetatable({ conn = conn, hash = hash, it = conn:escape_identifier(it),
                        pt = conn:escape_identifier(pt) }, R)
end

local function key(fs_index, ino) return fs_index .. ":" .. ino end
M.key = key

-- {1,2,3} for an int[] / bigint[] parameter.
local function ints(list, field)
  local out = {}
  for i, x in ipairs(list) do out[i] = x[field] end
  return "{" .. table.concat(out, ",") .. "}"
end

-- Up to n pending inodes, in (fs_index, dir_key, ino) order, in one short
-- transaction stamping them with worker and a lease of `lease` seconds.
-- The rows are updated by the tuple ids the locking read found (they are
-- locked: nothing moves them meanwhile): a join by key made the planner
-- hash the whole partition for every claim, a cost that grew with the
-- medium (50,000 rows: 73 ms a claim of 5,000, by tuple id 50 ms).
function R:claim(n, worker, lease)
  local conn = self.conn
  local rows, err, code, state = db.tx(conn, function()
    return conn:exec(([[
      WITH c AS (
        SELECT ctid FROM %s
         WHERE medium_hash = $4 AND state = '%s' AND (claimed_by IS NULL OR lease_until < now())
         ORDER BY fs_index, dir_key, ino
         LIMIT $1 FOR UPDATE SKIP LOCKED)
      UPDATE %s i SET claimed_by = $2, lease_until = now() + make_interval(secs => $3)
       WHERE i.ctid = ANY (ARRAY(SELECT ctid FROM c))
      RETURNING i.fs_index, i.ino, i.size, i.attempts, i.dir_key]]):format(self.it, S.PENDING, self.it),
      n, worker, lease, self.hash)
  end)
  if not rows then return nil, err, code, state end
  -- (returned in the order of the tuple ids: back in the claim's order)
  table.sort(rows, function(a, b)
    if a.fs_index ~= b.fs_index then return a.fs_index < b.fs_index end
    local da, dbk = a.dir_key or math.huge, b.dir_key or math.huge   -- (NULLS LAST)
    if da ~= dbk then return da < dbk end
    return a.ino < b.ino
  end)
  return rows
end

function R:paths(list)
  local res, err, code, state = self.conn:exec(([[
    SELECT DISTINCT ON (p.fs_index, p.ino) p.fs_index, p.ino, p.path
      FROM %s p JOIN unnest($1::int[], $2::bigint[]) AS c(fs_index, ino)
        ON p.medium_hash = $3 AND p.fs_index = c.fs_index AND p.ino = c.ino
     WHERE p.exclude_reason IS NULL
     ORDER BY p.fs_index, p.ino, p.path]]):format(self.pt),
    ints(list, "fs_index"), ints(list, "ino"), self.hash)
  if not res then return nil, err, code, state end
  local map = {}
  for _, r in ipairs(res) do map[key(r.fs_index, r.ino)] = r.path end
  return map
end

-- One attempt more for each item, its error (errs[i]) pushed on the row's
-- bounded history (keep entries); shared by every worker.
function R:count_attempts(items, errs, keep)
  local res, err, code, state = self.conn:exec(([[
    UPDATE %s i SET attempts = i.attempts + 1,
           errors = ntt_push_bounded(i.errors, e.err, $4)
      FROM (SELECT * FROM unnest($1::int[], $2::bigint[]) WITH ORDINALITY AS u(fs_index, ino, n)) u
      JOIN (SELECT x AS err, n FROM jsonb_array_elements($3::jsonb) WITH ORDINALITY AS j(x, n)) e
        ON e.n = u.n
     WHERE i.medium_hash = $5 AND i.fs_index = u.fs_index AND i.ino = u.ino
    RETURNING i.fs_index, i.ino, i.attempts]]):format(self.it),
    ints(items, "fs_index"), ints(items, "ino"), json.encode(json.array(errs)), keep, self.hash)
  if not res then return nil, err, code, state end
  local map = {}
  for _, r in ipairs(res) do map[key(r.fs_index, r.ino)] = r.attempts end
  return map
end

function R:reset_attempts(items)
  local res, err, code, state = self.conn:exec(([[
    UPDATE %s i SET attempts = 0 FROM unnest($1::int[], $2::bigint[]) AS u(fs_index, ino)
     WHERE i.medium_hash = $3 AND i.fs_index = u.fs_index AND i.ino = u.ino]]):format(self.it),
    ints(items, "fs_index"), ints(items, "ino"), self.hash)
  if not res then return nil, err, code, state end
  return true
end

-- The blobs of a batch's results ($1 ids, $2 sizes, $3 SHA-256 or NULL),
-- inserted in blobid order.  (A digest taken now completes a blob recorded
-- without it.)
M.BLOBS = [[
  INSERT INTO blob (blobid, size, sha256)
       SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]) AS b(blobid, size, sha256) ORDER BY blobid
      ON CONFLICT (blobid) DO UPDATE SET sha256 = coalesce(blob.sha256, EXCLUDED.sha256)
   WHERE blob.sha256 IS NULL AND EXCLUDED.sha256 IS NOT NULL]]

-- Column arrays and unnest: no per-row JSON to build and parse.  The
-- worker id is a column of the join, not a filter on the partition: the
-- statistics say claimed_by is NULL everywhere (as at the load's ANALYZE),
-- and "claimed_by = me" taken for one row made the planner scan the whole
-- partition for each result instead of going by key.
function R:write(final, worker)
  local conn = self.conn
  local c = { fs = {}, ino = {}, state = {}, blob = {}, reason = {}, damage = {}, release = {} }
  local bid, bsize, bsha, nb, seen = {}, {}, {}, 0, {}
  for i, f in ipairs(final) do
    c.fs[i], c.ino[i], c.state[i], c.blob[i] = f.fs_index, f.ino, f.state, f.blobid
    c.reason[i], c.release[i] = f.reason, f.release or false
    c.damage[i] = f.damage and json.encode(f.damage) or nil
    if f.blobid and not seen[f.blobid] then
      seen[f.blobid] = true
      nb = nb + 1
      bid[nb], bsize[nb], bsha[nb] = f.blobid, f.size, f.sha256
    end
  end
  local n = #final
  local function tx()
    if nb > 0 then
      -- In blobid order (M.BLOBS): two workers recording batches that share blobs
      -- (the same content in both) then wait for each other's keys in one
      -- order, never in a cycle (a deadlock, which PostgreSQL breaks by
      -- failing one of them).
      local r, err, code, state = conn:exec(M.BLOBS, db.array(bid, nb), db.array(bsize, nb), db.array(bsha, nb))
      if not r then return nil, err, code, state end
    end
    -- each result by its key: a hash join read the whole partition per
    -- batch (a million rows at a million files)
    local r, err, code, state = conn:exec_script("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
    if not r then return nil, err, code, state end
    r, err, code, state = conn:exec(([[
      UPDATE %s i SET
             state = CASE WHEN r.release THEN i.state ELSE r.state::inode_state END,
             blobid = coalesce(r.blobid, i.blobid),
             reason = CASE WHEN r.release THEN i.reason ELSE r.reason END,
             damage = coalesce(r.damage, i.damage),
             processed_at = CASE WHEN r.release THEN i.processed_at ELSE now() END,
             -- a skip names itself in claimed_by (the seed's convention,
             -- migration 013), under a lease long expired
             claimed_by = CASE WHEN NOT r.release AND r.state = '%s' THEN r.reason END,
             lease_until = CASE WHEN NOT r.release AND r.state = '%s' THEN '-infinity'::timestamptz END
        FROM unnest($1::int[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::bool[],
                    array_fill($8::text, array[$10::int]))
             AS r(fs_index, ino, state, blobid, reason, damage, release, worker)
       WHERE i.medium_hash = $9 AND i.fs_index = r.fs_index AND i.ino = r.ino
         AND i.claimed_by = r.worker]]):format(self.it, S.SKIPPED, S.SKIPPED),
      db.array(c.fs, n), db.array(c.ino, n), db.array(c.state, n), db.array(c.blob, n),
      db.array(c.reason, n), db.array(c.damage, n), db.array(c.release, n), worker, self.hash, n)
    if not r then return nil, err, code, state end
    return true
  end
  -- A deadlock or serialization failure left nothing written: the same
  -- transaction again (a few times) is the remedy PostgreSQL prescribes.
  local ok, err, code, state
  for attempt = 1, 4 do
    ok, err, code, state = db.tx(conn, tx)
    if ok or (state ~= "40P01" and state ~= "40001") then break end
    require("ntt.core.util").sleep(0.05 * attempt)
  end
  return ok, err, code, state
end

local function ok(r, err, code, state)
  if not r then return nil, err, code, state end
  return true
end

function R:release(worker)
  return ok(self.conn:exec(("UPDATE %s SET claimed_by = NULL, lease_until = NULL WHERE medium_hash = $1 AND claimed_by = $2")
                           :format(self.it), self.hash, worker))
end

function R:renew(worker, lease)
  return ok(self.conn:exec(([[UPDATE %s SET lease_until = now() + make_interval(secs => $3)
                               WHERE medium_hash = $1 AND claimed_by = $2 AND state = '%s']])
                           :format(self.it, S.PENDING), self.hash, worker, lease))
end

function R:unclaim(list, worker)
  return ok(self.conn:exec(([[
    UPDATE %s i SET claimed_by = NULL, lease_until = NULL FROM unnest($1::int[], $2::bigint[]) AS u(fs_index, ino)
     WHERE i.medium_hash = $3 AND i.fs_index = u.fs_index AND i.ino = u.ino AND i.claimed_by = $4]]):format(self.it),
    ints(list, "fs_index"), ints(list, "ino"), self.hash, worker))
end

function R:release_prefix(prefix)
  return ok(self.conn:exec(([[UPDATE %s SET claimed_by = NULL, lease_until = NULL
                               WHERE medium_hash = $1 AND state = '%s' AND starts_with(claimed_by, $2)]])
                           :format(self.it, S.PENDING), self.hash, prefix))
end

function R:claimers()
  local r, err, code, state = self.conn:exec(([[SELECT DISTINCT claimed_by FROM %s
                                                WHERE medium_hash = $1 AND state = '%s' AND claimed_by IS NOT NULL]])
                                             :format(self.it, S.PENDING), self.hash)
  if not r then return nil, err, code, state end
  local out = {}
  for i, row in ipairs(r) do out[i] = row.claimed_by end
  return out
end

function R:release_claimers(ids)
  local r, err, code, state = self.conn:exec(([[
    WITH u AS (UPDATE %s SET claimed_by = NULL, lease_until = NULL
                WHERE medium_hash = $1 AND state = '%s' AND claimed_by = ANY($2::text[]) RETURNING 1)
    SELECT count(*) AS n FROM u]]):format(self.it, S.PENDING), self.hash, db.array(ids, #ids))
  if not r then return nil, err, code, state end
  return r[1].n
end

function R:pending()
  local r, err, code, state = self.conn:exec(("SELECT count(*) AS n FROM %s WHERE medium_hash = $1 AND state = '%s'")
                                      :format(self.it, S.PENDING), self.hash)
  if not r then return nil, err, code, state end
  return r[1].n
end

function R:pending_size()
  local r, err, code, state = self.conn:exec(([[SELECT count(*) AS n, coalesce(sum(size), 0)::bigint AS bytes
                                                 FROM %s WHERE medium_hash = $1 AND state = '%s']])
                                             :format(self.it, S.PENDING), self.hash)
  if not r then return nil, err, code, state end
  return { files = r[1].n, bytes = r[1].bytes }
end

-- Rows in one of `states` (a list) that no live claim holds: listed, and
-- unless dry_run made pending again with a fresh attempt budget (their
-- error history stays; reason, damage and the claim go).
local RESET = [[
  WITH c AS (
    SELECT fs_index, ino, state::text AS state, reason, attempts, size FROM %s
     WHERE medium_hash = $2 AND state::text = ANY($1::text[])
       AND (claimed_by IS NULL OR lease_until < now())
     ORDER BY fs_index, dir_key, ino FOR UPDATE)
  UPDATE %s i SET state = '%s', attempts = 0, reason = NULL, damage = NULL, processed_at = NULL,
         claimed_by = NULL, lease_until = NULL
    FROM c WHERE i.medium_hash = $2 AND i.fs_index = c.fs_index AND i.ino = c.ino
  RETURNING c.fs_index, c.ino, c.state, c.reason, c.attempts, c.size]]

function R:recover(states, dry_run)
  local sql = dry_run and ([[SELECT fs_index, ino, state::text AS state, reason, attempts, size FROM %s
                               WHERE medium_hash = $2 AND state::text = ANY($1::text[])
                                 AND (claimed_by IS NULL OR lease_until < now())
                               ORDER BY fs_index, dir_key, ino]]):format(self.it)
              or RESET:format(self.it, self.it, S.PENDING)
  local res, err, code, state = self.conn:exec(sql, db.array(states, #states), self.hash)
  if not res then return nil, err, code, state end
  if not dry_run and #res > 0 then   -- the medium's copy is not done any more
    local ok, e, c, st = self.conn:exec("UPDATE medium SET copy_done = NULL WHERE medium_hash = $1", self.hash)
    if not ok then return nil, e, c, st end
  end
  table.sort(res, function(a, b)
    if a.fs_index ~= b.fs_index then return a.fs_index < b.fs_index end
    return a.ino < b.ino
  end)
  return res
end

function R:retry_failed()
  local res, err, code, state = self.conn:exec(([[
    UPDATE %s SET state = '%s', attempts = 0, reason = NULL, processed_at = NULL
     WHERE medium_hash = $1 AND state = '%s' AND (claimed_by IS NULL OR lease_until < now())]])
    :format(self.it, S.PENDING, S.FAILED_RETRYABLE), self.hash)
  if not res then return nil, err, code, state end
  return res.n or 0
end

function R:take_path(path, worker, lease)
  local conn = self.conn
  return db.tx(conn, function()
    local r, err, code, state = conn:exec(([[
      SELECT i.fs_index, i.ino, i.size, (i.claimed_by IS NOT NULL AND i.lease_until >= now()) AS held
        FROM %s p JOIN %s i ON i.medium_hash = p.medium_hash AND i.fs_index = p.fs_index AND i.ino = p.ino
       WHERE p.medium_hash = $2 AND p.path = $1 ORDER BY p.fs_index LIMIT 1 FOR UPDATE OF i]]):format(self.pt, self.it),
      pg.bytea(path), self.hash)
    if not r then return nil, err, code, state end
    local row = r[1]
    if not row then return nil, ("no file %q on medium %s"):format(path, self.hash), "ENOENT" end
    if row.held then return nil, ("%q is being copied by another process"):format(path), "EBUSY" end
    r, err, code, state = conn:exec(([[
      UPDATE %s SET state = '%s', attempts = 0, reason = NULL, damage = NULL, processed_at = NULL,
             claimed_by = $4, lease_until = now() + make_interval(secs => $5)
       WHERE medium_hash = $1 AND fs_index = $2 AND ino = $3]]):format(self.it, S.PENDING),
      self.hash, row.fs_index, row.ino, worker, lease)
    if not r then return nil, err, code, state end
    r, err, code, state = conn:exec("UPDATE medium SET copy_done = NULL WHERE medium_hash = $1", self.hash)
    if not r then return nil, err, code, state end
    return { fs_index = row.fs_index, ino = row.ino, size = row.size }
  end)
end

function R:counts()
  local r, err, code, state = self.conn:exec(("SELECT count(*) FILTER (WHERE state = '%s') AS pending, count(*) AS n FROM %s")
                                      :format(S.PENDING, self.it))
  if not r then return nil, err, code, state end
  return { pending = r[1].pending, total = r[1].n }
end

function R:finished()
  local r, err, code, state = self.conn:exec(("SELECT count(*) AS n FROM %s WHERE state <> '%s'"):format(self.it, S.PENDING))
  if not r then return nil, err, code, state end
  return r[1].n
end

function R:copy_done(keep)
  local sql = keep and "UPDATE medium SET copy_done = coalesce(copy_done, now()) WHERE medium_hash = $1"
              or "UPDATE medium SET copy_done = now() WHERE medium_hash = $1"
  return ok(self.conn:exec(sql, self.hash))
end

return M
