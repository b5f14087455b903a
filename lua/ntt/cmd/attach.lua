-- lua/ntt/cmd/attach.lua: `ntt attach [RUN] [-e CHUNK]`.
local usage = [[
usage: ntt attach [RUN] [-e CHUNK]

A Lua prompt inside a running `ntt run` (its control socket,
<data root>/run/ctl-<run id>.sock): each statement runs in the run's own
process, between two steps of its work, with its live state.  Without RUN,
the only run going on (with several, they are listed).  help() lists the
helpers: what each copy thread reads now and for how long (reading()),
media and stages, workers, claims, recent errors and kernel lines, rule
hits; skip(path or ino, reason), retry(h, path), remount(h), pause(),
resume(), threads(n), set(key, value).  Ctrl-C interrupts only the
statement (the run goes on); Ctrl-D detaches.  -e runs one chunk, prints
its answer and detaches.

Exit status: 0 detached, 1 no such run (or it ended), 64 usage.]]

local function connect(run)
  local live = require "ntt.live"
  local ctl = require "ntt.core.ctl"
  local socks = {}
  for _, s in ipairs(live.sockets()) do
    if s.live and (not run or s.run_id == tostring(run) or s.path == run) then socks[#socks + 1] = s end
  end
  if #socks == 0 then
    return nil, run and ("ntt attach: no run %s is running"):format(run) or "ntt attach: no run is running", "ENOENT"
  end
  if #socks > 1 then
    local lines = { "ntt attach: several runs are going on; name one:" }
    for _, s in ipairs(socks) do lines[#lines + 1] = ("  ntt attach %s"):format(s.run_id) end
    return nil, table.concat(lines, "\n"), "EEXIST"
  end
  local conn, err, code = ctl.connect(socks[1].path)
  if not conn then return nil, "ntt attach: " .. tostring(err), code end
  return conn, socks[1]
end

-- eval(text) -> the run's answer; a reply to an interrupted statement is dropped.
local function evaluator(conn)
  local live = require "ntt.live"
  local seq, pending = 0, ""
  return function(text)
    seq = seq + 1
    local id = tostring(seq)
    local ok, err = conn:send(id .. " " .. live.escape(text) .. "\n")
    if not ok then error("the run has ended: " .. tostring(err), 0) end
    while true do
      local z = pending:find("\0", 1, true)
      if z then
        local reply = pending:sub(1, z - 1)
        pending = pending:sub(z + 1)
        local rid, body = reply:match("^([^\n]*)\n(.*)$")
        if rid == id then return body end
      else
        local data = conn:recv(0.2)
        if not data then error("the run has ended (its socket closed)", 0) end
        pending = pending .. data
      end
    end
  end
end

return {
  summary = "a prompt inside a running run (live state, skip, pause, threads)",
  usage = usage,
  main = function(args)
    local run, chunk
    local i = 1
    while i <= #args do
      local a = args[i]
      if a == "-e" then
        chunk = args[i + 1]
        if not chunk then io.stderr:write(usage, "\n"); return 64 end
        i = i + 1
      elseif a:match("^%-") then
        io.stderr:write(usage, "\n")
        return 64
      elseif not run then run = a
      else io.stderr:write(usage, "\n"); return 64 end
      i = i + 1
    end
    local conn, s = connect(run)
    if not conn then
      io.stderr:write(s, "\n")
      return 1
    end
    local eval = evaluator(conn)
    if chunk then
      local ok, out = pcall(eval, chunk)
      if not ok then io.stderr:write("ntt attach: ", tostring(out), "\n"); return 1 end
      io.stdout:write(out)
      conn:close()
      return 0
    end
    io.stdout:write(("attached to run %s (%s); help() lists the helpers, Ctrl-D detaches\n"):format(s.run_id, s.path))
    require("ntt.core.repl").run(("run %s> "):format(s.run_id), eval)
    conn:close()
    return 0
  end,
}
