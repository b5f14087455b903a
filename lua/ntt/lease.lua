-- lua/ntt/lease.lua: mount leases -- which processes of which host use a
-- medium's mount (the mount_lease table, migration 011).
--
-- A run (or worker) takes its lease before it asks the helper for the
-- mount and gives it back at its unmount stage; the mount is taken down
-- only when no live lease of this host remains.  Mounts are per host, so
-- only this host's leases count; a lease of a process that is gone (pid
-- gone, another boot, the pid reused) does not, and is deleted by the next
-- release.  Taking and releasing hold the medium's advisory lock "ntt mount
-- HASH", the release through its unmount: a run taking a lease while
-- another unmounts waits, then mounts afresh.
--
--   lease.take(conn, hash [, run_id])   -> true
--   lease.release(conn, hash [, unmount]) -> { unmounted=bool, holders={ {pid=, run_id=}, ... } }
--       drops this process's lease (and the dead leases of this host);
--       calls unmount() -> true | nil, msg, code under the lock when no
--       live lease of this host is left (holders is then empty); without
--       unmount only the lease goes.  unmount's failure is returned.
--   lease.holders(conn, hash)           -> the live leases of this host, this process's too
-- Each returns its value or nil, msg, code [, SQLSTATE] (docs/errors.md).
local liveness = require "ntt.liveness"

local M = {}

local function locked(conn, hash, fn)
  local key = "ntt mount " .. hash
  local r, err, code, state = conn:exec("SELECT pg_advisory_lock(hashtextextended($1, 0))", key)
  if not r then return nil, err, code, state end
  -- the pcall only releases the lock before a raised error goes on up
  local ok, res, e, c, s = pcall(fn)
  conn:exec("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)
  if not ok then error(res, 0) end
  return res, e, c, s
end

function M.take(conn, hash, run_id)
  local me = liveness.me()
  return locked(conn, hash, function()
    local r, err, code, state = conn:exec([[
      INSERT INTO mount_lease (medium_hash, host, pid, boot_id, pid_start, run_id) VALUES ($1, $2, $3, $4, $5, $6)
      ON CONFLICT (medium_hash, host, pid) DO UPDATE
         SET boot_id = EXCLUDED.boot_id, pid_start = EXCLUDED.pid_start, run_id = EXCLUDED.run_id, taken_at = now()]],
      hash, me.host, me.pid, me.boot, me.start, run_id)
    if not r then return nil, err, code, state end
    return true
  end)
end

-- This host's leases of hash, split into live ones and dead ones.
local function sorted(conn, hash, me)
  local r, err, code, state = conn:exec(
    "SELECT pid, boot_id, pid_start, run_id FROM mount_lease WHERE medium_hash = $1 AND host = $2 ORDER BY pid",
    hash, me.host)
  if not r then return nil, err, code, state end
  local live, dead = {}, {}
  for _, l in ipairs(r) do
    if liveness.dead { host = me.host, pid = l.pid, boot = l.boot_id, start = l.pid_start } then
      dead[#dead + 1] = l.pid
    else
      live[#live + 1] = { pid = l.pid, run_id = l.run_id }
    end
  end
  return live, dead
end

function M.holders(conn, hash)
  local me = liveness.me()
  return sorted(conn, hash, me)
end

function M.release(conn, hash, unmount)
  local me = liveness.me()
  return locked(conn, hash, function()
    local live, dead, code, state = sorted(conn, hash, me)
    if not live then return nil, dead, code, state end
    dead[#dead + 1] = me.pid
    local r, err
    r, err, code, state = conn:exec("DELETE FROM mount_lease WHERE medium_hash = $1 AND host = $2 AND pid = ANY($3::int[])",
                                    hash, me.host, "{" .. table.concat(dead, ",") .. "}")
    if not r then return nil, err, code, state end
    local holders = {}
    for _, l in ipairs(live) do
      if l.pid ~= me.pid then holders[#holders + 1] = l end
    end
    if #holders > 0 or not unmount then return { unmounted = false, holders = holders } end
    local ok, uerr, ucode = unmount()
    if not ok then return nil, uerr, ucode end
    return { unmounted = true, holders = holders }
  end)
end

return M
