-- lua/ntt/stage/unmount.lua: unmount the medium and detach its loop devices.
local mount = require "ntt.mount"

local M = {}

function M.run(ctx)
  local m = ctx.medium
  if not m or m.kind == "directory" then return true end
  local res, err, code = mount.unmount(m.hash, m.image_path)
  if not res then return nil, err, code end
  ctx.roots = nil
  ctx.log:info("unmounted", { medium = m.hash, remaining_loops = res.remaining_loops })
  return true
end

return M
