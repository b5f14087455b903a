-- lua/ntt/copier/temps.lua: the store's temps that killed processes of
-- this host left behind.
--
--   temps.sweep(store_root) -> { files = n, bytes = n } | nil, msg, code
--
-- A blob is written as <store>/tmp/<host>.<pid>.<n>.<random>.tmp and only
-- renamed into by-hash once complete (src/copy/store.c); a process killed
-- mid-batch leaves its temps there -- up to two batches of them, each as
-- large as its file -- and nothing else would ever remove them.  The copier
-- sweeps them before it claims: a temp whose host is this one and whose
-- process is gone.  A live process's temps (another run copying into the
-- same store, a batch waiting for its syncfs) and another host's (a store
-- shared by several) are never touched, whatever their age.
local fs = require "ntt.core.fs"
local util = require "ntt.core.util"
local liveness = require "ntt.liveness"

local M = {}

-- The host as the store writes it into a temp's name.
local function name_host()
  local h = (util.hostname() or "host"):sub(1, 63)
  return (h:gsub("[^%w_%-]", "_"))
end

function M.sweep(store_root)
  local dir = store_root .. "/tmp"
  local names, err, code = fs.readdir(dir)
  if not names then
    if code == "ENOENT" then return { files = 0, bytes = 0 } end
    return nil, err, code
  end
  local me, host = util.pid(), name_host()
  local out = { files = 0, bytes = 0 }
  for _, name in ipairs(names) do
    local h, pid = name:match("^([%w_%-]+)%.(%d+)%.%d+%.%x+%.tmp$")
    pid = tonumber(pid)
    if h == host and pid and pid ~= me and liveness.dead { host = util.hostname() or "host", pid = pid } then
      local st = fs.stat(dir .. "/" .. name, true)
      if st and st.type == "file" and os.remove(dir .. "/" .. name) then
        out.files, out.bytes = out.files + 1, out.bytes + (st.size or 0)
      end
    end
  end
  return out
end

return M
