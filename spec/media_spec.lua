-- spec/media_spec.lua: ntt.core.media reading a medium's bytes (regions,
-- unreadable sectors, the uniform scan) and its resources, on images built
-- here.  What is on a medium and where (probe, FIEMAP, inspect):
-- media_layout_spec.lua.
local helper = require "spec.support.helper"
local mediaimg = require "spec.support.mediaimg"
local cmedia = require "ntt.core.media"
local media = require "ntt.media"
local proc = require "ntt.core.proc"

local MIB = mediaimg.MIB

describe("media.read_regions", function()
  local dir
  setup(function() dir = helper.tmpdir("regions") end)

  it("returns head and tail of a small file, each the whole file", function()
    local data = mediaimg.pattern(3000)
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
    local data = mediaimg.pattern(3 * MIB + 123, 11)
    helper.write(dir .. "/big", data)
    local head, tail, size = cmedia.read_regions(dir .. "/big", MIB, MIB)
    assert.equal(#data, size)
    assert.is_true(head == data:sub(1, MIB))
    assert.is_true(tail == data:sub(-MIB))
    local under = mediaimg.pattern(700 * 1024, 3)
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
  if not mediaimg.have("cc") or not mediaimg.have("pkg-config") then return nil, "no C compiler" end
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

describe("ntt.core.media resources", function()
  it("closes every file descriptor on success and failure paths", function()
    local dir = helper.tmpdir("fds")
    local img = mediaimg.mkext4(dir, "e.img", 4 * MIB, { ["x"] = "x" })
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
