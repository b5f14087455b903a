-- lua/ntt/writing.lua: is an image still being written?  (seed 004, Phase 0:
-- never process an image that ddrescue is still writing.)
--
--   writing.check(image, map [, {map_age=seconds, now=}]) -> false | busy
--       busy = { path=, why="writer"|"map_age", pid=, comm=, age= }
--       * a process holds the image or its map open for writing
--         (ntt.core.openers: /proc/*/fd), whoever started it; or
--       * the map was written less than map_age seconds ago and does not say
--         ddrescue finished (its status line is not "+"): a ddrescue on
--         another machine, over a network share, shows only that way (a map
--         that does not parse is not taken as a sign: inspect reports it).  ddrescue
--         saves its map every 30 s to 5 min, so the policy age is minutes.
--       map may be nil (no map beside the image: only the writers are looked for).
local openers = require "ntt.core.openers"
local fs = require "ntt.core.fs"
local util = require "ntt.core.util"

local M = {}

function M.check(image, map, opts)
  opts = opts or {}
  for _, path in ipairs { image, map } do
    if path and fs.stat(path) then
      local ws = openers.writers(path)
      if ws and ws[1] then
        return { path = path, why = "writer", pid = ws[1].pid, comm = ws[1].comm }
      end
    end
  end
  local age = opts.map_age or 0
  if map and age > 0 then
    local st = fs.stat(map)
    if st and st.mtime_ns then
      local now = opts.now or util.now()
      local old = now - st.mtime_ns / 1e9
      if old < age then
        -- a map that does not parse says nothing of ddrescue (inspect reports it)
        local m = require("ntt.mapfile").read(map)
        if m and m.current_status ~= "+" then
          return { path = map, why = "map_age", age = old, status = m and m.current_status or nil }
        end
      end
    end
  end
  return false
end

-- The message for people.
function M.describe(busy)
  if busy.why == "writer" then
    return ("%s is still being written by %s (pid %d): not read until it is closed")
           :format(busy.path, busy.comm ~= "" and busy.comm or "a process", busy.pid)
  end
  return ("%s was written %.0f s ago and does not say ddrescue finished (status %s): not read while it may still change")
         :format(busy.path, busy.age, tostring(busy.status))
end

return M
