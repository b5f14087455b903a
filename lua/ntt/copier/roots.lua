-- lua/ntt/copier/roots.lua: the medium's mounts, watched under a copy.
--
--   roots.watch(roots, remount, log, medium [, view_file]) -> w
--     roots: { [fs_index] = mount path }, kept up to date in place;
--     remount: the copy stage's (nil: none)
--   w.remount() -> list | nil, msg, code   remount, then the new mounts are
--                                          the ones watched
--   w.check() -> true | nil, msg, "ESTALE", { fs_index=, root=, was=, now= }
--                                          (before a batch or a retry reads)
--
-- The engine opens a batch's files beneath each root's path.  A mount
-- taken away under the run and another filesystem mounted at the same
-- place -- an operator's mistake, an automounter, or on purpose -- would
-- have its files stored as this medium's, with the same names and sizes
-- and no error anywhere.  So each root's device and inode, seen when the
-- copy starts and after each of its own remounts, must be what a batch is
-- about to read from -- or a mount ntt made of the same image since (a
-- process of the run mounted it again when it was lost).  A root that is
-- not mounted at all is the engine's to report (the file fails, the
-- diagnosis may remount).
local fs = require "ntt.core.fs"

local M = {}

local function id_of(path)
  local st = fs.stat(path)
  return st and { dev = st.dev, ino = st.ino } or nil
end

-- Whether a mount (a fs.mountinfo entry) is one ntt made of this medium:
-- a loop device over its image (or its honest view's file) -- the mount
-- another process of the run made when the last one was lost -- or the
-- Sleuth Kit reader's.
local function ours(mi, medium, view_file)
  local nr = mi.source and mi.source:match("^/dev/loop(%d+)$")
  if nr then
    local f = io.open("/sys/block/loop" .. nr .. "/loop/backing_file")
    local backing = f and f:read("l")
    if f then f:close() end
    return backing ~= nil and (backing == medium.image_path or backing == view_file)
  end
  return mi.fstype == "fuse.ntt-tsk"
end

function M.watch(roots, remount, log, medium, view_file)
  local seen = {}
  local function note()
    for fs_index, path in pairs(roots) do seen[fs_index] = id_of(path) end
  end
  note()
  local w = {}
  if remount then
    function w.remount()
      local list, err, code = remount()
      if not list then return nil, err, code end
      for _, x in ipairs(list) do roots[x.fs_index] = x.root end
      note()
      return list
    end
  end
  function w.check()
    local targets
    for fs_index, path in pairs(roots) do
      local was, now = seen[fs_index], id_of(path)
      if was and now and (was.dev ~= now.dev or was.ino ~= now.ino) then
        -- (a mount taken away shows the bare directory under it: the
        -- engine's to find, the diagnosis's to remount; only a mount that
        -- is there, and not ntt's of this medium, is a swap)
        if not targets then
          targets = {}
          for _, mi in ipairs(fs.mountinfo() or {}) do targets[mi.target] = mi end   -- (the last one shows)
        end
        local mi = targets[path]
        if mi and ours(mi, medium, view_file) then
          seen[fs_index] = now   -- mounted again by another process of the run
        elseif mi then
          local f = { fs_index = fs_index, root = path, was = was, now = now }
          log:info("root_changed", { medium = medium.hash, fs_index = fs_index, root = path, source = mi.source,
                                     was = ("%d:%d"):format(was.dev, was.ino), now = ("%d:%d"):format(now.dev, now.ino) })
          return nil, ("p%d at %s is not the medium's filesystem any more (%s, device %d, was %d): something was "
                       .. "mounted over it; the copy stopped before reading from it")
                        :format(fs_index, path, tostring(mi.source), now.dev, was.dev), "ESTALE", f
        end
      else
        -- (a root not there at all, or first seen now, is taken as it is)
        seen[fs_index] = seen[fs_index] or now
      end
    end
    return true
  end
  return w
end

return M
