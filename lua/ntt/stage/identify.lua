-- lua/ntt/stage/identify.lua: give the target its medium hash and register it.
--
-- Re-running is harmless: the first identification time, the human name,
-- the image path and the problems of a medium are kept.  An image file's
-- content hash is remembered (ntt.hashcache), so a rerun does not read an
-- unchanged image again.  Every place a medium's bytes are seen is a row of
-- medium_location: a byte-identical copy at another path is the same medium
-- seen a second time, and nothing of the first is changed (its image_path
-- moves only when the recorded file is gone).  An image sharing its sampled
-- hash with another medium but not its content is a medium of its own; the
-- other is noted on it as "same_sampled_hash_as" (a lineage hint).  It is a
-- new rescue of that medium when its map rescued it further, or when the
-- operator says so (ctx.rescue_targets[target], from `ntt run --rescue-of`):
-- linked (medium.rescue_of), logged, noted on both (ntt.lineage).
-- An image still being written (ntt.writing: a process holds it or its map
-- open for writing, or a fresh map that does not say ddrescue finished,
-- policy identify.map_age) is refused before a byte of it is read: EBUSY,
-- logged, and noted on the media recorded at that path.  The image the
-- image stage made (ctx.imaging) is named by its content, not by its name
-- (the device's hash), and linked into the device's lineage.
local fs = require "ntt.core.fs"
local media = require "ntt.media"
local hashcache = require "ntt.hashcache"
local problems = require "ntt.problems"
local lineage = require "ntt.lineage"
local writing = require "ntt.writing"

local M = {}

-- The recorded row of the medium, or false.
local function known(db, hash)
  local r, err, code, state = db:exec([[
    SELECT medium_human, kind, image_path, map_path, rescue_of FROM medium WHERE medium_hash = $1]], hash)
  if not r then return nil, err, code, state end
  return r[1] or false
end

-- Where the medium's bytes were seen this time.
local function locate(db, ident)
  local st = fs.stat(ident.image_path)
  return db:exec([[
    INSERT INTO medium_location (medium_hash, path, size, mtime)
    VALUES ($1, $2, $3, to_timestamp($4::double precision / 1e9))
    ON CONFLICT (medium_hash, path) DO UPDATE
       SET size = EXCLUDED.size, mtime = EXCLUDED.mtime, last_seen = now()]],
    ident.hash, ident.image_path, ident.size, st and st.mtime_ns or nil)
end

-- Other media with the same sampled hash but other content: a hint only.
local function sampled_twins(ctx, ident, linked)
  if ident.kind ~= "image" or not ident.sampled_hash then return true end
  local r, err, code, state = ctx.db:exec([[
    SELECT medium_hash, image_path FROM medium
     WHERE sampled_hash = $1 AND medium_hash <> $2 AND kind <> 'directory'
     ORDER BY added_at, medium_hash]], ident.sampled_hash, ident.hash)
  if not r then return nil, err, code, state end
  if not r[1] then return true end
  -- the older rescues it is linked to are not "of its own"
  local older = {}
  if linked then
    local lin, lerr, lcode, lstate = lineage.of(ctx.db, ident.hash)
    if not lin then return nil, lerr, lcode, lstate end
    for _, c in ipairs(lin.chain) do older[c.medium_hash] = true end
  end
  -- the device an image was made from shares it by nature: no hint needed
  local first
  for _, row in ipairs(r) do
    if not (ctx.imaging and older[row.medium_hash]) then first = first or row end
  end
  if not first then return true end
  local ok, perr, pcode, pstate = problems.note(ctx.db, ident.hash, "same_sampled_hash_as", first.medium_hash)
  if not ok then return nil, perr, pcode, pstate end
  for _, row in ipairs(r) do
    if not older[row.medium_hash] then
      ctx.log:warn("same_sampled_hash", { medium = ident.hash, other = row.medium_hash,
                                          path = ident.image_path, other_path = row.image_path },
                   ("%s: same first and last MiB and size as medium %s (%s), other content: a medium of its own")
                   :format(ident.image_path, row.medium_hash, tostring(row.image_path)))
    end
  end
  return true
end

-- A new rescue of an older medium: the operator's word, else the rule (once).
-- -> the older medium's hash, or false
local function rescue(ctx, ident, row)
  if ident.kind == "directory" then return false end
  local given = ctx.rescue_targets and ctx.rescue_targets[ctx.target]
  local gbasis = "operator"
  local link = ctx.imaging and ctx.imaging.link
  if link then
    -- the same image as the pass before (nothing new rescued): no link to itself
    if link.old == ident.hash then return row and row.rescue_of or false end
    given, gbasis = link.old, link.basis
  end
  local old, basis
  if given then
    if row and row.rescue_of == given then return given end
    old, basis = given, gbasis
  elseif row and row.rescue_of then
    return row.rescue_of
  else
    local found, err, code, state = lineage.decide(ctx.db, ident)
    if found == nil then return nil, err, code, state end
    if not found then return false end
    old, basis = found.medium_hash, "map"
  end
  local ok, err, code, state = lineage.link(ctx.db, ident.hash, old, basis)
  if not ok then return nil, err, code, state end
  local why = { map = "its map rescued the same medium further", operator = "said by the operator",
                imaged = "imaged from that device", more = "a further imaging pass of the same device" }
  ctx.log:info("rescue_of", { medium = ident.hash, rescue_of = old, basis = basis, path = ident.image_path,
                              was = row and row.rescue_of or nil },
               ("%s: a new rescue of medium %s (%s), linked as its later rescue %s")
               :format(ident.image_path, old, why[basis], ident.hash))
  return old
end

-- Refuses an image still being written: EBUSY, recorded.
local function still_written(ctx)
  local st = fs.stat(ctx.target)
  if not st or st.type ~= "file" then return true end
  local map = media.find_map(ctx.target)
  -- the image stage's own ddrescue has exited: only another writer counts
  local age = not ctx.imaging and (ctx.policy.identify or {}).map_age or 0
  local busy = writing.check(ctx.target, map, { map_age = age })
  if not busy then return true end
  local msg = writing.describe(busy)
  local path = fs.realpath(ctx.target) or ctx.target
  local known_at = ctx.db and ctx.db:exec([[
    SELECT medium_hash FROM medium WHERE image_path = $1
    UNION SELECT medium_hash FROM medium_location WHERE path = $1]], path) or {}
  local detail = { path = busy.path, why = busy.why, pid = busy.pid, comm = busy.comm, age = busy.age }
  for _, m in ipairs(known_at) do problems.set(ctx.db, m.medium_hash, "image_being_written", detail) end
  ctx.problems[#ctx.problems + 1] = { kind = "image_being_written", path = busy.path }
  ctx.log:error("image_being_written", { target = ctx.target, path = busy.path, why = busy.why, pid = busy.pid,
                                         comm = busy.comm, age = busy.age, media = #known_at }, msg)
  return nil, msg, "EBUSY"
end

-- Is the target a hash-named image of a device ntt imaged (named by its content, then)?
local function device_image(ctx)
  if ctx.imaging then return true end
  local stem = ctx.target:match("([^/]*)$"):match("^(.+)%.[^.]*$")
  if not (stem and media.is_hash(stem) and ctx.db) then return false end
  local r = ctx.db:exec("SELECT 1 FROM imaging WHERE device_hash = $1 AND image_path = $2",
                        stem, fs.realpath(ctx.target) or ctx.target)
  return r and r[1] ~= nil or false
end

function M.run(ctx)
  local db = ctx.db
  local tst = fs.stat(ctx.target)
  if tst and tst.type == "block" then
    -- a device is read once, by ddrescue; everything else reads its image
    return nil, ("%s: a block device is imaged first: run a policy whose stages begin with \"image\" (policies/device.lua)")
                :format(ctx.target), "EINVAL"
  end
  local ok, berr, bcode = still_written(ctx)
  if not ok then return nil, berr, bcode end
  local ident, err, code = media.identify(ctx.target, { cache = db and hashcache.new(db) or nil,
                                                        content = device_image(ctx) or nil })
  if not ident then return nil, err, code end
  if ctx.imaging and ctx.device then ident.human = ctx.device.human end
  ctx.medium = ident
  local row, state
  row, err, code, state = known(db, ident.hash)
  if row == nil then return nil, err, code, state end
  -- A second location: the recorded file is elsewhere and still there.
  local elsewhere = row and ident.kind ~= "directory" and row.image_path ~= nil
                    and row.image_path ~= ident.image_path and fs.stat(row.image_path) ~= nil
  local r
  r, err, code, state = db:exec([[
    INSERT INTO medium (medium_hash, medium_human, kind, image_path, map_path, size, sampled_hash,
                        identified_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, now())
    ON CONFLICT (medium_hash) DO UPDATE
       SET medium_human = coalesce(medium.medium_human, EXCLUDED.medium_human),
           image_path = CASE WHEN $8 THEN medium.image_path ELSE EXCLUDED.image_path END,
           map_path = CASE WHEN $8 THEN medium.map_path ELSE EXCLUDED.map_path END,
           size = EXCLUDED.size,
           sampled_hash = coalesce(medium.sampled_hash, EXCLUDED.sampled_hash),
           identified_at = coalesce(medium.identified_at, EXCLUDED.identified_at)]],
    ident.hash, ident.human, ident.kind, ident.image_path, ident.map_path, ident.size,
    ident.sampled_hash, elsewhere and true or false)
  if not r then return nil, err, code, state end
  if ident.kind ~= "directory" then
    r, err, code, state = locate(db, ident)
    if not r then return nil, err, code, state end
  end
  if elsewhere then
    -- The same bytes: the recorded map describes them when none lies beside this copy.
    ident.human, ident.map_path = row.medium_human or ident.human, ident.map_path or row.map_path
    ctx.log:info("medium_location", { medium = ident.hash, path = ident.image_path,
                                      first_path = row.image_path },
                 ("%s: byte-identical to %s, the same medium %s seen at a second location")
                 :format(ident.image_path, row.image_path, ident.hash))
  end
  local old
  old, err, code, state = rescue(ctx, ident, row)
  if old == nil then return nil, err, code, state end
  ident.rescue_of = old or nil
  r, err, code, state = sampled_twins(ctx, ident, old)
  if not r then return nil, err, code, state end
  if ctx.imaging then
    r, err, code, state = require("ntt.imaging").identified(db, ctx.imaging.device, ident.hash)
    if not r then return nil, err, code, state end
  end
  ctx.log:info("identified", { medium = ident.hash, kind = ident.kind, human = ident.human,
                               size = ident.size, map = ident.map_path, sampled = ident.sampled_hash,
                               hashed = ident.hashed or false, cached = ident.cached or false })
  return true
end

return M
