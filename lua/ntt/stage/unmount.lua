-- lua/ntt/stage/unmount.lua: give back the run's mount lease (ntt.lease)
-- and, when no other live process of this host holds one, unmount the
-- medium and detach its loop devices.  The mount another run still reads
-- is left, and the log says whose it is.  When the leases cannot be read
-- (the database is gone) the mount is left too: a later run takes it over
-- or takes it down.
local mount = require "ntt.mount"
local lease = require "ntt.lease"

local M = {}

function M.run(ctx)
  local m = ctx.medium
  if not m or m.kind == "directory" then return true end
  local res, err, code
  local function unmount()
    res, err, code = mount.unmount(m.hash, m.image_path)
    if not res then return nil, err, code end
    return true
  end
  if not ctx.db then
    if not unmount() then return nil, err, code end
  else
    local out, lerr, lcode, lstate = lease.release(ctx.db, m.hash, unmount)
    if not out then
      if res == nil and err == nil then
        ctx.log:warn("unmount_deferred", { medium = m.hash, error = lerr },
                     ("%s: left mounted: its leases cannot be read (%s)"):format(m.human or m.hash, tostring(lerr)))
        ctx.unmount = "left"
      end
      return nil, lerr, lcode, lstate
    end
    if not out.unmounted then
      local pids = {}
      for i, h in ipairs(out.holders) do pids[i] = tostring(h.pid) end
      ctx.roots = nil
      ctx.unmount = "left"
      ctx.log:info("unmount_deferred", { medium = m.hash, holders = out.holders },
                   ("%s: left mounted for the live process(es) %s on this host"):format(m.human or m.hash,
                                                                                  table.concat(pids, ", ")))
      return true
    end
  end
  ctx.roots = nil
  ctx.unmount = "unmounted"
  ctx.log:info("unmounted", { medium = m.hash, remaining_loops = res.remaining_loops })
  return true
end

return M
