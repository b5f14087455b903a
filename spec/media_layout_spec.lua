-- spec/media_layout_spec.lua: what is on a medium and where: ntt.core.media's
-- libblkid probe and FIEMAP, ntt.media's damage and inspect, on images built
-- here.  Reading a medium's bytes: media_spec.lua.
local helper = require "spec.support.helper"
local mediaimg = require "spec.support.mediaimg"
local cmedia = require "ntt.core.media"
local media = require "ntt.media"
local mapfile = require "ntt.mapfile"

local MIB = mediaimg.MIB

describe("media.probe", function()
  local dir, ext4
  setup(function()
    dir = helper.tmpdir("probe")
    ext4 = mediaimg.mkext4(dir, "e.img", 8 * MIB, { ["a.txt"] = "hello\n" }, "EXTL")
  end)

  it("finds a whole-disk ext4 as fs_index 0", function()
    local p = assert(cmedia.probe(ext4))
    assert.equal("ext4", p.fstype)
    assert.equal("EXTL", p.label)
    assert.is_nil(p.pttype)
    assert.equal(8 * MIB, p.size)
    assert.equal(1, #p.partitions)
    local fs = p.partitions[1]
    assert.same({ 0, 0, 8 * MIB, "ext4", false, false },
                { fs.fs_index, fs.offset, fs.size, fs.fstype, fs.container, fs.truncated })
    assert.matches("^%x+%-", fs.uuid)
  end)

  it("finds a FAT floppy, and a FAT filesystem at 16384 (Zip disk)", function()
    local fat = dir .. "/f.img"
    helper.sh { "truncate", "-s", "1440K", fat }
    helper.sh { "mkfs.vfat", "-n", "FATL", fat }
    local p = assert(cmedia.probe(fat))
    assert.equal("vfat", p.fstype)
    assert.equal("FATL", p.label)
    assert.is_nil(p.pttype)
    assert.equal(0, p.partitions[1].offset)
    local zip = dir .. "/zip.img"
    helper.sh { "truncate", "-s", "2M", zip }
    mediaimg.place(fat, zip, 16384)
    p = assert(cmedia.probe(zip))
    assert.is_nil(p.fstype)
    assert.is_nil(p.pttype)
    assert.equal(1, #p.partitions)
    assert.equal(0, p.partitions[1].fs_index)
    assert.equal(16384, p.partitions[1].offset)
    assert.equal(1440 * 1024, p.partitions[1].size)   -- what the FAT declares, not the rest of the file
    assert.equal("vfat", p.partitions[1].fstype)
    assert.equal("FATL", p.partitions[1].label)
  end)

  local function mbr(name, size)
    local img = dir .. "/" .. name
    helper.sh { "truncate", "-s", tostring(size), img }
    helper.sh({ "sfdisk", "-q", img }, { input = "label: dos\n2048,16384,83\n18432,16384,83\n" })
    mediaimg.place(ext4, img, 2048 * 512)
    mediaimg.place(ext4, img, 18432 * 512)
    return img
  end

  it("reads an MBR table and probes both partitions in place", function()
    if not mediaimg.have("sfdisk") then return pending("sfdisk not installed (Debian package fdisk)") end
    local p = assert(cmedia.probe(mbr("m.img", 20 * MIB)))
    assert.equal("dos", p.pttype)
    assert.is_nil(p.fstype)
    assert.equal(2, #p.partitions)
    for i, off in ipairs { 2048 * 512, 18432 * 512 } do
      local part = p.partitions[i]
      assert.equal(i, part.fs_index)
      assert.equal(off, part.offset)
      assert.equal(8 * MIB, part.size)
      assert.equal("0x83", part.type)
      assert.equal("ext4", part.fstype)
      assert.is_false(part.truncated)
      assert.is_false(part.container)
    end
  end)

  it("marks a partition that extends beyond the end of a truncated image", function()
    if not mediaimg.have("sfdisk") then return pending("sfdisk not installed (Debian package fdisk)") end
    local img = mbr("t.img", 20 * MIB)
    helper.sh { "truncate", "-s", tostring(12 * MIB), img }
    local p = assert(cmedia.probe(img))
    assert.equal(12 * MIB, p.size)
    assert.is_false(p.partitions[1].truncated)
    assert.is_true(p.partitions[2].truncated)
    assert.equal("ext4", p.partitions[2].fstype)   -- its superblock is still there
    local r = media.inspect { kind = "image", image_path = img, size = 12 * MIB }
    local found
    for _, pr in ipairs(r.problems) do if pr.kind == "partition_truncated" then found = pr end end
    assert.same({ kind = "partition_truncated", fs_index = 2, offset = 18432 * 512, size = 8 * MIB,
                  image_size = 12 * MIB }, found)
  end)

  it("reads a GPT table", function()
    if not mediaimg.have("sfdisk") then return pending("sfdisk not installed (Debian package fdisk)") end
    local img = dir .. "/g.img"
    helper.sh { "truncate", "-s", "20M", img }
    helper.sh({ "sfdisk", "-q", img }, { input = "label: gpt\n2048,16384,L\n" })
    mediaimg.place(ext4, img, 2048 * 512)
    local p = assert(cmedia.probe(img))
    assert.equal("gpt", p.pttype)
    assert.matches("^%x+%-", p.ptuuid)
    assert.equal(1, #p.partitions)
    assert.equal(1, p.partitions[1].fs_index)
    assert.equal(MIB, p.partitions[1].offset)
    assert.equal("0fc63daf-8483-4772-8e79-3d69d8477de4", p.partitions[1].type)
    assert.equal("ext4", p.partitions[1].fstype)
  end)

  it("probes a region of an image and reports offsets in the file", function()
    if not mediaimg.have("sfdisk") then return pending("sfdisk not installed (Debian package fdisk)") end
    local p = assert(cmedia.probe(dir .. "/m.img", { offset = 18432 * 512, size = 8 * MIB }))
    assert.equal("ext4", p.fstype)
    assert.equal(18432 * 512, p.partitions[1].offset)
  end)

  it("reads the facts of a loop device and probes it like its image", function()
    if not helper.is_root() then return pending("needs root for losetup") end
    local loop = helper.sh({ "losetup", "-r", "-f", "--show", ext4 }).stdout:gsub("%s+$", "")
    finally(function() helper.sh({ "losetup", "-d", loop }, { may_fail = true }) end)
    local f = assert(cmedia.device_facts(loop))
    assert.equal(8 * MIB, f.size)
    assert.equal(512, f.logical_sector)
    assert.equal(7, f.major)                          -- loop devices
    assert.is_true(f.rotational == nil or type(f.rotational) == "boolean")
    assert.is_false(f.removable)
    assert.is_nil(f.serial)                           -- a loop device has none
    local p = assert(cmedia.probe(loop))
    assert.equal("ext4", p.fstype)
    assert.equal(8 * MIB, p.size)
    local head, _, size = cmedia.read_regions(loop, 4096, 0)
    assert.equal(8 * MIB, size)
    assert.is_true(head == helper.read(ext4):sub(1, 4096))
    local _, err, code = cmedia.device_facts(ext4)
    assert.equal("ENOTBLK", code)
    assert.matches("Block device required", err)
  end)

  it("finds nothing in random bytes and fails on a missing file", function()
    helper.write(dir .. "/rand.img", mediaimg.pattern(MIB, 5))
    local p = assert(cmedia.probe(dir .. "/rand.img"))
    assert.is_nil(p.fstype)
    assert.is_nil(p.pttype)
    assert.equal(0, #p.partitions)
    local r, _, code = cmedia.probe(dir .. "/none.img")
    assert.is_nil(r)
    assert.equal("ENOENT", code)
  end)
end)

describe("media.fiemap and media.damage", function()
  local dir
  setup(function() dir = helper.tmpdir("fiemap") end)

  it("maps a file on a loop-mounted ext4 to image offsets that hold its bytes", function()
    if not helper.is_root() then return pending("needs root for losetup and mount") end
    local data = mediaimg.pattern(300000, 9)
    local img = mediaimg.mkext4(dir, "e.img", 16 * MIB, { ["big.bin"] = data, ["small.txt"] = "tiny\n" })
    local loop = helper.sh({ "losetup", "-r", "-f", "--show", img }).stdout:gsub("%s+$", "")
    local mnt = dir .. "/mnt"
    helper.sh { "mkdir", "-p", mnt }
    local mounted = helper.sh({ "mount", "-o", "ro,noload", loop, mnt }, { may_fail = true }).code == 0
    finally(function()
      if mounted then helper.sh({ "umount", mnt }, { may_fail = true }) end
      helper.sh({ "losetup", "-d", loop }, { may_fail = true })
    end)
    assert.is_true(mounted, "mount failed")
    local ext = assert(cmedia.fiemap(mnt .. "/big.bin"))
    assert.is_true(#ext >= 1)
    assert.is_true(ext[#ext].flags & cmedia.EXTENT.last ~= 0)
    local f = assert(io.open(img, "rb"))
    local parts = {}
    for _, x in ipairs(ext) do
      assert.equal("integer", math.type(x.physical))
      f:seek("set", x.physical)
      parts[#parts + 1] = f:read(x.length)
    end
    f:close()
    assert.is_true(table.concat(parts):sub(1, #data) == data, "extents do not hold the file's bytes")

    -- A map that loses the file's second 4 KiB block: damage says where.
    local bad = ext[1].physical + 4096
    assert.is_true(ext[1].length >= 8192)
    local map = assert(mapfile.parse(("0 +\n0 %d +\n%d 4096 -\n%d %d +\n"):format(
      bad, bad, bad + 4096, 16 * MIB - bad - 4096)))
    assert.same({ { file_offset = 4096, length = 4096, status = "-", image_offset = bad } },
                media.damage(map, ext, 0, #data))
    assert.same({}, media.damage(map, assert(cmedia.fiemap(mnt .. "/small.txt")), 0, 5))
  end)

  it("reports EOPNOTSUPP or real extents on tmpfs and FUSE", function()
    local targets = {}
    local shm = io.open("/dev/shm/ntt-fiemap-spec", "wb")
    if shm then shm:write("data"); shm:close(); targets[#targets + 1] = "/dev/shm/ntt-fiemap-spec" end
    finally(function() os.remove("/dev/shm/ntt-fiemap-spec") end)
    local fuse_mnt
    if helper.is_root() and mediaimg.have("fuse2fs") then
      local img = mediaimg.mkext4(dir, "fuse.img", 8 * MIB, { ["f.txt"] = "fuse data\n" })
      fuse_mnt = dir .. "/fmnt"
      helper.sh { "mkdir", "-p", fuse_mnt }
      if helper.sh({ "fuse2fs", "-o", "ro", img, fuse_mnt }, { may_fail = true }).code == 0 then
        targets[#targets + 1] = fuse_mnt .. "/f.txt"
      else
        fuse_mnt = nil
      end
    end
    finally(function()
      if fuse_mnt then helper.sh({ "umount", fuse_mnt }, { may_fail = true }) end
    end)
    if #targets == 0 then return pending("no tmpfs or FUSE file to try") end
    for _, t in ipairs(targets) do
      local ext, err, code = cmedia.fiemap(t)
      if ext then
        assert.is_true(#ext >= 1, t)
        assert.equal("integer", math.type(ext[1].physical))
        assert.equal("integer", math.type(ext[1].length))
      else
        assert.equal("EOPNOTSUPP", code, t .. ": " .. tostring(err))
        assert.equal(t .. ": Operation not supported", err)
      end
    end
  end)

  it("turns extents of a filesystem at an offset into damaged file ranges", function()
    local fs = MIB
    local ext = {
      { logical = 0, physical = 8192, length = 8192, flags = 0 },
      { logical = 8192, physical = 40960, length = 4096, flags = cmedia.EXTENT.last },
    }
    local map = assert(mapfile.parse(table.concat {
      "0 +\n",
      ("0 %d +\n"):format(fs + 8192 + 100),
      ("%d 200 -\n"):format(fs + 8192 + 100),
      ("%d %d +\n"):format(fs + 8192 + 300, 40960 - 8192 - 300 + 4000),
      ("%d 96 /\n"):format(fs + 40960 + 4000),
    }))
    assert.same({
      { file_offset = 100, length = 200, status = "-", image_offset = fs + 8192 + 100 },
      { file_offset = 8192 + 4000, length = 96, status = "/", image_offset = fs + 40960 + 4000 },
    }, media.damage(map, ext, fs))
    -- Clipped to the file size: the block tail past EOF does not count.
    assert.same({ { file_offset = 100, length = 200, status = "-", image_offset = fs + 8192 + 100 } },
                media.damage(map, ext, fs, 12000))
    -- Past the end of the map everything is non-tried.
    local short = assert(mapfile.parse("0 +\n0 4096 +\n"))
    assert.same({ { file_offset = 0, length = 12288, status = "?", image_offset = fs + 8192 } },
                media.damage(short, ext, fs))
  end)
end)

describe("media.inspect", function()
  local dir
  setup(function() dir = helper.tmpdir("inspect") end)

  local function ident(path, map_path)
    local f = assert(io.open(path, "rb"))
    local size = f:seek("end")
    f:close()
    return { kind = "image", image_path = path, size = size, map_path = map_path }
  end

  local function kinds(r)
    local t = {}
    for _, p in ipairs(r.problems) do t[#t + 1] = p.kind end
    table.sort(t)
    return t
  end

  it("finds an erased floppy with no map", function()
    local img = dir .. "/erased.img"
    helper.write(img, string.rep("\xf6", 1474560))
    local r = media.inspect(ident(img))
    assert.same({ byte = 0xf6 }, r.erased)
    assert.equal("unknown", r.health)
    assert.is_nil(r.map)
    assert.same({ "erased_disk" }, kinds(r))
  end)

  it("calls erased only the byte values the policy lists", function()
    local img = dir .. "/ff.img"
    helper.write(img, string.rep("\xaa", 65536))
    local r = media.inspect(ident(img), { erased_bytes = { 0xf6, 0x00 } })
    assert.is_nil(r.erased)
    assert.same({ byte = 0xaa }, r.uniform)
    assert.same({ "uniform_medium" }, kinds(r))
    r = media.inspect(ident(img), { erased_bytes = { 0xf6, 0xaa } })
    assert.same({ byte = 0xaa }, r.erased)
    assert.same({ "erased_disk" }, kinds(r))
  end)

  it("uses the map: only rescued bytes decide erased, holes grade health", function()
    local img = dir .. "/holey.img"
    -- 0xf6 everywhere ddrescue read, zeros in the hole it could not read.
    helper.write(img, string.rep("\xf6", 512 * 100) .. string.rep("\0", 512 * 10) .. string.rep("\xf6", 512 * 90))
    helper.write(dir .. "/holey.map", "0x0 + 1\n0x0 0xC800 +\n0xC800 0x1400 -\n0xDC00 0xB400 +\n")
    local r = media.inspect(ident(img, dir .. "/holey.map"))
    assert.same({ byte = 0xf6 }, r.erased)
    assert.equal(95.0, r.rescued_pct)
    assert.equal("incomplete", r.health)
    assert.is_false(r.boot_sector_bad)
    assert.same({ { pos = 51200, size = 5120, status = "-" } }, r.holes)
    assert.same({ "erased_disk", "incomplete_rescue" }, kinds(r))
  end)

  it("records a bad boot sector, a failed rescue and a map longer than the image", function()
    local img = dir .. "/bad.img"
    helper.write(img, mediaimg.pattern(8192, 3))
    helper.write(dir .. "/bad.map", "0 -\n0 1024 -\n1024 1024 +\n2048 14336 ?\n")
    local r = media.inspect(ident(img, dir .. "/bad.map"), { health = { incomplete = 99, corrupt = 50 } })
    assert.is_true(r.boot_sector_bad)
    assert.equal("failed", r.health)
    assert.equal(6.25, r.rescued_pct)
    assert.same({ "boot_sector_bad", "image_shorter_than_map", "incomplete_rescue", "no_filesystem" },
                kinds(r))
  end)

  it("records an invalid mapfile as a problem and still probes", function()
    local img = mediaimg.mkext4(dir, "ok.img", 4 * MIB, { ["x"] = "x" })
    helper.write(dir .. "/ok.map", "0 +\nnonsense\n")
    local r = media.inspect(ident(img, dir .. "/ok.map"))
    assert.same({ "mapfile_invalid" }, kinds(r))
    assert.matches("ok%.map: line 2: ", r.problems[1].message)
    assert.equal("ext4", r.probe.fstype)
    assert.is_nil(r.erased)
  end)
end)
