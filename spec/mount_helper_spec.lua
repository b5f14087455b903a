-- spec/mount_helper_spec.lua: ntt-mount-helper and ntt.mount on real images,
-- real loop devices, real kernel and FUSE mounts: what gets mounted, by
-- which driver, and how a partial image is read through the honest view.
-- Damaged media, concurrency, cleanup and refusals: mount_helper_edges_spec.lua.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local mh = require "spec.support.mounthelper"
local util = require "ntt.core.util"

local MiB = images.MiB

describe("ntt.mount without a mount", function()
  if not mh.exists(helper.build .. "/ntt-mount-helper") then
    it("runs", function() pending("ntt-mount-helper not built") end)
    return
  end
  local mount = require "ntt.mount"

  it("finds the helper through $NTT_MOUNT_HELPER", function()
    local path = helper.sh({ "realpath", helper.build .. "/ntt-mount-helper" }).stdout:gsub("%s+$", "")
    util.setenv("NTT_MOUNT_HELPER", path)
    assert.are.equal(path, mount.helper_path())
  end)

  it("turns the helper's refusals into nil, message, errname", function()
    if not helper.is_root() then pending("the helper runs through sudo when not root") return end
    local res, err, ename = mount.mount("not-a-hash", "/etc/hostname")
    assert.is_nil(res)
    assert.matches("invalid hash", err)
    assert.are.equal("EINVAL", ename)
    res, err, ename = mount.mount("0123456789abcdef", "/")
    assert.is_nil(res)
    assert.matches("not a regular file", err)
    assert.are.equal("EINVAL", ename)
    assert.has_error(function() mount.mount(nil, "x") end)
    assert.has_error(function() mount.status(42) end)
  end)

  it("reports a helper that is not there", function()
    local old = os.getenv("NTT_MOUNT_HELPER")
    finally(function() util.setenv("NTT_MOUNT_HELPER", old) end)
    util.setenv("NTT_MOUNT_HELPER", "/nonexistent/ntt-mount-helper")
    if not helper.is_root() then pending("the helper runs through sudo when not root") return end
    local res, err, ename = mount.status("0123456789abcdef")
    assert.is_nil(res)
    assert.matches("nonexistent", err)
    assert.is_string(ename)
  end)
end)

describe("ntt-mount-helper", function()
  -- for this file's specs only: later spec files see the defaults again
  local t, why = mh.setup("mh", teardown)
  if not t then it("runs", function() pending(why) end) return end
  local base, work = t.base, t.work
  local new_hash, mounts, loops_of, check_options, fs, read, read_as_nobody, kmsg_mark, kmsg_since, mounted =
    t.new_hash, t.mounts, t.loops_of, t.check_options, t.fs, t.read, t.read_as_nobody, t.kmsg_mark, t.kmsg_since,
    t.mounted
  local mount = require "ntt.mount"


  it("mounts a whole-disk ext4 read-only at p0, reports JSON, unmounts and detaches", function()
    local img = images.ext(work .. "/one.img", { label = "ONE", files = { ["hello.txt"] = "hello\n", ["d/x"] = "x" } })
    local h = new_hash()
    local res = mounted(finally, h, img)
    assert.are.equal(0, res.exit)
    assert.are.equal("single", res.layout)
    local e = fs(res, 0)
    assert.are.equal("mounted", e.status)
    assert.are.equal("ext4", e.fstype)
    assert.are.equal("ONE", e.label)
    assert.are.equal("kernel", e.driver)
    assert.are.equal(base .. "/" .. h .. "/p0", e.mount)
    assert.matches("^/dev/loop%d+$", e.device)
    assert.are.equal("hello\n", read(e.mount .. "/hello.txt"))
    assert.are.equal("hello\n", read_as_nobody(e.mount .. "/hello.txt"))
    check_options(base .. "/" .. h)
    assert.are.equal(1, #loops_of(img))
    local st = assert(mount.status(h))
    assert.are.equal("mounted", st.state)
    assert.are.equal(e.mount, fs(st, 0).mount)
    local un = assert(mount.unmount(h))
    assert.are.equal("unmounted", un.status)
    assert.are.same({}, mounts(base .. "/" .. h))
    assert.are.same({}, loops_of(img))
    local st2 = assert(mount.status(h))
    assert.are.equal("unmounted", st2.state)
  end)

  it("mounts both ext4 partitions of an MBR disk and skips the extended container and swap", function()
    local p1 = images.ext(work .. "/p1.fs", { size_mb = 4, files = { ["one.txt"] = "first partition\n" } })
    local p2 = images.ext(work .. "/p2.fs", { size_mb = 4, files = { ["two.txt"] = "second partition\n" } })
    local sw = work .. "/swap.fs"
    images.truncate(sw, 2 * MiB)
    helper.sh { "mkswap", sw }
    local img = images.mbr(work .. "/mbr.img", { size_mb = 16,
      parts = { { start_mb = 1, size_mb = 4, image = p1 }, { start_mb = 5, size_mb = 4, image = p2 } },
      logical = { { start_mb = 10, size_mb = 2, type = 0x82, image = sw } } })
    local h = new_hash()
    local res = mounted(finally, h, img)
    assert.are.equal("dos", res.pttype)
    assert.are.equal("multi", res.layout)
    assert.are.equal(0, res.exit)
    assert.are.equal("mounted", fs(res, 1).status)
    assert.are.equal("mounted", fs(res, 2).status)
    assert.are.equal(1 * MiB, fs(res, 1).offset)
    assert.are.equal(4 * MiB, fs(res, 2).size)
    assert.are.equal("skipped", fs(res, 3).status)
    assert.matches("extended", fs(res, 3).reason)
    assert.are.equal("skipped", fs(res, 5).status)
    assert.matches("swap", fs(res, 5).reason)
    assert.are.equal("first partition\n", read(base .. "/" .. h .. "/p1/one.txt"))
    assert.are.equal("second partition\n", read(base .. "/" .. h .. "/p2/two.txt"))
    assert.are_not.equal(fs(res, 1).device, fs(res, 2).device)
    assert.are.equal(2, #loops_of(img))
    check_options(base .. "/" .. h)
  end)

  it("mounts both partitions of a GPT disk; equal inode numbers stay apart", function()
    local fsimg = images.ext(work .. "/g.fs", { size_mb = 4, files = { ["same.txt"] = "same fs twice\n" } })
    local img = images.gpt(work .. "/gpt.img", { size_mb = 12,
      parts = { { start_mb = 1, size_mb = 4, image = fsimg }, { start_mb = 6, size_mb = 4, image = fsimg } } })
    local h = new_hash()
    local res = mounted(finally, h, img)
    assert.are.equal("gpt", res.pttype)
    assert.are.equal("multi", res.layout)
    assert.are.equal(6 * MiB, fs(res, 2).offset)
    for _, i in ipairs { 1, 2 } do
      assert.are.equal("mounted", fs(res, i).status, fs(res, i).reason)
      assert.are.equal("same fs twice\n", read(("%s/%s/p%d/same.txt"):format(base, h, i)))
    end
    check_options(base .. "/" .. h)
  end)

  it("mounts an APM hybrid disc as its whole-disk ISO9660", function()
    local img = images.apm_iso(work .. "/hybrid.iso", { label = "HYB", files = { ["mac.txt"] = "hybrid\n" } })
    local h = new_hash()
    local res = mounted(finally, h, img)
    assert.are.equal("mac", res.pttype)
    assert.are.equal("apm", res.hybrid)
    assert.are.equal(1, #res.filesystems)
    local e = fs(res, 0)
    assert.are.equal("mounted", e.status, e.reason)
    assert.are.equal("iso9660", e.fstype)
    assert.are.equal("hybrid\n", read(e.mount .. "/mac.txt"))
  end)

  it("remounts a medium whose mount vanished; status says so first", function()
    local img = images.ext(work .. "/vanish.img", { files = { ["v.txt"] = "v\n" } })
    local h = new_hash()
    local res = mounted(finally, h, img)
    helper.sh { "umount", fs(res, 0).mount }
    local st = assert(mount.status(h))
    assert.are.equal("partial", st.state)
    assert.are.equal("missing", fs(st, 0).status)
    assert.are.equal(1, st.exit)
    local again = assert(mount.mount(h, img))
    assert.are.equal("mounted", fs(again, 0).status)
    assert.are.equal("v\n", read(fs(again, 0).mount .. "/v.txt"))
    assert.are.equal(1, #loops_of(img))
  end)

  it("does not take another filesystem mounted in the medium's place for the medium", function()
    local img = images.ext(work .. "/own.img", { files = { ["who.txt"] = "the medium\n" } })
    local other = images.ext(work .. "/other.img", { files = { ["who.txt"] = "another disk\n" } })
    local h = new_hash()
    local res = mounted(finally, h, img)
    local mp = fs(res, 0).mount
    helper.sh { "umount", "-l", mp }
    helper.sh { "mount", "-o", "loop,ro", other, mp }
    finally(function() helper.sh({ "umount", "-l", mp }, { may_fail = true }) end)
    local st = assert(mount.status(h))
    assert.are.equal("partial", st.state)
    assert.are.equal("missing", fs(st, 0).status)
    assert.matches("another filesystem is mounted there", fs(st, 0).reason)
    -- mounted again, the medium is what shows there
    local again = assert(mount.mount(h, img))
    assert.are.equal("mounted", fs(again, 0).status)
    assert.are.equal("the medium\n", read(fs(again, 0).mount .. "/who.txt"))
  end)

  it("mounts dirty ext3 and ext4 (needs_recovery) read-only without replaying the journal", function()
    for _, t in ipairs { "ext3", "ext4" } do
      local img = images.ext(work .. "/dirty-" .. t .. ".img", { type = t, files = { ["f.txt"] = t .. " data\n" } })
      images.dirty(img)
      local before = helper.read(img)
      local h = new_hash()
      local res = mounted(finally, h, img)
      local e = fs(res, 0)
      assert.are.equal("mounted", e.status, e.reason)
      assert.are.equal(t, e.fstype)
      assert.matches(t == "ext3" and "norecovery" or "noload", e.options)
      assert.are.equal(t .. " data\n", read(e.mount .. "/f.txt"))
      check_options(e.mount)
      assert.is_true(mount.unmount(h).ok)
      assert.is_true(helper.read(img) == before, t .. " image was modified")
    end
  end)

  it("mounts a FAT floppy through ntt-tskfs when the kernel has no vfat", function()
    local img = images.fat(work .. "/floppy.img", { label = "FLOPPY", files = { ["README.TXT"] = "floppy text\n" } })
    local h = new_hash()
    local res = mounted(finally, h, img)
    local e = fs(res, 0)
    assert.are.equal("mounted", e.status, e.reason)
    assert.are.equal("vfat", e.fstype)
    assert.are.equal("FLOPPY", e.label)
    local kernel_vfat = helper.read("/proc/filesystems"):find("\tvfat\n", 1, true)
    assert.are.equal(kernel_vfat and "kernel" or "ntt-tskfs", e.driver)
    assert.are.equal("floppy text\n", read(e.mount .. "/README.TXT"))
    assert.are.equal("floppy text\n", read_as_nobody(e.mount .. "/README.TXT"))
    check_options(e.mount)
  end)

  it("mounts a FAT floppy through fusefat when the policy's reader for vfat is fuse", function()
    local img = images.fat(work .. "/floppy2.img", { label = "FLOPPY", files = { ["README.TXT"] = "floppy text\n" } })
    local h = new_hash()
    local res = mounted(finally, h, img, { reader = { vfat = "fuse" } })
    local e = fs(res, 0)
    assert.are.equal("mounted", e.status, e.reason)
    local kernel_vfat = helper.read("/proc/filesystems"):find("\tvfat\n", 1, true)
    assert.are.equal(kernel_vfat and "kernel" or "fusefat", e.driver)
    assert.are.equal("floppy text\n", read(e.mount .. "/README.TXT"))
  end)

  it("refuses a reader choice outside its words (EINVAL)", function()
    local img = images.fat(work .. "/floppy3.img", { files = { ["X.TXT"] = "x\n" } })
    local res, err, code = mount.mount(new_hash(), img, { reader = { vfat = "fusefat" } })
    assert.is_nil(res)
    assert.are.equal("EINVAL", code, err)
    assert.matches("%-%-reader", err)
  end)

  it("mounts a Rock Ridge ISO9660 image (no Joliet) through fuseiso when the kernel has no iso9660", function()
    local img = images.iso(work .. "/cd.iso", { label = "NTTCD", files = { ["readme.txt"] = "on the cd\n" } })
    local h = new_hash()
    local res = mounted(finally, h, img)
    local e = fs(res, 0)
    assert.are.equal("mounted", e.status, e.reason)
    assert.are.equal("iso9660", e.fstype)
    local kernel_iso = helper.read("/proc/filesystems"):find("\tiso9660\n", 1, true)
    assert.are.equal(kernel_iso and "kernel" or "fuseiso", e.driver)
    assert.are.equal("on the cd\n", read(e.mount .. "/readme.txt"))
    assert.are.equal("on the cd\n", read_as_nobody(e.mount .. "/readme.txt"))
    check_options(e.mount)
  end)

  it("notices a dead FUSE driver and mounts the medium again", function()
    local img = images.fat(work .. "/dies.img", { files = { ["D.TXT"] = "again\n" } })
    local h = new_hash()
    local res = mounted(finally, h, img)
    local e = fs(res, 0)
    if e.driver == "kernel" then pending("kernel has vfat: no FUSE driver to kill") return end
    -- the driver is the process whose command line names the mount point
    local pid
    for name in helper.sh({ "ls", "/proc" }).stdout:gmatch("%d+") do
      local f = io.open("/proc/" .. name .. "/cmdline", "rb")
      local cmd = f and f:read("a") or ""
      if f then f:close() end
      if cmd:find("\0" .. e.mount .. "\0", 1, true) and cmd:find(e.driver, 1, true) then pid = name end
    end
    assert.truthy(pid, "no " .. e.driver .. " process for " .. e.mount)
    helper.sh { "kill", "-9", tostring(pid) }
    util.sleep(0.2)
    local st = assert(mount.status(h))
    assert.are.equal("partial", st.state)
    assert.are.equal("missing", fs(st, 0).status)
    local again = assert(mount.mount(h, img))
    assert.are.equal("mounted", fs(again, 0).status)
    assert.are.equal("again\n", read(fs(again, 0).mount .. "/D.TXT"))
  end)

  it("finds a Zip disk's FAT at byte offset 16384", function()
    local fat = images.fat(work .. "/zipfs.img", { kb = 2048, files = { ["ZIP.TXT"] = "zip disk\n" } })
    local img = images.zip(work .. "/zip.img", fat)
    local h = new_hash()
    local res = mounted(finally, h, img)
    local e = fs(res, 0)
    assert.are.equal("mounted", e.status, e.reason)
    assert.are.equal(16384, e.offset)
    assert.matches("Zip", e.reason)
    assert.are.equal("zip disk\n", read(e.mount .. "/ZIP.TXT"))
  end)

  it("mounts a truncated FAT image: what is there reads, what is missing fails", function()
    -- FAT12 floppy: data area starts at 16896; A.TXT is cluster 2, BIG.BIN follows.
    local big = string.rep("0123456789abcdef", 1000)
    local img = images.fat(work .. "/short.img", { files = { ["A.TXT"] = "early\n", ["BIG.BIN"] = big } })
    images.truncate(img, 24576)
    local h = new_hash()
    local res = mounted(finally, h, img)
    local e = fs(res, 0)
    assert.are.equal("mounted", e.status, e.reason)
    assert.are.equal(1474560, res.view.size)
    assert.are.equal(24576, res.view.image_size)
    assert.matches("missing at the end", e.reason)
    assert.are.equal("early\n", read(e.mount .. "/A.TXT"))
    local data = read(e.mount .. "/BIG.BIN")
    assert.is_nil(data, "BIG.BIN crosses the end of the image and must not read")
  end)

  it("mounts a truncated ext4 with a mapfile through the honest view: holes give EIO", function()
    local small = "inside the rescued part\n"
    local big = {}
    for i = 1, 3000000 // 16 do big[i] = ("%15d\n"):format(i) end
    big = table.concat(big)
    local img = images.ext(work .. "/partial.img", { size_mb = 16, files = { ["a.txt"] = small, ["big.bin"] = big } })
    -- where big.bin lives
    local st = helper.sh({ "debugfs", "-R", "stat /big.bin", img }).stdout
    local b0, b1 = st:match("%(0%-%d+%):(%d+)%-(%d+)")
    b0, b1 = tonumber(b0), tonumber(b1)
    assert.truthy(b0, st)
    local hole = (b0 + 16) * 4096
    local map = images.mapfile(work .. "/partial.map", {
      { 0, hole, "+" }, { hole, 65536, "-" }, { hole + 65536, 9 * MiB - hole - 65536, "+" },
      { 9 * MiB, 7 * MiB, "?" } }, 9 * MiB)
    images.truncate(img, 9 * MiB)
    local h = new_hash()
    local mark = kmsg_mark()
    local res = mounted(finally, h, img, { map = map })
    local e = fs(res, 0)
    assert.are.equal("mounted", e.status, e.reason)
    assert.are.equal("kernel", e.driver)
    assert.is_table(res.view)
    assert.are.equal(16 * MiB, res.view.size)
    assert.are.equal(9 * MiB, res.view.image_size)
    assert.are.equal(9 * MiB - 65536, res.view.rescued)
    assert.are.equal(2, res.view.holes)
    assert.are.equal(small, read(e.mount .. "/a.txt"))
    local dev = e.device:match("loop%d+")
    local log
    for attempt = 1, 3 do
      local data, err = read(e.mount .. "/big.bin")
      assert.is_nil(data)
      assert.matches("Input/output error", tostring(err))
      log = kmsg_since(mark)
      if log:find("I/O error, dev " .. dev, 1, true) then break end
      -- the kernel rate-limits these lines (10 in 5 s): earlier specs' errors
      -- may have used them up; a read in the next window is logged
      if attempt < 3 then util.sleep(5.5) end
    end
    assert.truthy(log:find("I/O error, dev " .. dev, 1, true), "no kernel I/O error line for " .. dev .. ":\n" .. log)
    check_options(base .. "/" .. h)
    -- the view's loop is gone after unmount, and the view with it
    assert.is_true(mount.unmount(h).ok)
    assert.are.same({}, mounts(res.view.mount))
    assert.are.same({}, loops_of(res.view.file))
  end)

  it("finds a sibling IMAGE.map by itself and uses the view only when there are holes", function()
    local img = images.ext(work .. "/sib.img", { files = { ["s.txt"] = "sibling\n" } })
    images.mapfile(img .. ".map", { { 0, 8 * MiB, "+" } }, 8 * MiB)
    local h = new_hash()
    local res = mounted(finally, h, img)
    assert.is_nil(res.view, "a complete map needs no view")
    assert.is_true(mount.unmount(h).ok)
    images.mapfile(img .. ".map", { { 0, 7 * MiB, "+" }, { 7 * MiB, MiB, "*" } }, 7 * MiB)
    local res2 = mounted(finally, h, img)
    assert.is_table(res2.view)
    assert.are.equal(img .. ".map", res2.view.mapfile)
    assert.are.equal(1, res2.view.holes)
    assert.are.equal("sibling\n", read(fs(res2, 0).mount .. "/s.txt"))
  end)

  it("reads mapfiles in decimal and hex with the old two-field status line", function()
    local img = images.ext(work .. "/oldmap.img", { files = { ["o.txt"] = "old map\n" } })
    local map = work .. "/oldmap.log"
    helper.write(map, "# Rescue Logfile. Created by GNU ddrescue version 1.19\n# current_pos  current_status\n"
      .. "0x00500000     +\n#      pos        size  status\n"
      .. "0 6291456 +\n6291456 0x100000 /\n  7340032\t1048576  +  \n")
    local h = new_hash()
    local res = mounted(finally, h, img, { map = map })
    assert.is_table(res.view)
    assert.are.equal(1, res.view.holes)
    assert.are.equal(7 * MiB, res.view.rescued)
    assert.are.equal(8 * MiB, res.view.size)
    assert.are.equal("old map\n", read(fs(res, 0).mount .. "/o.txt"))
    local dd = helper.sh({ "dd", "if=" .. fs(res, 0).device, "of=/dev/null", "bs=4096",
                           "skip=1536", "count=1", "iflag=direct" }, { may_fail = true })
    assert.are_not.equal(0, dd.code, "a read inside the hole must fail")
    local ok = helper.sh({ "dd", "if=" .. fs(res, 0).device, "of=/dev/null", "bs=4096",
                           "skip=1792", "count=1", "iflag=direct" }, { may_fail = true })
    assert.are.equal(0, ok.code, ok.stderr)
  end)
end)
