-- lua/ntt/liveness.lua: is the process a claim or a mount lease names
-- still running?  Read from /proc, never by spawning anything.
--
--   liveness.boot_id()       -> this boot's id (32 hex digits, "" when unknown)
--   liveness.start_time(pid) -> the process's start (clock ticks since boot),
--                               or nil when no such process runs (a zombie
--                               counts as gone)
--   liveness.me()            -> { host=, pid=, boot=, start= } of this process
--   liveness.dead(who)       -> true when who = { host=, pid= [, boot=] [, start=] }
--                               names this host and a process that is gone:
--                               no such pid, another boot, or the pid taken by
--                               a later process (another start time); false
--                               when it runs, or names another host (whose
--                               processes cannot be seen from here)
local util = require "ntt.core.util"

local M = {}

local function read_line(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local boot
function M.boot_id()
  if not boot then
    boot = ((read_line("/proc/sys/kernel/random/boot_id") or ""):gsub("[^%x]", ""))
  end
  return boot
end

function M.start_time(pid)
  pid = math.tointeger(pid)
  if not pid or pid <= 0 then return nil end
  local s = read_line("/proc/" .. pid .. "/stat")
  -- the command name (field 2) is in parentheses and may hold spaces
  local rest = s and s:match("^.*%)%s+(.*)$")
  if not rest then return nil end
  local i = 0
  for w in rest:gmatch("%S+") do
    i = i + 1
    if i == 1 and (w == "Z" or w == "X") then return nil end   -- exited, not yet reaped
    if i == 20 then return tonumber(w) end                    -- field 22: starttime
  end
  return nil
end

function M.me()
  local pid = util.pid()
  return { host = util.hostname() or "host", pid = pid, boot = M.boot_id(), start = M.start_time(pid) }
end

function M.dead(w)
  if type(w) ~= "table" then error("liveness.dead: expects { host=, pid=, ... }", 2) end
  if w.host ~= (util.hostname() or "host") then return false end
  local b = M.boot_id()
  if w.boot and w.boot ~= "" and b ~= "" and b:sub(1, #w.boot) ~= w.boot then return true end
  local st = M.start_time(w.pid)
  if not st then return true end
  return w.start ~= nil and st ~= w.start
end

return M
