-- spec/media_spec.lua: ntt.core.media (regions, uniform scan, libblkid probe,
-- FIEMAP) and ntt.media's inspect and damage, on images built here.
local helper = require "spec.support.helper"
local cmedia = require "ntt.core.media"
local media = require "ntt.media"
local mapfile = require "ntt.mapfile"
local proc = require "ntt.core.proc"

local MIB = 1048576

local function have(tool)
  local r = proc.run { argv = { "sh", "-c", 'command -v "$1"', "sh", tool } }
  return r and r.code == 0
end

-- Deterministic bytes (not uniform, not compressible to one value).
local function pattern(n, seed)
  local t, x = {}, seed or 7
  local chunk = {}
  for i = 1, 4096 do x = (x * 1103515245 + 12345) % 2147483648; chunk[i] = string.char(x % 251) end
  local block = table.concat(chunk)
  for i = 1, n // 4096 do t[i] = block:sub(i % 7 + 1) .. block:sub(1, i % 7) end
  local s = table.concat(t)
  return s .. block:sub(1, n - #s)
end

local function mkext4(dir, name, size, files, label)
  local root = dir .. "/" .. name .. ".d"
  helper.sh { "mkdir", "-p", root }
  for fname, data in pairs(files) do helper.write(root .. "/" .. fname, data) end
  local img = dir .. "/" .. name
  helper.sh { "truncate", "-s", tostring(size), img }
  helper.sh { "mkfs.ext4", "-q", "-F", "-L", label or "EXTL", "-d", root, img }
  return img
end

local function place(src, dst, offset)
  helper.sh { "dd", "if=" .. src, "of=" .. dst, "bs=512", "seek=" .. (offset // 512), "conv=notrunc",
              "status=none" }
end

describe("media.read_regions", function()
  local dir
  setup(function() dir = helper.tmpdir("regions") end)

  it("returns head and tail of a small file, each the whole file", function()
    local data = pattern(3000)
    helper.write(dir .. "/small", data)
    local head, tail, size, bad = cmedia.read_regions(dir .. "/small", MIB, MIB)
    assert.equal(data, head)
    assert.equal(data, tail)
    assert.equal(3000, size)
    assert.equal(0, bad)
    head, tail = cmedia.read_regions(dir .. "/small", 100, 50)
    assert.equal(data:sub(1, 100), head)
    assert.equal(data:sub(-50), tail)
  end)

  it("returns the first and last MiB of a larger file and all of a file under 1 MiB", function()
    local data = pattern(3 * MIB + 123, 11)
    helper.write(dir .. "/big", data)
    local head, tail, size = cmedia.read_regions(dir .. "/big", MIB, MIB)
    assert.equal(#data, size)
    assert.is_true(head == data:sub(1, MIB))
    assert.is_true(tail == data:sub(-MIB))
    local under = pattern(700 * 1024, 3)
    helper.write(dir .. "/under", under)
    head, tail, size = cmedia.read_regions(dir .. "/under", MIB, MIB)
    assert.equal(700 * 1024, size)
    assert.is_true(head == under and tail == under)
  end)

  it("fails with errno names", function()
    local r, err, code = cmedia.read_regions(dir .. "/missing", MIB, MIB)
    assert.is_nil(r)
    assert.equal("ENOENT", code)
    assert.matches("missing: No such file", err)
    r, err, code = cmedia.read_regions(dir, MIB, MIB)
    assert.is_nil(r)
    assert.equal("EISDIR", code)
    assert.has_error(function() cmedia.read_regions(dir .. "/small", -1, 0) end)
  end)
end)

-- A one-file FUSE filesystem whose file "img" answers EIO for one byte
-- range: real read errors for the zero-fill path.  Returns its mount
-- point and a stop function, or nil and why not.
local FAULTY_C = [[
#define FUSE_USE_VERSION 31
#include <fuse.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
static long long size, bad_lo, bad_hi;
static int f_getattr(const char *p, struct stat *st, struct fuse_file_info *fi)
{
    memset(st, 0, sizeof *st);
    if (!strcmp(p, "/")) { st->st_mode = S_IFDIR | 0755; st->st_nlink = 2; return 0; }
    if (!strcmp(p, "/img")) { st->st_mode = S_IFREG | 0444; st->st_nlink = 1; st->st_size = size; return 0; }
    return -ENOENT;
}
static int f_open(const char *p, struct fuse_file_info *fi)
{
    if (strcmp(p, "/img")) return -ENOENT;
    fi->direct_io = 1;
    return 0;
}
static int f_read(const char *p, char *buf, size_t n, off_t off, struct fuse_file_info *fi)
{
    if (off >= size) return 0;
    if (off + (long long)n > size) n = (size_t)(size - off);
    if (off < bad_hi && off + (long long)n > bad_lo) return -EIO;
    for (size_t i = 0; i < n; i++) buf[i] = (char)(0x41 + (off + (long long)i) % 23);
    return (int)n;
}
int main(int argc, char **argv)
{
    if (argc != 5) return 2;
    size = atoll(argv[2]); bad_lo = atoll(argv[3]); bad_hi = bad_lo + atoll(argv[4]);
    char *fargv[] = { argv[0], "-f", "-o", "ro", argv[1], NULL };
    static const struct fuse_operations ops = { .getattr = f_getattr, .open = f_open, .read = f_read };
    return fuse_main(5, fargv, &ops, NULL);
}
]]

local faulty_bin
local function faulty(dir, size, bad_lo, bad_len)
  if not helper.is_root() then return nil, "needs root to mount FUSE" end
  if not have("cc") or not have("pkg-config") then return nil, "no C compiler" end
  if not faulty_bin then
    helper.write(dir .. "/faulty.c", FAULTY_C)
    local flags = helper.sh({ "pkg-config", "--cflags", "--libs", "fuse3" }, { may_fail = true })
    if flags.code ~= 0 then return nil, "libfuse3-dev not installed" end
    local argv = { "cc", "-O1", "-o", dir .. "/faulty", dir .. "/faulty.c" }
    for w in flags.stdout:gmatch("%S+") do argv[#argv + 1] = w end
    helper.sh(argv)
    faulty_bin = dir .. "/faulty"
  end
  local mnt = ("%s/f%d"):format(dir, bad_lo)
  helper.sh { "mkdir", "-p", mnt }
  local p = assert(proc.spawn { argv = { faulty_bin, mnt, tostring(size), tostring(bad_lo), tostring(bad_len) },
                                stdout = "null", stderr = "null" })
  local util = require "ntt.core.util"
  local deadline = util.monotonic() + 10
  while util.monotonic() < deadline do
    local st = require("ntt.core.fs").stat(mnt .. "/img")
    if st and st.size == size then break end
    util.sleep(0.05)
  end
  local function stop()
    helper.sh({ "umount", mnt }, { may_fail = true })
    if not p:wait(5) then p:kill(9); p:wait(5) end
    p:close()
  end
  local st = require("ntt.core.fs").stat(mnt .. "/img")
  if not st or st.size ~= size then stop(); return nil, "FUSE mount did not come up" end
  return mnt .. "/img", stop
end

local function faulty_bytes(off, n, bad_lo, bad_len)
  local t = {}
  for i = off, off + n - 1 do
    t[#t + 1] = (i >= bad_lo and i < bad_lo + bad_len) and "\0" or string.char(0x41 + i % 23)
  end
  return table.concat(t)
end

describe("media.read_regions on unreadable sectors", function()
  local dir
  setup(function() dir = helper.tmpdir("faulty") end)

  it("reads sector by sector after an error and returns zeros for bad sectors", function()
    local size = 3 * MIB
    local img, stop = faulty(dir, size, 1000 * 512, 4096)
    if not img then return pending(stop) end
    finally(stop)
    local head, tail, got, bad = cmedia.read_regions(img, MIB, MIB)
    assert.equal(size, got)
    assert.equal(4096, bad)
    assert.is_true(head == faulty_bytes(0, MIB, 1000 * 512, 4096), "head differs")
    assert.is_true(tail == faulty_bytes(size - MIB, MIB, 0, 0), "tail differs")
  end)

  it("zeroes whole 512-byte sectors around an unaligned bad range", function()
    local img, stop = faulty(dir, 2 * MIB, 700, 100)
    if not img then return pending(stop) end
    finally(stop)
    local head, _, _, bad = cmedia.read_regions(img, 4096, 0)
    assert.equal(512, bad)
    assert.is_true(head == faulty_bytes(0, 4096, 512, 512))
  end)

  it("identifies a medium with bad sectors like a file holding zeros there", function()
    if not pcall(require, "ntt.core.hash") then return pending("ntt.core.hash not available") end
    local size = 3 * MIB
    local img, stop = faulty(dir, size, 2048, 8192)
    if not img then return pending(stop) end
    finally(stop)
    local id = assert(media.identify(img))
    assert.equal(8192, id.unreadable_bytes)
    helper.write(dir .. "/zeros.img", faulty_bytes(0, size, 2048, 8192))
    local same = assert(media.identify(dir .. "/zeros.img"))
    assert.equal(same.hash, id.hash)
    assert.is_nil(same.unreadable_bytes)
    local r = media.inspect(id, { scan_erased = false })
    assert.equal("unreadable_bytes", r.problems[1].kind)
    assert.equal(8192, r.problems[1].bytes)
  end)

  it("refuses to identify a medium whose first and last MiB are all unreadable", function()
    local img, stop = faulty(dir, 2 * MIB, 0, 2 * MIB)
    if not img then return pending(stop) end
    finally(stop)
    local id, err, code = media.identify(img)
    assert.is_nil(id)
    assert.equal("EIO", code)
    assert.matches("img: unreadable", err)
    local r, serr, scode = cmedia.scan_uniform(img)
    assert.is_nil(r)
    assert.equal("EIO", scode)
    assert.matches("img: Input/output error", serr)
  end)
end)

describe("media.scan_uniform", function()
  local dir
  setup(function() dir = helper.tmpdir("scan") end)

  it("finds an erased floppy (0xf6), a zeroed and a 0x55-wiped image", function()
    for _, b in ipairs { 0xf6, 0x00, 0x55 } do
      local img = ("%s/u%02x.img"):format(dir, b)
      helper.write(img, string.rep(string.char(b), 1474560))
      local r = assert(cmedia.scan_uniform(img))
      assert.is_true(r.uniform)
      assert.equal(b, r.byte)
      assert.equal(1474560, r.size)
      assert.equal(1474560, r.scanned)
      r = assert(cmedia.scan_uniform(img, { block = 4096 }))
      assert.is_true(r.uniform)
    end
  end)

  it("finds an image that differs only in its last byte, and says where", function()
    local img = dir .. "/last.img"
    helper.write(img, string.rep("\xf6", 1474559) .. "\x00")
    local r = assert(cmedia.scan_uniform(img, { block = 65536 }))
    assert.is_false(r.uniform)
    assert.is_nil(r.byte)
    assert.equal(1474559, r.differs_at)
  end)

  it("stops at the first differing byte", function()
    local img = dir .. "/first.img"
    helper.write(img, "\x01" .. string.rep("\0", 4 * MIB))
    local r = assert(cmedia.scan_uniform(img))
    assert.is_false(r.uniform)
    assert.equal(1, r.differs_at)
    assert.equal(1, r.scanned)
  end)

  it("scans only the given ranges and calls nothing uniform in an empty scan", function()
    local img = dir .. "/ranges.img"
    helper.write(img, string.rep("\xf6", 8192) .. string.rep("\0", 4096) .. string.rep("\xf6", 8192))
    assert.is_false(assert(cmedia.scan_uniform(img)).uniform)
    local r = assert(cmedia.scan_uniform(img, { ranges = { { pos = 0, size = 8192 }, { pos = 12288, size = 8192 } } }))
    assert.is_true(r.uniform)
    assert.equal(0xf6, r.byte)
    assert.equal(16384, r.scanned)
    helper.write(dir .. "/empty.img", "")
    r = assert(cmedia.scan_uniform(dir .. "/empty.img"))
    assert.is_false(r.uniform)
    assert.equal(0, r.size)
  end)
end)

describe("media.probe", function()
  local dir, ext4
  setup(function()
    dir = helper.tmpdir("probe")
    ext4 = mkext4(dir, "e.img", 8 * MIB, { ["a.txt"] = "hello\n" }, "EXTL")
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
    place(fat, zip, 16384)
    p = assert(cmedia.probe(zip))
    assert.is_nil(p.fstype)
    assert.is_nil(p.pttype)
    assert.equal(1, #p.partitions)
    assert.equal(0, p.partitions[1].fs_index)
    assert.equal(16384, p.partitions[1].offset)
    assert.equal(2 * MIB - 16384, p.partitions[1].size)
    assert.equal("vfat", p.partitions[1].fstype)
    assert.equal("FATL", p.partitions[1].label)
  end)

  local function mbr(name, size)
    local img = dir .. "/" .. name
    helper.sh { "truncate", "-s", tostring(size), img }
    helper.sh({ "sfdisk", "-q", img }, { input = "label: dos\n2048,16384,83\n18432,16384,83\n" })
    place(ext4, img, 2048 * 512)
    place(ext4, img, 18432 * 512)
    return img
  end

  it("reads an MBR table and probes both partitions in place", function()
    if not have("sfdisk") then return pending("sfdisk not installed (Debian package fdisk)") end
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
    if not have("sfdisk") then return pending("sfdisk not installed (Debian package fdisk)") end
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
    if not have("sfdisk") then return pending("sfdisk not installed (Debian package fdisk)") end
    local img = dir .. "/g.img"
    helper.sh { "truncate", "-s", "20M", img }
    helper.sh({ "sfdisk", "-q", img }, { input = "label: gpt\n2048,16384,L\n" })
    place(ext4, img, 2048 * 512)
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
    if not have("sfdisk") then return pending("sfdisk not installed (Debian package fdisk)") end
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
    helper.write(dir .. "/rand.img", pattern(MIB, 5))
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
    local data = pattern(300000, 9)
    local img = mkext4(dir, "e.img", 16 * MIB, { ["big.bin"] = data, ["small.txt"] = "tiny\n" })
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
    if helper.is_root() and have("fuse2fs") then
      local img = mkext4(dir, "fuse.img", 8 * MIB, { ["f.txt"] = "fuse data\n" })
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

describe("ntt.core.media resources", function()
  it("closes every file descriptor on success and failure paths", function()
    local dir = helper.tmpdir("fds")
    local img = mkext4(dir, "e.img", 4 * MIB, { ["x"] = "x" })
    -- Only descriptors on what the probes touched count: other specs'
    -- connections and files may close (by GC) or open meanwhile.
    local function fds()
      collectgarbage("collect")
      local p = assert(io.popen("ls -l /proc/" .. require("ntt.core.util").pid() .. "/fd"))
      local n = 0
      for line in p:lines() do
        local target = line:match(" %-> (.*)$")
        if target and (target:find(dir, 1, true) or target == "/dev/shm") then n = n + 1 end
      end
      p:close()
      return n
    end
    local before = fds()
    assert.equal(0, before)
    for _ = 1, 50 do
      assert(cmedia.probe(img))
      assert(cmedia.probe(img, { offset = 1024, size = 4096 }))
      assert.is_nil(cmedia.probe(img, { offset = 64 * MIB }))
      assert.is_nil(cmedia.probe(dir))
      assert(cmedia.read_regions(img, 4096, 4096))
      assert(cmedia.scan_uniform(img))
      assert.is_nil(cmedia.scan_uniform(dir))
      cmedia.fiemap(img)
      cmedia.fiemap("/dev/shm")
      assert.is_nil(cmedia.device_facts(img))
      assert.is_nil(cmedia.fiemap(dir .. "/none"))
    end
    assert.equal(before, fds())
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
    helper.write(img, pattern(8192, 3))
    helper.write(dir .. "/bad.map", "0 -\n0 1024 -\n1024 1024 +\n2048 14336 ?\n")
    local r = media.inspect(ident(img, dir .. "/bad.map"), { health = { incomplete = 99, corrupt = 50 } })
    assert.is_true(r.boot_sector_bad)
    assert.equal("failed", r.health)
    assert.equal(6.25, r.rescued_pct)
    assert.same({ "boot_sector_bad", "image_shorter_than_map", "incomplete_rescue", "no_filesystem" },
                kinds(r))
  end)

  it("records an invalid mapfile as a problem and still probes", function()
    local img = mkext4(dir, "ok.img", 4 * MIB, { ["x"] = "x" })
    helper.write(dir .. "/ok.map", "0 +\nnonsense\n")
    local r = media.inspect(ident(img, dir .. "/ok.map"))
    assert.same({ "mapfile_invalid" }, kinds(r))
    assert.matches("ok%.map:2: ", r.problems[1].message)
    assert.equal("ext4", r.probe.fstype)
    assert.is_nil(r.erased)
  end)
end)
