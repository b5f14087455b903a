-- lua/ntt/stage/image.lua: image a block device with GNU ddrescue, in the
-- policy's phases, before anything else reads it (docs/imaging.md).
--
-- A target that is not a block device passes through untouched (an image
-- file goes on to identify).  A device: its facts (size, logical sector,
-- model, serial, rotational, removable; a SMART summary where smartctl
-- exists) are recorded on a medium of kind "device" named by its sampled
-- hash, then ddrescue runs the phases of policy image.phases (each with
-- its time budget, its stall watchdog, skipped when the map shows nothing
-- left for it) writing <images>/<hash>.img and .map, the map backed up to
-- .map.bak before each phase.  An interrupted imaging resumes from the map
-- at the phase it stopped in; a finished one is not repeated -- unless a
-- rescue more is asked for (policy image.more, or `ntt image --more H` /
-- `ntt run --more H`), which runs image.more_phases over the same image and
-- map.  The later stages then run on the image: ctx.target becomes the
-- image file, and identify links the image medium into the device's
-- lineage (ctx.imaging).
local fs = require "ntt.core.fs"
local media = require "ntt.media"
local imaging = require "ntt.imaging"
local smart = require "ntt.smart"

local M = {}

local function images_dir(p)
  return p.dir or require("ntt.config").path("images")
end

-- Was a rescue more asked for this device (by hash, or the hash of an image medium made from it)?
local function more_wanted(ctx, p, hash, row)
  if p.more then return true end
  local want = ctx.more_media
  if not want then return false end
  return want[hash] or (row and row.image_medium and want[row.image_medium]) or false
end

function M.run(ctx)
  local st = fs.stat(ctx.target)
  if not st or st.type ~= "block" then return true end
  local p = ctx.policy.image or {}
  local db, log = ctx.db, ctx.log
  local dev, err, code = media.identify(ctx.target)
  if not dev then return nil, err, code end
  local facts = { size = dev.size, logical_sector = dev.logical_sector, model = dev.model, serial = dev.serial,
                  rotational = dev.rotational, removable = dev.removable, path = dev.image_path }
  local sm = p.smart ~= false and smart.summary(dev.image_path) or nil
  local r, state
  r, err, code, state = db:exec([[
    INSERT INTO medium (medium_hash, medium_human, kind, image_path, size, sampled_hash, identified_at, problems)
    VALUES ($1, $2, 'device', $3, $4, $1, now(), '{}'::jsonb)
    ON CONFLICT (medium_hash) DO UPDATE SET image_path = EXCLUDED.image_path, size = EXCLUDED.size]],
    dev.hash, dev.human, dev.image_path, dev.size)
  if not r then return nil, err, code, state end
  log:info("device", { medium = dev.hash, facts = facts, smart = sm },
           ("%s: device %s, %d bytes, %d-byte sectors%s"):format(dev.image_path, dev.hash, dev.size,
             dev.logical_sector or 512, sm and sm.available and (", SMART " .. (sm.passed == false and "FAILING"
             or sm.passed and "passed" or "unknown")) or ""))
  if sm and sm.available and sm.passed == false then
    require("ntt.problems").note(db, dev.hash, "smart_failing", sm)
    ctx.problems[#ctx.problems + 1] = { kind = "smart_failing" }
  end
  local dir = images_dir(p)
  local ok, merr, mcode = fs.mkdirp(dir)
  if not ok then return nil, merr, mcode end
  local paths = imaging.paths(dir, dev.hash)
  local prev, gerr, gcode, gstate = imaging.get(db, dev.hash)
  if prev == nil then return nil, gerr, gcode, gstate end
  -- the image a device was first imaged to stays its image (resume, rescue
  -- more), even when the policy's image.dir has changed since
  if prev and prev.image_path ~= paths.image then
    paths = imaging.paths(prev.image_path:match("^(.*)/[^/]*$") or ".", dev.hash)
  end
  -- someone else (a ddrescue started by hand) writing this image: not ours to touch
  for _, f in ipairs { paths.image, paths.map } do
    local ws = fs.stat(f) and require("ntt.core.openers").writers(f) or {}
    if ws[1] then
      require("ntt.problems").set(db, dev.hash, "image_being_written",
                                  { path = f, why = "writer", pid = ws[1].pid, comm = ws[1].comm })
      ctx.problems[#ctx.problems + 1] = { kind = "image_being_written", path = f }
      return nil, ("%s: still being written by %s (pid %d): not imaged again while it runs")
                  :format(f, ws[1].comm, ws[1].pid), "EBUSY"
    end
  end
  local more = prev and prev.state == "finished" and more_wanted(ctx, p, dev.hash, prev)
  local row
  row, err, code, state = imaging.begin(db, dev, paths, facts, sm, more)
  if not row then return nil, err, code, state end
  local pass = row.pass
  if row.state == "imaging" then
    local phases = pass == 1 and (p.phases or {}) or (p.more_phases or p.phases or {})
    log:info("image_start", { medium = dev.hash, pass = pass, image = paths.image, map = paths.map,
                              resume = fs.stat(paths.map) ~= nil, phases = #phases },
             ("%s: imaging%s to %s%s"):format(dev.image_path, pass > 1 and (" again (pass " .. pass .. ")") or "",
               paths.image, fs.stat(paths.map) and " (resuming from its map)" or ""))
    local sum
    sum, err, code, state = imaging.run_phases(ctx, { dev = dev, paths = paths, pass = pass, phases = phases,
                                                      policy = p })
    if not sum then return nil, err, code, state end
    if not fs.stat(paths.image) then
      return nil, ("%s: no image was written (every phase skipped?)"):format(paths.image), "ENOENT"
    end
    r, err, code, state = imaging.finish(db, dev.hash, sum.rescued)
    if not r then return nil, err, code, state end
    log:info("imaged", { medium = dev.hash, pass = pass, rescued = sum.rescued, left = sum.left, pct = sum.pct,
                         phases_run = sum.ran, phases_skipped = sum.skipped, stalls = sum.stalls },
             ("%s: imaged, %.2f%% rescued (%d bytes left)"):format(dev.image_path, sum.pct, sum.left))
  else
    log:info("image_done_before", { medium = dev.hash, pass = pass, image = paths.image },
             ("%s: imaged before (%s): not repeated"):format(dev.image_path, paths.image))
  end
  -- the rest of the workflow reads the image, never the device
  ctx.device = dev
  ctx.target = paths.image
  ctx.imaging = { device = dev.hash, pass = pass, map = paths.map,
                  link = { old = row.image_medium or dev.hash, basis = row.image_medium and "more" or "imaged" } }
  -- the image medium identify finds is this pass's; an earlier pass's medium is linked to, not relinked
  return true
end

return M
