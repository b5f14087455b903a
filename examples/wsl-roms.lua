-- examples/wsl-roms.lua: copying a ROM library from a Windows drive seen
-- through WSL2's 9p mount (ntt run examples/wsl-roms.lua /mnt/e/Roms).
-- A directory target is not mounted (the mount stage only hands its path on); 9p serialises directory access, so one
-- copy thread and one process, fsync per file, and give up quickly.
local ntt = require "ntt"

return ntt.policy.extend("default", {
  name = "wsl-roms",
  stages = { "identify", "mount", "enumerate", "copy" },   -- mount: nothing to do for a directory
  workers = 1,
  copy = {
    batch = 200,
    durability = "fsync",
    adapt = false,
    threads = function(fs)
      if fs.kind == "9p" then return 1 end
      return fs.network and 2 or 8
    end,
  },
  retry = { checkpoint = 3, max = 5, backoff = { base = 0.5, factor = 2, cap = 4 } },
})
