-- spec/support/term.lua: a real terminal for the specs that drive ntt
-- interactively, through tmux on a server of the spec's own.
--
--   term.have()                   -> true, or nil and "tmux is not installed"
--   term.new(o)                   -> t: o.socket (tmux -L name), o.target (the
--                                    session the screen is read from), o.history
--                                    (read 200 lines of scrollback, lines joined),
--                                    o.wait (seconds wait_for waits by default)
--   t.tmux(...)                   -> the result of `tmux -L socket ...` (raises
--                                    when tmux cannot be run)
--   t.start(cols, rows, argv...)     a fresh server, its one session (the
--                                    target) cols x rows running argv
--   t.send(keys...)               -> `tmux send-keys` to the target
--   t.screen()                    -> the text of the target's pane
--   t.wait_for(pattern [, seconds]) -> the screen once it matches pattern;
--                                    raises with the screen after seconds
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"

local M = {}

function M.have()
  local r = proc.run { argv = { "tmux", "-V" } }
  if r and r.code == 0 then return true end
  return nil, "tmux is not installed"
end

function M.new(o)
  local t = {}
  function t.tmux(...)
    return assert(proc.run { argv = { "tmux", "-L", o.socket, ... }, timeout = 20 })
  end

  function t.start(cols, rows, ...)
    t.tmux("kill-server")
    t.tmux("new-session", "-d", "-s", o.target, "-x", tostring(cols), "-y", tostring(rows), ...)
  end

  function t.send(...) return t.tmux("send-keys", "-t", o.target, ...) end

  function t.screen()
    if o.history then return t.tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", o.target).stdout end
    return t.tmux("capture-pane", "-p", "-t", o.target).stdout
  end

  function t.wait_for(pattern, seconds)
    local deadline = util.monotonic() + (seconds or o.wait or 10)
    repeat
      local s = t.screen()
      if s:find(pattern) then return s end
      util.sleep(0.05)
    until util.monotonic() > deadline
    error("timed out waiting for " .. pattern .. " on screen:\n" .. t.screen())
  end
  return t
end

return M
