-- lua/ntt/stage/mount.lua: mount every filesystem of the medium read-only
-- (through ntt-mount-helper) and hand the later stages their roots.
--
-- ctx.roots = { {fs_index=, root=path, fstype=}, ... } for what is mounted.
-- A directory medium needs no mount: its root is the directory itself.
-- Everything not mounted (skipped, failed, truncated) is recorded on the
-- medium and on its filesystem row, never silently dropped.  The run's
-- mount lease (ntt.lease) is taken before the helper is asked: the unmount
-- stage takes the mount down only when no other live run of this host
-- holds one.
local mount = require "ntt.mount"
local problems = require "ntt.problems"
local lease = require "ntt.lease"

local M = {}

function M.run(ctx)
  local m = ctx.medium
  if not m then return nil, "mount needs identify first", "EINVAL" end
  if m.kind == "directory" then
    ctx.roots = { { fs_index = 0, root = m.image_path, fstype = "directory" } }
    return true
  end
  local p = ctx.policy.mount or {}
  local db = ctx.db
  -- the lease first: a run unmounting now finishes before this one mounts
  if db then
    local ok, lerr, lcode, lstate = lease.take(db, m.hash, ctx.run_id)
    if not ok then return nil, lerr, lcode, lstate end
  end
  local res, err, code = mount.mount(m.hash, m.image_path, { map = m.map_path, timeout = p.timeout, reader = p.reader,
                                                             expect = m.stat })
  if not res then
    if db then lease.release(db, m.hash) end
    problems.note(db, m.hash, "mount_failed", { error = err })
    ctx.problems[#ctx.problems + 1] = { kind = "mount_failed", error = err }
    return nil, err, code
  end
  ctx.mount_result = res
  if res.view then
    -- A partial image is read through the view that fails unrescued reads.
    problems.note(db, m.hash, "partial_image", res.view)
  end
  local roots, not_mounted = mount.roots_of(res), {}
  for _, fs in ipairs(res.filesystems or {}) do
    local r, qerr, qcode = db:exec([[
      INSERT INTO filesystem (medium_hash, fs_index, byte_offset, size, fstype, label, uuid, mount_status, mount_options)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
      ON CONFLICT (medium_hash, fs_index) DO UPDATE
         SET mount_status = EXCLUDED.mount_status, mount_options = EXCLUDED.mount_options,
             fstype = coalesce(EXCLUDED.fstype, filesystem.fstype)]],
      m.hash, fs.fs_index, fs.offset or 0, fs.size, fs.fstype, fs.label, fs.uuid,
      fs.status .. (fs.reason and (": " .. fs.reason) or ""), fs.options)
    if not r then return nil, qerr, qcode end
    if not (fs.status == "mounted" and fs.mount) then
      not_mounted[#not_mounted + 1] = { fs_index = fs.fs_index, status = fs.status, reason = fs.reason,
                                        fstype = fs.fstype }
    end
  end
  ctx.roots = roots
  if #not_mounted > 0 then
    problems.set(db, m.hash, "filesystems_not_mounted", not_mounted)
    -- a filesystem that should have been mounted and was not makes the run's exit code say so
    -- (skipped ones are containers, swap, empty partitions: nothing of them to copy)
    local lost = {}
    for _, f in ipairs(not_mounted) do if f.status ~= "skipped" then lost[#lost + 1] = f.fs_index end end
    if #lost > 0 then ctx.problems[#ctx.problems + 1] = { kind = "filesystems_not_mounted", fs_index = lost } end
    for _, f in ipairs(not_mounted) do
      ctx.log:warn("fs_not_mounted", { medium = m.hash, fs_index = f.fs_index, status = f.status, reason = f.reason },
                   ("%s: filesystem p%d %s%s"):format(m.human or m.hash, f.fs_index, f.status,
                                                     f.reason and (" (" .. f.reason .. ")") or ""))
    end
  end
  if #roots == 0 then
    problems.note(db, m.hash, "nothing_mounted", { layout = res.layout })
    ctx.problems[#ctx.problems + 1] = { kind = "nothing_mounted" }
    return true
  end
  db:exec("UPDATE medium SET mounted_at = now() WHERE medium_hash = $1", m.hash)
  ctx.log:info("mounted", { medium = m.hash, filesystems = #roots, layout = res.layout,
                            view = res.view and true or false })
  return true
end

return M
