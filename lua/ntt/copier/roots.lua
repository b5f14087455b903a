-- lua/ntt/copier/roots.lua: the medium's mounts, watched under a copy.
--
--   roots.watch(roots, remount, log, medium) -> w
--     roots: { [fs_index] = mount path }, kept up to date in place;
--     remount: the copy stage's (nil: none)
--   w.remount() -> list | nil, msg, code   remount, then the new mounts are
--                                          the ones watched
--   w:check() -> true | nil, msg, "ESTALE", { fs_index=, root=, was=, now= }
--
-- The engine opens a batch's files beneath each root's path.  A mount
-- taken away under the run and another filesystem mounted at the same
-- place -- an operator's mistake, an automounter, or on purpose -- would
-- have its files stored as this medium's, with the same names and sizes
-- and no error anywhere.  So each root's device and inode, seen when the
-- copy starts and after each of its own remounts, must be what a batch is
-- about to read from; a root that is not there at all is the engine's to
-- report (the file fails, the diagnosis may remount).
local fs = require "ntt.core.fs"

local M = {}

local function id_of(path)
  local st = fs.stat(path)
  return st and { dev = st.dev, ino = st.ino } or nil
end

function M.watch(roots, remount, log, medium)
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
    for fs_index, path in pairs(roots) do
      local was, now = seen[fs_index], id_of(path)
      if was and now and (was.dev ~= now.dev or was.ino ~= now.ino) then
        local f = { fs_index = fs_index, root = path, was = was, now = now }
        log:info("root_changed", { medium = medium.hash, fs_index = fs_index, root = path,
                                    was = ("%d:%d"):format(was.dev, was.ino), now = ("%d:%d"):format(now.dev, now.ino) })
        return nil, ("p%d at %s is not the medium's filesystem any more (device %d, was %d): something was "
                     .. "mounted over it; the copy stopped before reading from it"):format(fs_index, path, now.dev, was.dev),
               "ESTALE", f
      end
      -- (a root not there at all, or first seen now, is taken as it is)
      seen[fs_index] = seen[fs_index] or now
    end
    return true
  end
  return w
end

return M
