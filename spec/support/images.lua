-- spec/support/images.lua: real disk images for the specs, built with the
-- system's own tools (mke2fs, mkfs.vfat + mtools, xorriso) into plain files.
-- Partition tables are written here byte by byte (MBR with an optional
-- extended partition), so no partitioning tool is needed.
--
--   images.files(dir, {name = content, ...})            writes a tree
--   images.ext(path, {type="ext4", size_mb=, block=, label=, files=})
--   images.fat(path, {kb=1440, label=, files=})           (names 8.3 upper case)
--   images.iso(path, {label=, files=})
--   images.zip(path, fat_image)                           16384 zero bytes, then the FAT
--   images.mbr(path, {size_mb=, parts={{start_mb=, size_mb=, type=0x83, image=path}, ...},
--                     logical={{start_mb=, size_mb=, type=, image=}}})   extended = last primary
--   images.gpt(path, {size_mb=, parts={{start_mb=, size_mb=, image=path}, ...}, entries=128})
--   images.tiny_parts(dir, n, tag)                        n 1 MiB ext2 filesystems at 1, 2, ... MiB,
--                                                         each with pN.txt: a parts list
--   images.apm_iso(path, {label=, files=})                 ISO9660 + HFS+ with an Apple partition map
--   images.dirty(path)                                    sets needs_recovery on an ext3/4
--   images.mapfile(path, {{pos, size, status}, ...}, current_pos)
--   images.truncate(path, bytes)
--   images.grow_ext(img, bytes)      an unmounted ext image grown to bytes, its
--                                    filesystem with it (e2fsck, resize2fs)
--   images.ext_blocks(img, name)     -> the data blocks of file /name in an ext
--                                       image, in file order, and debugfs's listing
local helper = require "spec.support.helper"

local M = {}
local MiB = 1024 * 1024

local function sh(argv) return helper.sh(argv) end

function M.files(dir, files)
  local made = {}
  for name, content in pairs(files or {}) do
    local sub = name:match("^(.*)/[^/]+$")
    if sub and not made[sub] then
      sh { "mkdir", "-p", dir .. "/" .. sub }
      made[sub] = true
    end
    helper.write(dir .. "/" .. name, content)
  end
end

function M.truncate(path, bytes)
  sh { "truncate", "-s", tostring(bytes), path }
end

function M.grow_ext(img, bytes)
  M.truncate(img, bytes)
  helper.sh({ "e2fsck", "-f", "-y", img }, { may_fail = true })
  helper.sh { "resize2fs", img }
end

function M.ext_blocks(img, name)
  local r = helper.sh { "debugfs", "-R", "blocks /" .. name, img }
  local blocks = {}
  for b in r.stdout:gmatch("%d+") do blocks[#blocks + 1] = tonumber(b) end
  return blocks, r.stdout
end

function M.ext(path, o)
  o = o or {}
  local dir = helper.tmpdir("extsrc")
  M.files(dir, o.files)
  sh { "rm", "-f", path }
  M.truncate(path, (o.size_mb or 8) * MiB)
  local argv = { "mke2fs", "-q", "-F", "-t", o.type or "ext4", "-b", tostring(o.block or 4096), "-d", dir }
  if o.label then argv[#argv + 1] = "-L"; argv[#argv + 1] = o.label end
  argv[#argv + 1] = path
  sh(argv)
  return path
end

function M.fat(path, o)
  o = o or {}
  sh { "rm", "-f", path }
  local argv = { "mkfs.vfat", "-C" }
  if o.label then argv[#argv + 1] = "-n"; argv[#argv + 1] = o.label end
  argv[#argv + 1] = path
  argv[#argv + 1] = tostring(o.kb or 1440)
  sh(argv)
  local dir = helper.tmpdir("fatsrc")
  local names = {}
  for name in pairs(o.files or {}) do names[#names + 1] = name end
  table.sort(names)          -- allocation order = this order
  for _, name in ipairs(names) do
    helper.write(dir .. "/" .. name, o.files[name])
    sh { "mcopy", "-i", path, dir .. "/" .. name, "::/" .. name }
  end
  return path
end

function M.iso(path, o)
  o = o or {}
  local dir = helper.tmpdir("isosrc")
  M.files(dir, o.files)
  sh { "rm", "-f", path }
  sh { "xorriso", "-as", "mkisofs", "-quiet", "-V", o.label or "NTTCD", "-o", path, dir }
  return path
end

function M.zip(path, fat_image)
  helper.write(path, string.rep("\0", 16384) .. helper.read(fat_image))
  return path
end

local function put(f, offset, data)
  f:seek("set", offset)
  f:write(data)
end

local function entry(ptype, start, sectors)
  return string.pack("<BBBBBBBBI4I4", 0, 0xfe, 0xff, 0xff, ptype, 0xfe, 0xff, 0xff, start, sectors)
end

-- An MBR disk of size_mb with the given primaries; `logical` ones go into an
-- extended partition (type 0x05) appended as the next primary, one EBR each.
function M.mbr(path, o)
  sh { "rm", "-f", path }
  M.truncate(path, o.size_mb * MiB)
  local f = assert(io.open(path, "r+b"))
  local slot = 0
  for _, p in ipairs(o.parts) do
    put(f, 446 + 16 * slot, entry(p.type or 0x83, p.start_mb * 2048, p.size_mb * 2048))
    slot = slot + 1
    if p.image then put(f, p.start_mb * MiB, helper.read(p.image)) end
  end
  if o.logical and #o.logical > 0 then
    local first = o.logical[1].start_mb - 1          -- EBR 1 MiB before each logical
    local last = o.logical[#o.logical]
    local ext_start = first * 2048
    put(f, 446 + 16 * slot, entry(0x05, ext_start, (last.start_mb + last.size_mb) * 2048 - ext_start))
    for i, l in ipairs(o.logical) do
      local ebr = (l.start_mb - 1) * 2048
      local e = entry(l.type or 0x83, l.start_mb * 2048 - ebr, l.size_mb * 2048)
      local nxt = o.logical[i + 1]
      local link = nxt and entry(0x05, (nxt.start_mb - 1) * 2048 - ext_start, (nxt.size_mb + 1) * 2048)
                   or string.rep("\0", 16)
      put(f, ebr * 512 + 446, e .. link .. string.rep("\0", 32) .. "\x55\xaa")
      if l.image then put(f, l.start_mb * MiB, helper.read(l.image)) end
    end
  end
  put(f, 440, string.pack("<I4", 0x4e545431))        -- disk signature
  put(f, 510, "\x55\xaa")
  f:close()
  return path
end

local crc_table = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do c = (c & 1) ~= 0 and (0xEDB88320 ~ (c >> 1)) or (c >> 1) end
  crc_table[i] = c
end

local function crc32(s)
  local c = 0xFFFFFFFF
  for i = 1, #s do c = crc_table[(c ~ s:byte(i)) & 0xFF] ~ (c >> 8) end
  return c ~ 0xFFFFFFFF
end
M.crc32 = crc32

-- Linux filesystem data 0FC63DAF-8483-4772-8E79-3D69D8477DE4, on-disk byte order.
local LINUX_FS = "\xAF\x3D\xC6\x0F\x83\x84\x72\x47\x8E\x79\x3D\x69\xD8\x47\x7D\xE4"

-- A GPT disk (protective MBR, primary and backup header and entry array).
function M.gpt(path, o)
  sh { "rm", "-f", path }
  local sectors = o.size_mb * 2048
  M.truncate(path, o.size_mb * MiB)
  local entries, count = {}, o.entries or 128
  for i = 1, count do
    local p = o.parts[i]
    if p then
      local name = ("part" .. i):gsub(".", "%0\0")
      entries[i] = LINUX_FS .. string.pack("<I4I4I4I4", 0x6e747400 + i, 1, 2, 3)
        .. string.pack("<I8I8I8", p.start_mb * 2048, (p.start_mb + p.size_mb) * 2048 - 1, 0)
        .. name .. string.rep("\0", 72 - #name)
    else
      entries[i] = string.rep("\0", 128)
    end
  end
  local array = table.concat(entries)
  local asec = (#array + 511) // 512
  local function header(current, backup, entries_lba)
    local function h(crc)
      return "EFI PART" .. string.pack("<I4I4I4I4I8I8I8I8", 0x00010000, 92, crc, 0, current, backup,
                                       2 + asec, sectors - 2 - asec)
        .. string.pack("<I4I4I4I4", 0x4e545447, 0x50540001, 2, 3)
        .. string.pack("<I8I4I4I4", entries_lba, count, 128, crc32(array))
    end
    return h(crc32(h(0)))
  end
  local f = assert(io.open(path, "r+b"))
  put(f, 446, entry(0xEE, 1, sectors - 1))
  put(f, 510, "\x55\xaa")
  put(f, 512, header(1, sectors - 1, 2))
  put(f, 1024, array)
  put(f, (sectors - 1 - asec) * 512, array)
  put(f, (sectors - 1) * 512, header(sectors - 1, 1, sectors - 1 - asec))
  for _, p in ipairs(o.parts) do
    if p.image then put(f, p.start_mb * MiB, helper.read(p.image)) end
  end
  f:close()
  return path
end

function M.tiny_parts(dir, n, tag)
  local parts = {}
  for i = 1, n do
    local img = M.ext(("%s/tiny%d.fs"):format(dir, i), { type = "ext2", size_mb = 1, block = 1024,
      files = { [("p%d.txt"):format(i)] = ("partition %d %s\n"):format(i, tag or "") } })
    parts[i] = { start_mb = i, size_mb = 1, image = img }
  end
  return parts
end

function M.apm_iso(path, o)
  o = o or {}
  local dir = helper.tmpdir("apmsrc")
  M.files(dir, o.files)
  sh { "rm", "-f", path }
  sh { "xorriso", "-as", "mkisofs", "-quiet", "-V", o.label or "HYBRID", "-hfsplus",
       "-apm-block-size", "2048", "-o", path, dir }
  return path
end

-- Marks the journal as needing recovery, as after a crash.
function M.dirty(path)
  sh { "debugfs", "-w", "-R", "feature needs_recovery", path }
  local r = sh { "dumpe2fs", "-h", path }
  assert(r.stdout:find("needs_recovery"), "needs_recovery not set on " .. path)
end

function M.mapfile(path, blocks, current_pos)
  local lines = { "# Mapfile. Created by GNU ddrescue version 1.27",
                  "# current_pos  current_status  current_pass",
                  ("0x%08X     +               1"):format(current_pos or 0),
                  "#      pos        size  status" }
  for _, b in ipairs(blocks) do
    lines[#lines + 1] = ("0x%08X  0x%08X  %s"):format(b[1], b[2], b[3])
  end
  helper.write(path, table.concat(lines, "\n") .. "\n")
  return path
end

M.MiB = MiB
return M
