-- lua/ntt/runs.lua: the run table -- one row per `ntt run`.
--
--   runs.start(conn, policy_path)         -> run_id
--   runs.add_rule_hits(conn, id, hits)    -> true   (hits: label -> n, added
--                                                    to the row's counts)
--   runs.finish(conn, id, exit_code)      -> true
--   runs.get(conn, id)                    -> { run_id=, policy=, exit_code=, rule_hits={...} }
-- Each returns its value or nil, msg, "EDB", SQLSTATE (docs/errors.md).
local json = require "ntt.json"

local M = {}

function M.start(conn, policy)
  local r, err, code, state = conn:exec("INSERT INTO run (policy) VALUES ($1) RETURNING run_id", policy)
  if not r then return nil, err, code, state end
  return r[1].run_id
end

function M.add_rule_hits(conn, id, hits)
  local r, err, code, state = conn:exec([[
    UPDATE run SET rule_hits = (
      SELECT coalesce(jsonb_object_agg(k, n), '{}'::jsonb)
        FROM (SELECT k, sum(v::bigint) AS n
                FROM (SELECT * FROM jsonb_each_text(run.rule_hits)
                      UNION ALL SELECT * FROM jsonb_each_text($2::jsonb)) AS h(k, v)
               GROUP BY k) AS s)
     WHERE run_id = $1]], id, json.encode(hits))
  if not r then return nil, err, code, state end
  return true
end

function M.finish(conn, id, exit_code)
  local r, err, code, state = conn:exec("UPDATE run SET finished_at = now(), exit_code = $2 WHERE run_id = $1", id, exit_code)
  if not r then return nil, err, code, state end
  return true
end

function M.get(conn, id)
  local r, err, code, state = conn:exec(
    "SELECT run_id, policy, exit_code, rule_hits::text AS hits FROM run WHERE run_id = $1", id)
  if not r then return nil, err, code, state end
  if not r[1] then return nil, ("no run %s"):format(tostring(id)), "ENOENT" end
  local row = r[1]
  row.rule_hits, row.hits = json.decode(row.hits), nil
  return row
end

return M
