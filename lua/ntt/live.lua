-- lua/ntt/live.lua: a running `ntt run`'s live state and its control socket.
--
-- Every run listens on <data root>/run/ctl-<run_id>.sock (mode 0600, one per
-- run; `ntt attach` connects).  The socket is serviced from the places the
-- run waits (the copier's waits, worker waits, progress callbacks): never
-- by a thread of its own, so a console statement runs between two steps
-- of the run, in its Lua state, with its connection -- and is cut off after
-- a time limit, so the run always comes first.
--
-- Protocol (a line per request; the model is knot-resolver's control socket):
--   request: "<id> <chunk>\n"  the chunk's "\" and newlines escaped as
--            "\\" and "\n"; tried as "return <chunk>", then as a statement
--   reply:   "<id>\n<text>\0"  what print() wrote, then the results
--            pretty-printed (or "error: msg")
--
--   live.open{run_id=, log=, policy=, db=, dir=, name=} -> socket path | nil, msg, code
--       (a stale socket of a dead run there is removed first; name: a worker
--       process's socket, "workers/<pid>", which the run's console reaches)
--   live.close()                 removes the socket (also when the state closes)
--   live.service([timeout])      answers what clients sent (waits at most timeout)
--   live.sleep(seconds)          services the socket while sleeping
--   live.stage(ctx, name)        which stage a medium is in
--   live.copier(handle) -> unregister   a copier's handle (ntt.copier)
--   live.worker(pid, medium, state)     a worker process and its state
--   live.progress(P) -> unregister      a progress line to redraw while waiting
--   live.every(seconds, fn [, on_error]) -> stop   fn again and again while the run services
--   live.override(key, value, old)      a policy value changed for the rest of the run (logged)
--   live.sockets([dir]) -> { {path=, run_id=, live=bool} }   the runs' sockets in dir
--   live.ask(path, chunk [, timeout]) -> answer | nil   one chunk asked of another
--       process's socket (the console asks the workers' this way)
--   live.dir(), live.path()      <data root>/run; this process's socket
--   live.escape(s), live.unescape(s)   a chunk on one line and back
--   live.state                   the state the console reads (live/console.lua)
local util = require "ntt.core.util"

local M = {}

local state = { media = {}, order = {}, copiers = {}, workers = {}, errors = {}, overrides = {},
                progress = {}, paused = false }
M.state = state
local server, path

local MAX_ERRORS = 50
local LIMIT = 5.0   -- seconds a console statement may run (asking workers included)

function M.dir()
  return require("ntt.config").path("run")
end

function M.escape(s) return (s:gsub("\\", "\\\\"):gsub("\n", "\\n"):gsub("\r", "\\r")) end

function M.unescape(s)
  return (s:gsub("\\(.)", function(c) return c == "n" and "\n" or c == "r" and "\r" or c end))
end

-- The sockets in dir: which answer (a live run) and which are left by a dead one.
function M.sockets(dir)
  local fs, ctl = require "ntt.core.fs", require "ntt.core.ctl"
  dir = dir or M.dir()
  local out = {}
  for _, name in ipairs(fs.readdir(dir) or {}) do
    local id = name:match("^ctl%-(.+)%.sock$")
    if id then
      local p = dir .. "/" .. name
      local c, _, code = ctl.connect(p)
      if c then c:close() end
      out[#out + 1] = { path = p, run_id = id, live = c ~= nil, code = code }
    end
  end
  table.sort(out, function(a, b) return a.run_id < b.run_id end)
  return out
end

-- Recent warnings and errors of the run, kept for the console.
local function keep_errors(log)
  local orig = log.log
  log.log = function(self, level, event, fields, message, quiet)
    if level == "warn" or level == "error" then
      local e = state.errors
      e[#e + 1] = { time = os.date("!%H:%M:%S"), level = level, event = event, msg = message, fields = fields }
      if #e > MAX_ERRORS then table.remove(e, 1) end
    end
    return orig(self, level, event, fields, message, quiet)
  end
end

function M.open(o)
  local fs, ctl = require "ntt.core.fs", require "ntt.core.ctl"
  local dir = o.dir or M.dir()
  local ok, err, code = fs.mkdirp(dir)
  if not ok then return nil, err, code end
  for _, s in ipairs(M.sockets(dir)) do
    if not s.live and s.code == "ECONNREFUSED" then os.remove(s.path) end
  end
  state.run_id, state.pid, state.log, state.policy, state.db = o.run_id, util.pid(), o.log, o.policy, o.db
  state.started = os.time()
  if o.log then keep_errors(o.log) end
  local p = o.name and ("%s/%s.sock"):format(dir, o.name) or ("%s/ctl-%s.sock"):format(dir, tostring(o.run_id or util.pid()))
  if o.name then
    fs.mkdirp(p:match("^(.*)/"))
    local c, _, ccode = ctl.connect(p)
    if c then c:close() elseif ccode == "ECONNREFUSED" then os.remove(p) end
  end
  local s, serr, scode = ctl.listen(p)
  if not s then return nil, serr, scode end
  server, path = s, p
  state.socket = p
  return p
end

function M.close()
  if server then server:close() end
  server, path = nil, nil
end

function M.path() return path end

-- Ask the console socket at path one chunk; its answer, or nil after timeout.
function M.ask(p, chunk, timeout)
  local c = require("ntt.core.ctl").connect(p)
  if not c then return nil end
  c:send("1 " .. M.escape(chunk) .. "\n")
  local buf, deadline = "", util.monotonic() + (timeout or 1.5)
  while not buf:find("\0", 1, true) and util.monotonic() < deadline do
    local d = c:recv(0.1)
    if not d then break end
    buf = buf .. d
  end
  c:close()
  return buf:match("^1\n(.*)%z$")
end

-- One chunk, evaluated in the client's environment; the reply's text.
local function evaluate(env, chunk)
  local out = {}
  env.print = function(...)
    local t = {}
    for i = 1, select("#", ...) do t[i] = tostring((select(i, ...))) end
    out[#out + 1] = table.concat(t, "\t") .. "\n"
  end
  local expr = chunk:sub(1, 1) == "=" and chunk:sub(2) or chunk
  local f, err = load("return " .. expr .. ";", "=console", "t", env)
  if not f then f, err = load(chunk, "=console", "t", env) end
  if not f then return "error: " .. tostring(err) end
  local deadline = util.monotonic() + LIMIT
  debug.sethook(function()
    if util.monotonic() > deadline then
      error(("stopped after %gs: a console statement may not hold up the run"):format(LIMIT), 2)
    end
  end, "", 1000)
  local res = table.pack(pcall(f))
  debug.sethook()
  if not res[1] and util.interrupted() and tostring(res[2]):find("interrupted!", 1, true) then
    error(res[2], 0)   -- a second ^C of the run's, not the console's: it stops the run
  end
  if not res[1] then
    out[#out + 1] = "error: " .. tostring(res[2]) .. "\n"
  else
    local pretty = require("ntt.repl").pretty
    for i = 2, res.n do out[#out + 1] = (type(res[i]) == "string" and res[i] or pretty(res[i])) .. "\n" end
  end
  return table.concat(out)
end

local envs = {}

-- Tasks due every so often while the process services (M.every).
local tasks = {}

-- Calls fn every `seconds` (at the first service after that much time) for
-- as long as the process services -- a copy's waits, live.sleep; returns
-- the function that stops it.  An error in fn is fn's own: it is passed to
-- on_error (if given) and the task goes on.
function M.every(seconds, fn, on_error)
  local t = { every = seconds, due = util.monotonic() + seconds, fn = fn, on_error = on_error }
  tasks[t] = true
  return function() tasks[t] = nil end
end

local function run_tasks()
  local now = util.monotonic()
  for t in pairs(tasks) do
    if now >= t.due then
      t.due = now + t.every
      local ok, err = pcall(t.fn)
      if not ok and t.on_error then t.on_error(err) end
    end
  end
end

function M.service(timeout)
  for _, p in pairs(state.progress) do p:tick() end
  run_tasks()
  if not server then
    if timeout and timeout > 0 then util.sleep(timeout) end
    return
  end
  local got = server:poll(timeout or 0)
  for _, req in ipairs(got) do
    local id, chunk = req.line:match("^(%S+) (.*)$")
    if id then
      local env = envs[req.client]
      if not env then
        env = require("ntt.live.console").env(state)
        envs[req.client] = env
      end
      local text = evaluate(env, M.unescape(chunk))
      server:send(req.client, id .. "\n" .. text .. "\0")
    end
  end
  -- a console that left gives its slot and environment to the next
  if server:clients() == 0 then envs = {} end
end

function M.sleep(seconds)
  local t_end = util.monotonic() + seconds
  repeat
    local left = t_end - util.monotonic()
    M.service(math.max(0, math.min(0.2, left)))
  until util.monotonic() >= t_end or util.interrupted()
end

function M.stage(ctx, name)
  local key = ctx.medium and ctx.medium.hash or ctx.target
  local m = state.media[key]
  if not m then
    m = { target = ctx.target }
    state.media[key] = m
    state.order[#state.order + 1] = key
  end
  m.hash = ctx.medium and ctx.medium.hash or m.hash
  m.human = ctx.medium and ctx.medium.human or m.human
  m.stage, m.since, m.ctx = name, os.time(), ctx
end

function M.copier(handle)
  state.copiers[handle] = true
  if state.paused and handle.pause then handle.pause(true) end
  for key, v in pairs(state.pending_threads or {}) do
    if key == "*" then handle.set_threads(v) end
  end
  return function() state.copiers[handle] = nil end
end

function M.worker(pid, medium, st)
  state.workers[pid] = { pid = pid, medium = medium, state = st, since = os.time() }
end

function M.progress(p)
  state.progress[p] = p
  return function() state.progress[p] = nil end
end

function M.override(key, value, old)
  state.overrides[#state.overrides + 1] = { key = key, value = value, old = old, time = os.date("!%H:%M:%S") }
  if state.log then
    state.log:info("policy_override", { key = key, value = value, old = old, run = state.run_id },
                   ("console: %s = %s for the rest of the run (was %s)"):format(key, tostring(value), tostring(old)))
  end
end

return M
