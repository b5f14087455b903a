-- lua/ntt/enumerate/session.lua: what a load (ntt.enumerate) and a retry
-- (ntt.enumerate.retry) of a medium share: the medium's lock, the tally of
-- their walks, their statements.
--
--   session.run(conn, hash, summary, fn) -> summary | nil, msg, code, summary
--       fn() runs holding the session advisory lock "ntt load HASH" (taken
--       with a try: another holder gives "EBUSY" at once, fn not run), which
--       is released on every path, a raised error too (raised again).  fn
--       returns true or nil, msg, code [, SQLSTATE]; the SQLSTATE of a
--       failure goes into summary.sqlstate, summary.seconds is set on success.
--   session.absorb(summary, st, fs_index, fields, stall_timeout) -> true | nil, msg, code
--       adds one load.walk result to summary: the numeric fields listed,
--       errors, duplicates (and mountpoints when summary has the list), each
--       tagged with fs_index; an interrupted walk: nil, "interrupted",
--       "EINTR"; a stalled one: summary.stalled set and "ESTALLED".
--   session.steps(conn, list) -> true | nil, msg, code, SQLSTATE
--       list = { {sql, params...}, ... } executed in order up to the first
--       failure.
local util = require "ntt.core.util"

local M = {}

function M.run(conn, hash, summary, fn)
  local t0 = util.monotonic()
  local key = "ntt load " .. hash
  local got, lerr, lcode, lstate = conn:exec("SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS ok", key)
  if not got then summary.sqlstate = lstate; return nil, lerr, lcode, summary end
  if not got[1].ok then
    return nil, ("medium %s is being loaded by another process"):format(hash), "EBUSY", summary
  end
  -- the pcall only releases the lock before a raised error goes on up
  local ok, res, emsg, ecode, estate = pcall(fn)
  conn:exec("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)
  if not ok then error(res, 0) end
  if not res then summary.sqlstate = estate; return nil, emsg, ecode, summary end
  summary.seconds = util.monotonic() - t0
  return summary
end

function M.absorb(summary, st, fs_index, fields, stall_timeout)
  for _, f in ipairs(fields) do summary[f] = summary[f] + st[f] end
  for _, e in ipairs(st.errors) do e.fs_index = fs_index; summary.errors[#summary.errors + 1] = e end
  for _, d in ipairs(st.duplicates) do summary.duplicates[#summary.duplicates + 1] = { fs_index = fs_index, path = d } end
  if summary.mountpoints then
    for _, m in ipairs(st.mountpoints) do summary.mountpoints[#summary.mountpoints + 1] = { fs_index = fs_index, path = m } end
  end
  if st.interrupted then return nil, "interrupted", "EINTR" end
  if st.stalled then
    summary.stalled = { fs_index = fs_index, path = st.stalled_path, seconds = st.seconds }
    return nil, ("walk of p%d stalled in '%s' (no progress for %gs)"):format(fs_index,
      tostring(st.stalled_path), stall_timeout or 120), "ESTALLED"
  end
  return true
end

function M.steps(conn, list)
  for _, s in ipairs(list) do
    local r, err, code, state = conn:exec(table.unpack(s, 1, s.n or #s))
    if not r then return nil, err, code, state end
  end
  return true
end

return M
