-- lua/ntt/media.lua: identify a medium (its stable hash) and inspect it
-- (mapfile, health, erased, partition table and filesystems).
--
--   media.identify(target [, opts]) -> ident | nil, msg, errname
--     ident = { hash=, kind="image"|"device"|"directory", human=, size=,
--               image_path=, map_path=, model=, serial=, unreadable_bytes= }
--     ident.sampled_hash (images and devices), ident.hashed / ident.cached
--     opts: model=, serial= (override what the device reports), map= (a
--     mapfile path instead of looking beside the image), cache= (an
--     ntt.hashcache; without it an image is read through every time),
--     content=true (hash an image by its content even when its name is a
--     hash: the image of a device, named by the device's hash)
--   media.inspect(ident [, policy]) -> report
--     report = { map=, map_path=, rescued_pct=, health=, holes=,
--                boot_sector_bad=, erased={byte=}|nil, uniform={byte=}|nil,
--                probe=, problems={...} }
--     policy: health={incomplete=90, corrupt=20}, sector_size=512,
--             scan_erased=true, erased_bytes={0xf6, 0x00, ...} (default: any)
--   media.damage(map, extents, fs_offset [, file_size])
--     -> { {file_offset=, length=, status=, image_offset=}, ... }
--   media.refused(map, extents, fs_offset, file_size [, {device_pages=}])
--     -> { {file_offset=, length=, status=}, ... }  what the honest view
--     refuses of the file: its bytes over unrescued areas widened to whole
--     4 KiB pages of the file (the page cache reads and fails a page as a
--     whole); with device_pages (a FUSE driver reading the loop device
--     through its page cache, e.g. fusefat) the unrescued areas are first
--     widened to the 4 KiB pages of the filesystem's device
--   media.view_findings(extents, fs_offset, file_size, image_size [, map] [, {device_pages=}])
--     -> list of "view:beyond_eof" (the file has bytes past the end of the
--     image file) and "view:unrescued" (bytes the map does not mark rescued,
--     inside the image): why the honest view fails the file's reads
--   media.find_map(image) -> path | nil
--
-- The medium hash (docs/media.md, "Identity"):
--   * an image file: BLAKE3 of its whole content, first 32 hex characters
--     (what `b3sum -l 16` prints), unreadable sectors hashed as zeros; an
--     image whose stem is already 16-64 lowercase hex is that hash;
--   * a block device: its sampled hash (below), so that it is known before
--     it is imaged;
--   * a directory: BLAKE3 of "DIR:" .. its canonical path.
-- The sampled hash: BLAKE3 of "SIZE:<bytes>|MODEL:<m>|SERIAL:<s>|" followed
-- by the first and the last MiB (unreadable bytes as zeros), 32 hex
-- characters; image files use MODEL:unknown|SERIAL:unknown.  For an image
-- it is only a lineage hint (ident.sampled_hash): two images that share it
-- may be two rescues of one disk.  An empty or wholly unreadable medium is
-- refused, so that no two of them share a hash.
-- opts.cache (ntt.hashcache) remembers an image's content hash by path,
-- device, inode, size, mtime and ctime: ident.cached is true when it was
-- reused, ident.hashed when the image was read through.  ident.stat is
-- the image's stat taken before it was read (and found the same after):
-- the mount helper attaches that very file or nothing (mount.mount's
-- expect).  An image written or replaced while it is hashed: EAGAIN.
local cmedia = require "ntt.core.media"
local fs = require "ntt.core.fs"
local mapfile = require "ntt.mapfile"

local M = {}

local MIB = 1048576
M.REGION = MIB

local function basename(p)
  p = p:gsub("/+$", "")
  if p == "" then return "/" end
  return p:match("([^/]*)$")
end

local function dirname(p)
  local d = p:match("^(.*)/[^/]*$")
  if d == nil then return "." end
  if d == "" then return "/" end
  return d
end

local function stem(p)
  local b = basename(p)
  return b:match("^(.+)%.[^.]*$") or b
end

local function is_hash(s)
  return #s >= 16 and #s <= 64 and not s:find("[^0-9a-f]")
end
M.is_hash = is_hash

-- Model and serial as they go into the hash: blank runs become "_", only
-- [A-Za-z0-9_-] is kept, at most 64 characters, "unknown" when empty.
local function sanitize(s)
  if type(s) ~= "string" then return "unknown" end
  s = s:gsub("%s+", "_"):gsub("[^%w_%-]", ""):sub(1, 64)
  return s ~= "" and s or "unknown"
end
M.sanitize = sanitize

local function blake3()
  local ok, hash = pcall(require, "ntt.core.hash")
  if not ok then return nil, "ntt.core.hash not available", "ENOSYS" end
  return hash
end

-- The mapfile beside an image: <dir>/<stem>.map, then <image>.map.
function M.find_map(image)
  for _, c in ipairs { dirname(image) .. "/" .. stem(image) .. ".map", image .. ".map" } do
    local st = fs.stat(c)
    if st and st.type == "file" then return c end
  end
  return nil
end

local function identify_directory(target)
  local rp, err, code = fs.realpath(target)
  if not rp then return nil, err, code end
  local hash, herr, hcode = blake3()
  if not hash then return nil, herr, hcode end
  return {
    hash = hash.new():update("DIR:" .. rp):hexdigest(16),
    kind = "directory", human = basename(rp), image_path = rp,
  }
end

function M.identify(target, opts)
  if type(target) ~= "string" then error("media.identify: target must be a path", 2) end
  opts = opts or {}
  local st, err, code = fs.stat(target)
  if not st then return nil, err, code end
  if st.type == "directory" then return identify_directory(target) end
  if st.type ~= "file" and st.type ~= "block" then
    return nil, ("%s: not an image file, block device or directory"):format(target), "EINVAL"
  end
  local path
  path, err, code = fs.realpath(target)
  if not path then return nil, err, code end
  local ident = { kind = st.type == "block" and "device" or "image", image_path = path }
  if ident.kind == "device" then
    local facts
    facts, err, code = cmedia.device_facts(path)
    if not facts then return nil, err, code end
    ident.size = facts.size
    ident.model, ident.serial = sanitize(opts.model or facts.model), sanitize(opts.serial or facts.serial)
    ident.logical_sector, ident.rotational, ident.removable =
      facts.logical_sector, facts.rotational, facts.removable
    ident.human = ident.model ~= "unknown" and (ident.model .. "_" .. ident.serial) or basename(path)
  else
    ident.size = st.size
    ident.model, ident.serial = "unknown", "unknown"
    ident.human = stem(target)
    local map = opts.map or M.find_map(target) or M.find_map(path)
    ident.map_path = map and (fs.realpath(map) or map)
  end
  if ident.size == 0 then
    return nil, ("%s: empty %s (0 bytes): nothing to identify"):format(target, ident.kind), "EINVAL"
  end
  local named = ident.kind == "image" and not opts.content and is_hash(stem(target))
  local pst, cache = nil, ident.kind == "image" and not named and opts.cache or nil
  if ident.kind == "image" then
    pst, err, code = fs.stat(path)
    if not pst then return nil, err, code end
  end
  if cache then
    local hit
    hit, err, code = cache:get(path, pst)
    if hit == nil then return nil, err, code end
    if hit then
      ident.hash, ident.sampled_hash, ident.unreadable_bytes = hit.hash, hit.sampled, hit.unreadable_bytes
      ident.cached, ident.stat = true, pst
      return ident
    end
  end
  local head, tail, size, bad = cmedia.read_regions(path, MIB, MIB)
  if not head then return nil, tail, size end
  if bad >= #head + #tail then
    return nil, ("%s: unreadable (no byte of its first and last MiB could be read): nothing to identify")
                :format(target), "EIO"
  end
  ident.size, ident.unreadable_bytes = size, bad > 0 and bad or nil
  local hash
  hash, err, code = blake3()
  if not hash then return nil, err, code end
  ident.sampled_hash = hash.new()
    :update(("SIZE:%d|MODEL:%s|SERIAL:%s|"):format(size, ident.model, ident.serial))
    :update(head):update(tail):hexdigest(16)
  head, tail = nil, nil
  if ident.kind == "device" then
    ident.hash = ident.sampled_hash
  elseif named then
    ident.hash, ident.stat = stem(target), pst   -- the name is the hash already
  else
    local hex, n, lbad
    if bad == 0 then
      hex, n, lbad = hash.file(path, 16)
      if not hex and lbad ~= "EIO" then return nil, n, lbad end
    end
    if not hex then                      -- some sectors cannot be read: as zeros
      hex, n, lbad = cmedia.hash_lenient(path, 16)
      if not hex then return nil, n, lbad end
      ident.unreadable_bytes = lbad > 0 and lbad or nil
    end
    if n ~= size then
      return nil, ("%s: changed while it was hashed (%d bytes, then %d)"):format(target, size, n), "EAGAIN"
    end
    -- a file written or replaced while it was read has no one content
    local after = fs.stat(path)
    if not (after and after.size == pst.size and after.mtime_ns == pst.mtime_ns
            and after.ctime_ns == pst.ctime_ns and after.ino == pst.ino and after.dev == pst.dev) then
      return nil, ("%s: changed while it was hashed (written or replaced): identify it again once it is still")
                  :format(target), "EAGAIN"
    end
    ident.hash, ident.hashed, ident.stat = hex, true, pst
    if cache then
      local ok, perr, pcode = cache:put(path, pst, ident.hash, ident.sampled_hash, ident.unreadable_bytes)
      if not ok then return nil, perr, pcode end
    end
  end
  return ident
end

-- Rescued ranges of the map below size, as scan_uniform ranges.
local function rescued_ranges(map, size)
  local out = {}
  for _, b in ipairs(map.blocks) do
    if b.pos >= size then break end
    if b.status == "+" then out[#out + 1] = { pos = b.pos, size = math.min(b.size, size - b.pos) } end
  end
  return out
end

function M.inspect(ident, policy)
  if type(ident) ~= "table" or not ident.kind then error("media.inspect: ident expected", 2) end
  policy = policy or {}
  local report = { problems = {} }
  local problems = report.problems
  local function problem(kind, fields)
    local p = fields or {}
    p.kind = kind
    problems[#problems + 1] = p
  end
  if ident.kind == "directory" then return report end
  local path, size = ident.image_path, ident.size or 0
  if ident.unreadable_bytes then problem("unreadable_bytes", { bytes = ident.unreadable_bytes }) end

  -- The map first: it says which bytes are real.
  local map
  if ident.map_path then
    local err
    map, err = mapfile.read(ident.map_path)
    if not map then problem("mapfile_invalid", { path = ident.map_path, message = err }) end
  end
  if map then
    report.map, report.map_path = map, ident.map_path
    local total = math.max(size, map.size)
    report.rescued_pct = map:rescued_pct(total)
    report.health = map:grade(policy.health, total)
    report.holes = map:holes(total)
    report.boot_sector_bad = map:boot_sector_bad(policy.sector_size)
    if map.size > size then
      problem("image_shorter_than_map", { image_size = size, map_size = map.size })
    end
    if report.health ~= "ok" then
      local bad = 0
      for _, h in ipairs(report.holes) do bad = bad + h.size end
      problem("incomplete_rescue", { health = report.health, rescued_pct = report.rescued_pct,
                                     holes = #report.holes, missing_bytes = bad })
    end
    if report.boot_sector_bad then problem("boot_sector_bad") end
  else
    report.health = "unknown"     -- no map: nothing says what was really read
  end

  -- Erased: one byte value over everything read (only the rescued ranges
  -- when there is a map); the scan stops at the first differing byte.
  if policy.scan_erased ~= false and size > 0 then
    local ranges = map and rescued_ranges(map, size) or nil
    if not ranges or #ranges > 0 then
      local scan, err = cmedia.scan_uniform(path, { ranges = ranges })
      if not scan then
        problem("scan_failed", { message = err })
      elseif scan.uniform then
        report.uniform = { byte = scan.byte }
        local listed = policy.erased_bytes == nil
        for _, b in ipairs(policy.erased_bytes or {}) do listed = listed or b == scan.byte end
        if listed then
          report.erased = { byte = scan.byte }
          problem("erased_disk", { byte = scan.byte })
        else
          problem("uniform_medium", { byte = scan.byte })
        end
      end
    end
  end

  local probe, err = cmedia.probe(path)
  if not probe then
    problem("probe_failed", { message = err })
  else
    report.probe = probe
    if probe.ambivalent then problem("probe_ambivalent", { fs_index = 0 }) end
    if probe.gpt_primary then problem("gpt_backup_missing", { image_size = size }) end
    if probe.ebr_loop then problem("partition_chain_loop") end
    for _, p in ipairs(probe.partitions) do
      if p.truncated then
        problem("partition_truncated", { fs_index = p.fs_index, offset = p.offset, size = p.size,
                                         image_size = size })
      end
      if p.ambivalent then problem("probe_ambivalent", { fs_index = p.fs_index }) end
    end
    local found = false
    for _, p in ipairs(probe.partitions) do if p.fstype then found = true end end
    if not found and not probe.fstype and not report.uniform then problem("no_filesystem") end
  end
  return report
end

-- Which bytes of a file are damaged: its FIEMAP extents (physical offsets
-- relative to the filesystem) placed at fs_offset in the image, against the
-- map.  Extents whose location is unknown or not yet allocated are skipped.
function M.damage(map, extents, fs_offset, file_size)
  fs_offset = fs_offset or 0
  local skip = cmedia.EXTENT.unknown | cmedia.EXTENT.delalloc
  local out = {}
  for _, x in ipairs(extents) do
    local len = x.length
    if file_size then len = math.min(len, file_size - x.logical) end
    if len > 0 and (x.flags or 0) & skip == 0 then
      local base = fs_offset + x.physical
      for _, part in ipairs(map:overlap { { pos = base, size = len } }) do
        local fo = x.logical + (part.pos - base)
        local last = out[#out]
        if last and last.file_offset + last.length == fo then
          last.length = last.length + part.size
          if not last.status:find(part.status, 1, true) then last.status = last.status .. part.status end
        else
          out[#out + 1] = { file_offset = fo, length = part.size, status = part.status,
                            image_offset = part.pos }
        end
      end
    end
  end
  return out
end

-- The page the kernel reads and fails as a whole (the page cache's unit).
local PAGE = 4096

-- [a, b) widened to whole pages counted from origin.
local function widen(a, b, origin)
  return origin + (a - origin) // PAGE * PAGE, origin + (b - origin + PAGE - 1) // PAGE * PAGE
end

-- The file's extents as image ranges: { {file_offset=, pos=, size=}, ... }.
local function placed(extents, fs_offset, file_size)
  local skip = cmedia.EXTENT.unknown | cmedia.EXTENT.delalloc
  local out = {}
  for _, x in ipairs(extents) do
    local len = x.length
    if file_size then len = math.min(len, file_size - x.logical) end
    if len > 0 and (x.flags or 0) & skip == 0 then
      out[#out + 1] = { file_offset = x.logical, pos = fs_offset + x.physical, size = len }
    end
  end
  return out
end

function M.refused(map, extents, fs_offset, file_size, opts)
  fs_offset = fs_offset or 0
  local device_pages = opts and opts.device_pages
  local bad = {}                    -- file ranges refused, before page widening
  for _, r in ipairs(placed(extents, fs_offset, file_size)) do
    local probe = { pos = r.pos, size = r.size }
    if device_pages then
      local a, b = widen(r.pos, r.pos + r.size, fs_offset)
      probe = { pos = a, size = b - a }
    end
    for _, h in ipairs(map:overlap { probe }) do
      local a, b = h.pos, h.pos + h.size
      if device_pages then a, b = widen(a, b, fs_offset) end
      a, b = math.max(a, r.pos), math.min(b, r.pos + r.size)
      if a < b then
        bad[#bad + 1] = { file_offset = r.file_offset + (a - r.pos), length = b - a, status = h.status }
      end
    end
  end
  table.sort(bad, function(x, y) return x.file_offset < y.file_offset end)
  local out = {}
  for _, d in ipairs(bad) do
    local a, b = widen(d.file_offset, d.file_offset + d.length, 0)
    if file_size then b = math.min(b, file_size) end
    local last = out[#out]
    if last and a <= last.file_offset + last.length then
      last.length = math.max(last.length, b - last.file_offset)
      if not last.status:find(d.status, 1, true) then last.status = last.status .. d.status end
    else
      out[#out + 1] = { file_offset = a, length = b - a, status = d.status }
    end
  end
  return out
end

function M.view_findings(extents, fs_offset, file_size, image_size, map, opts)
  fs_offset = fs_offset or 0
  local device_pages = opts and opts.device_pages
  local beyond, unrescued = false, false
  for _, r in ipairs(placed(extents, fs_offset, file_size)) do
    local a, b = r.pos, r.pos + r.size
    if device_pages then a, b = widen(a, b, fs_offset) end
    if b > image_size then beyond = true end
    if map and a < image_size and #map:overlap { { pos = a, size = math.min(b, image_size) - a } } > 0 then
      unrescued = true
    end
  end
  local out = {}
  if beyond then out[#out + 1] = "view:beyond_eof" end
  if unrescued then out[#out + 1] = "view:unrescued" end
  return out
end

return M
