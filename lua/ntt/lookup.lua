-- lua/ntt/lookup.lua: what `ntt find`, `ntt blob` and `ntt problems`
-- share -- the database opened without starting a server that is not
-- running, a failure's message and exit status, JSON out.  Not a subcommand
-- (no main: it lives outside cmd/).
local M = {}

-- connect() -> conn, nil, nil, stop | nil, msg, code: the database to answer
-- from.  With NTT_DB_URL, that one.  The private cluster: used when it
-- runs; started when stopped, and stop() stops it again (not a cluster
-- `ntt db serve` serves: other hosts may connect any time); when there is
-- none, nil, "no database yet ...", "ENOENT" (nothing is created).
-- stop(conn) closes conn and stops the server when no other client uses it.
function M.connect()
  local db = require "ntt.db"
  if require("ntt.config").db_url() then
    local conn, err, code = db.connect()
    return conn, err, code
  end
  local c = require("ntt.cluster").default()
  local state, info = c:status()
  if state == "absent" then
    return nil, ("no database yet (no cluster at %s: `ntt run` or `ntt db init` makes one)"):format(info.root), "ENOENT"
  end
  local stop
  if state ~= "running" then
    local ok, err, code = c:start()
    if not ok then return nil, err, code end
    -- stopped again unless another client came meanwhile (a run started
    -- while we answered keeps its server) or it is served to other hosts
    -- (`ntt db serve`: they connect whenever they start)
    if not require("ntt.serve").info(c) then
      stop = function(conn)
        local r = conn and conn:status() == "ok" and conn:exec([[
          SELECT count(*) AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()]])
        if conn then conn:close() end
        if r and r[1].n == 0 then c:stop() end
      end
    end
  end
  local conn, err, code = db.connect { autostart = false }
  if not conn then
    if stop then stop() end
    return nil, err, code
  end
  return conn, nil, nil, stop
end

-- fn(conn) -> exit status, with a connection to a database that exists.
-- A private cluster that is not running is started for the answer and
-- stopped again; none at all answers "no database yet" (exit 2).
function M.with_db(what, fn)
  local db = require "ntt.db"
  local conn, err, _, stop = M.connect()
  if not conn then io.stderr:write(("ntt %s: %s\n"):format(what, tostring(err))); return 2 end
  local ok, cerr = db.check(conn)
  local code
  if not ok then io.stderr:write("ntt: ", cerr, "\n"); code = 2 else code = fn(conn) end
  if stop then stop(conn) else conn:close() end
  return code
end

function M.fail(what, err)
  io.stderr:write(("ntt %s: %s\n"):format(what, tostring(err)))
  return 2
end

function M.json_out(v)
  local json = require "ntt.json"
  if type(v) == "table" and #v == 0 and next(v) == nil then v = json.array(v) end
  io.stdout:write(json.encode(v), "\n")
end

return M
