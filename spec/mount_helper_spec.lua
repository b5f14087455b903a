-- spec/mount_helper_spec.lua: ntt-mount-helper and ntt.mount on real images,
-- real loop devices, real kernel and FUSE mounts.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local json = require "ntt.json"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"

local MiB = images.MiB

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end

local function skip_reason()
  if not helper.is_root() then return "mount helper specs need root" end
  if not exists("/dev/loop-control") then return "no /dev/loop-control" end
  if not exists("/dev/fuse") then return "no /dev/fuse" end
  if not exists(helper.build .. "/ntt-mount-helper") then return "ntt-mount-helper not built" end
  return nil
end

describe("ntt.mount without a mount", function()
  if not exists(helper.build .. "/ntt-mount-helper") then
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
  local why = skip_reason()
  if why then
    it("runs", function() pending(why) end)
    return
  end

  local HELPER = helper.sh({ "realpath", helper.build .. "/ntt-mount-helper" }).stdout:gsub("%s+$", "")
  local base = helper.tmpdir("mnt")
  local work = helper.tmpdir("img")
  -- for this file's specs only: later spec files see the defaults again
  local saved = { NTT_MOUNT_ROOT = os.getenv("NTT_MOUNT_ROOT"), NTT_MOUNT_HELPER = os.getenv("NTT_MOUNT_HELPER") }
  util.setenv("NTT_MOUNT_ROOT", base)
  util.setenv("NTT_MOUNT_HELPER", HELPER)
  teardown(function()
    for k, v in pairs(saved) do util.setenv(k, v) end
  end)
  local mount = require "ntt.mount"
  local seq = 0

  local function new_hash()
    seq = seq + 1
    return ("%016x%04x"):format(util.pid(), seq)
  end

  local function raw(args, opts)
    opts = opts or {}
    local argv = { HELPER }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local r = assert(proc.run { argv = argv, timeout = 120, env = opts.env, user = opts.user })
    local obj = json.decode(r.stdout:match("^%s*(.-)%s*$"))
    return r, obj
  end

  -- Mounts under base (findmnt -J), optionally only below prefix.
  local function mounts(prefix)
    local r = helper.sh { "findmnt", "-J", "-l", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS" }
    local out = {}
    for _, m in ipairs(json.decode(r.stdout).filesystems) do
      if m.target:sub(1, #(prefix or base)) == (prefix or base) then out[#out + 1] = m end
    end
    return out
  end

  local function loops_of(path)
    local out = {}
    local r = helper.sh { "losetup", "-J", "-l", "-O", "NAME,BACK-FILE" }
    local t = r.stdout ~= "" and json.decode(r.stdout) or { loopdevices = {} }
    for _, l in ipairs(t.loopdevices or {}) do
      local b = (l["back-file"] or ""):gsub(" %(deleted%)$", "")
      if b == path then out[#out + 1] = l.name end
    end
    return out
  end

  local function check_options(prefix)
    local ms = mounts(prefix)
    assert.is_true(#ms > 0, "nothing mounted under " .. prefix)
    for _, m in ipairs(ms) do
      for _, o in ipairs { "ro", "nosuid", "nodev", "noexec" } do
        assert.truthy(("," .. m.options .. ","):find("," .. o .. ",", 1, true), m.target .. ": " .. m.options)
      end
    end
  end

  -- mount.mount that always unmounts when the test ends, however it ends.
  local function mounted(hash, image, opts)
    finally(function()
      mount.unmount(hash, image)
      assert.are.same({}, loops_of(image), "loops left for " .. image)
    end)
    local res, err = mount.mount(hash, image, opts)
    assert.is_table(res, err)
    return res
  end

  local function fs(res, index)
    for _, e in ipairs(res.filesystems) do
      if e.fs_index == index then return e end
    end
    error("no fs_index " .. index .. " in " .. json.encode(res))
  end

  local function read(path)
    local f, err = io.open(path, "rb")
    if not f then return nil, err end
    local s, rerr = f:read("a")
    f:close()
    return s, rerr
  end

  -- What an unprivileged reader (ntt without root) gets from path.
  helper.sh { "chmod", "0755", base }
  local function read_as_nobody(path)
    local r = assert(proc.run { argv = { "cat", path }, user = "nobody", timeout = 30 })
    return r.code == 0 and r.stdout or nil, r.stderr
  end

  local function kmsg_mark()
    local tag = ("ntt-spec-mark-%d-%d"):format(util.pid(), seq)
    helper.write("/dev/kmsg", tag .. "\n")
    return tag
  end

  local function kmsg_since(tag)
    local out = helper.sh({ "dmesg" }).stdout
    local at = out:find(tag, 1, true)
    return at and out:sub(at) or ""
  end

  it("mounts a whole-disk ext4 read-only at p0, reports JSON, unmounts and detaches", function()
    local img = images.ext(work .. "/one.img", { label = "ONE", files = { ["hello.txt"] = "hello\n", ["d/x"] = "x" } })
    local h = new_hash()
    local res = mounted(h, img)
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
    local res = mounted(h, img)
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
    local res = mounted(h, img)
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
    local res = mounted(h, img)
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
    local res = mounted(h, img)
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

  it("mounts dirty ext3 and ext4 (needs_recovery) read-only without replaying the journal", function()
    for _, t in ipairs { "ext3", "ext4" } do
      local img = images.ext(work .. "/dirty-" .. t .. ".img", { type = t, files = { ["f.txt"] = t .. " data\n" } })
      images.dirty(img)
      local before = helper.read(img)
      local h = new_hash()
      local res = mounted(h, img)
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

  it("mounts a FAT floppy through fusefat when the kernel has no vfat", function()
    local img = images.fat(work .. "/floppy.img", { label = "FLOPPY", files = { ["README.TXT"] = "floppy text\n" } })
    local h = new_hash()
    local res = mounted(h, img)
    local e = fs(res, 0)
    assert.are.equal("mounted", e.status, e.reason)
    assert.are.equal("vfat", e.fstype)
    assert.are.equal("FLOPPY", e.label)
    local kernel_vfat = helper.read("/proc/filesystems"):find("\tvfat\n", 1, true)
    assert.are.equal(kernel_vfat and "kernel" or "fusefat", e.driver)
    assert.are.equal("floppy text\n", read(e.mount .. "/README.TXT"))
    assert.are.equal("floppy text\n", read_as_nobody(e.mount .. "/README.TXT"))
    check_options(e.mount)
  end)

  it("mounts an ISO9660 image through fuseiso when the kernel has no iso9660", function()
    local img = images.iso(work .. "/cd.iso", { label = "NTTCD", files = { ["readme.txt"] = "on the cd\n" } })
    local h = new_hash()
    local res = mounted(h, img)
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
    local res = mounted(h, img)
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
    local res = mounted(h, img)
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
    local res = mounted(h, img)
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
    local res = mounted(h, img, { map = map })
    local e = fs(res, 0)
    assert.are.equal("mounted", e.status, e.reason)
    assert.are.equal("kernel", e.driver)
    assert.is_table(res.view)
    assert.are.equal(16 * MiB, res.view.size)
    assert.are.equal(9 * MiB, res.view.image_size)
    assert.are.equal(9 * MiB - 65536, res.view.rescued)
    assert.are.equal(2, res.view.holes)
    assert.are.equal(small, read(e.mount .. "/a.txt"))
    local data, err = read(e.mount .. "/big.bin")
    assert.is_nil(data)
    assert.matches("Input/output error", tostring(err))
    local log = kmsg_since(mark)
    local dev = e.device:match("loop%d+")
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
    local res = mounted(h, img)
    assert.is_nil(res.view, "a complete map needs no view")
    assert.is_true(mount.unmount(h).ok)
    images.mapfile(img .. ".map", { { 0, 7 * MiB, "+" }, { 7 * MiB, MiB, "*" } }, 7 * MiB)
    local res2 = mounted(h, img)
    assert.is_table(res2.view)
    assert.are.equal(img .. ".map", res2.view.mapfile)
    assert.are.equal(1, res2.view.holes)
    assert.are.equal("sibling\n", read(fs(res2, 0).mount .. "/s.txt"))
  end)

  it("reads mapfiles in decimal, octal and hex with the old two-field status line", function()
    local img = images.ext(work .. "/oldmap.img", { files = { ["o.txt"] = "old map\n" } })
    local map = work .. "/oldmap.log"
    helper.write(map, "# Rescue Logfile. Created by GNU ddrescue version 1.19\n# current_pos  current_status\n"
      .. "0x00500000     +\n#      pos        size  status\n"
      .. "0 6291456 +\n030000000 0x100000 /\n  7340032\t1048576  +  \n")
    local h = new_hash()
    local res = mounted(h, img, { map = map })
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

  it("mounts a partition table whose last partition lies beyond the image end", function()
    local p1 = images.ext(work .. "/tp1.fs", { size_mb = 4, files = { ["ok.txt"] = "ok\n" } })
    local img = images.mbr(work .. "/cut.img", { size_mb = 12,
      parts = { { start_mb = 1, size_mb = 4, image = p1 }, { start_mb = 8, size_mb = 4 } } })
    images.truncate(img, 6 * MiB)
    local h = new_hash()
    local res = mounted(h, img)
    assert.are.equal("mounted", fs(res, 1).status)
    assert.are.equal("truncated", fs(res, 2).status)
    assert.matches("beyond the end", fs(res, 2).reason)
    assert.are.equal(1, res.exit)
    assert.are.equal("ok\n", read(base .. "/" .. h .. "/p1/ok.txt"))
  end)

  it("reports an image with nothing mountable: layout none, exit 1, nothing left behind", function()
    local img = work .. "/noise.img"
    local bytes = {}
    for i = 1, 65536 do bytes[i] = string.char((i * 7919 + 13) % 251) end
    helper.write(img, table.concat(bytes))
    local h = new_hash()
    local res = mounted(h, img)
    assert.are.equal("none", res.layout)
    assert.are.equal(1, res.exit)
    assert.are.equal("skipped", res.filesystems[1].status)
    assert.matches("no partition table and no filesystem", res.filesystems[1].reason)
    assert.are.same({}, mounts(base .. "/" .. h))
    assert.are.same({}, loops_of(img))
    assert.are.equal("unmounted", assert(mount.status(h)).state)
  end)

  it("reports a filesystem the kernel refuses as failed, with the kernel's words", function()
    local img = images.ext(work .. "/unsupported.img", { files = { ["u"] = "u\n" } })
    helper.sh { "debugfs", "-w", "-R", "ssv feature_incompat 0x10002c2", img }
    local h = new_hash()
    local res = mounted(h, img)
    local e = fs(res, 0)
    assert.are.equal("failed", e.status)
    assert.are.equal(1, res.exit)
    assert.are.equal("none", res.layout)
    assert.matches("kernel ext4: Invalid argument", e.reason)
    assert.matches("EXT4%-fs %(loop%d+%)", e.reason)
    assert.is_nil(e.mount)
    assert.are.same({}, mounts(base .. "/" .. h))
    assert.are.same({}, loops_of(img))
  end)

  it("ten concurrent mounts of one medium produce exactly one mount and one loop", function()
    local img = images.ext(work .. "/busy.img", { files = { ["f"] = "f\n" } })
    local h = new_hash()
    finally(function() mount.unmount(h, img) end)
    local procs, outs = {}, {}
    for i = 1, 10 do
      outs[i] = work .. "/concurrent." .. i .. ".json"
      procs[i] = assert(proc.spawn { argv = { HELPER, "mount", h, img }, stdout = outs[i], stderr = "null" })
    end
    for i = 1, 10 do
      local how, code = procs[i]:wait(120)
      assert.are.equal("exit", how)
      assert.are.equal(0, code)
    end
    local first = json.decode(helper.read(outs[1]))
    for i = 2, 10 do
      local o = json.decode(helper.read(outs[i]))
      assert.are.equal(first.filesystems[1].mount, o.filesystems[1].mount)
      assert.are.equal(first.filesystems[1].device, o.filesystems[1].device)
    end
    assert.are.equal(1, #mounts(base .. "/" .. h))
    assert.are.equal(1, #loops_of(img))
    -- the same hash from another image is refused, not silently answered
    local other = images.ext(work .. "/busy2.img", {})
    local res, err, ename = mount.mount(h, other)
    assert.is_nil(res)
    assert.matches("is mounted from", err)
    assert.are.equal("EINVAL", ename)
    assert.are.same({}, loops_of(other))
    assert.is_true(mount.unmount(h, img).ok)
    assert.are.same({}, loops_of(img))
  end)

  it("mounts five different media at the same time, each on its own loop device", function()
    local procs, outs, hashes, imgs = {}, {}, {}, {}
    for i = 1, 5 do
      imgs[i] = images.ext(work .. "/many" .. i .. ".img", { size_mb = 4, files = { ["n.txt"] = "medium " .. i .. "\n" } })
      hashes[i] = new_hash()
    end
    finally(function() for i = 1, 5 do mount.unmount(hashes[i], imgs[i]) end end)
    for i = 1, 5 do
      outs[i] = work .. "/many." .. i .. ".json"
      procs[i] = assert(proc.spawn { argv = { HELPER, "mount", hashes[i], imgs[i] }, stdout = outs[i], stderr = "null" })
    end
    local devices = {}
    for i = 1, 5 do
      local how, code = procs[i]:wait(120)
      assert.are.equal("exit", how)
      assert.are.equal(0, code, helper.read(outs[i]))
      local o = json.decode(helper.read(outs[i]))
      local e = o.filesystems[1]
      assert.is_nil(devices[e.device], "device used twice: " .. e.device)
      devices[e.device] = true
      assert.are.equal("medium " .. i .. "\n", read(e.mount .. "/n.txt"))
    end
  end)

  it("unmount detaches every loop device backed by the image, also stray ones", function()
    local img = images.ext(work .. "/stray.img", { files = { ["f"] = "f\n" } })
    local h = new_hash()
    local res = mounted(h, img)
    assert.are.equal("mounted", fs(res, 0).status)
    helper.sh { "losetup", "-f", "-r", img }     -- a leftover from some other run
    assert.are.equal(2, #loops_of(img))
    assert.are.equal(2, #assert(mount.status(h, img)).loops)
    local un = assert(mount.unmount(h, img))
    assert.is_true(un.ok)
    assert.are.same({}, loops_of(img))
  end)

  it("cleanup detaches its own loops whose image was deleted", function()
    local img = images.ext(work .. "/gone.img", { files = { ["f"] = "f\n" } })
    local h = new_hash()
    local res = mounted(h, img)
    local dev = fs(res, 0).device
    os.remove(img)
    local c = assert(mount.cleanup())
    local found = false
    for _, x in ipairs(c.cleaned) do if x.device == dev then found = true end end
    assert.is_true(found, json.encode(c))
    assert.are.same({}, mounts(base .. "/" .. h))
    assert.are.same({}, loops_of(img))
  end)

  describe("refuses bad input with a clear error and mounts nothing", function()
    local img

    local function refused(args, code, pattern, opts)
      local before = #mounts()
      local r, obj = raw(args, opts)
      assert.are.equal(code, r.code, r.stdout .. r.stderr)
      assert.is_table(obj)
      assert.is_string(obj.error)
      assert.matches(pattern, obj.error)
      assert.matches("ntt%-mount%-helper: ", r.stderr)
      assert.are.equal(before, #mounts())
      if img then assert.are.same({}, loops_of(img)) end
      return obj
    end

    it("non-hex or short hashes", function()
      img = images.ext(work .. "/bad.img", {})
      refused({ "mount", "XYZ0123456789abcdef", img }, 2, "invalid hash")
      refused({ "mount", "0123456789ABCDEF", img }, 2, "invalid hash")
      refused({ "mount", "0123abc", img }, 2, "invalid hash")
      refused({ "status", "../../etc/passwd00" }, 2, "invalid hash")
    end)

    it("free-form options and unknown commands", function()
      refused({ "mount", new_hash(), img, "-o", "rw" }, 2, "usage")
      refused({ "remount", new_hash(), img }, 2, "usage")
      refused({}, 2, "usage")
    end)

    it("a directory, a device, a missing file as image", function()
      refused({ "mount", new_hash(), work }, 2, "not a regular file")
      refused({ "mount", new_hash(), "/dev/null" }, 2, "not a regular file")
      refused({ "mount", new_hash(), work .. "/nope.img" }, 2, "No such file")
    end)

    it("a garbage mapfile", function()
      local map = work .. "/garbage.map"
      helper.write(map, "this is not\na ddrescue map\n")
      refused({ "mount", new_hash(), img, "--map", map }, 2, "not a ddrescue mapfile")
      helper.write(map, "0 +\n0x0 0x100 +\n0x80 0x100 +\n")     -- overlapping blocks
      refused({ "mount", new_hash(), img, "--map", map }, 2, "line 3")
      local res, err, ename = mount.mount(new_hash(), img, { map = map })
      assert.is_nil(res)
      assert.matches("mapfile", err)
      assert.are.equal("EINVAL", ename)
    end)

    it("an image outside the configured roots when called through sudo", function()
      local allowed = helper.tmpdir("allowed")
      local other = helper.tmpdir("other")
      local sbase = helper.tmpdir("sudomnt")
      local inside = images.ext(allowed .. "/in.img", { files = { ["in.txt"] = "in\n" } })
      local outside = images.ext(other .. "/out.img", {})
      local conf = helper.tmpdir("conf") .. "/mount-helper.conf"
      helper.write(conf, "# test\nroot = " .. allowed .. "\nmount_root = " .. sbase .. "\n")
      local env = { SUDO_UID = "65534", NTT_MOUNT_HELPER_CONF = conf }
      img = outside
      refused({ "mount", new_hash(), outside }, 3, "not under a configured root", { env = env })
      -- a symlink inside the root pointing outside does not help
      helper.sh { "ln", "-s", outside, allowed .. "/link.img" }
      refused({ "mount", new_hash(), allowed .. "/link.img" }, 3, "not under a configured root", { env = env })
      -- inside the root it works, under the config's mount_root (not NTT_MOUNT_ROOT)
      local h = new_hash()
      finally(function() raw({ "unmount", h }, { env = env }) end)
      local r, obj = raw({ "mount", h, inside }, { env = env })
      assert.are.equal(0, r.code, r.stdout .. r.stderr)
      assert.are.equal(sbase .. "/" .. h .. "/p0", obj.filesystems[1].mount)
      assert.are.equal("in\n", read(obj.filesystems[1].mount .. "/in.txt"))
      local u = raw({ "unmount", h }, { env = env })
      assert.are.equal(0, u.code)
      -- a group-writable config is refused
      helper.sh { "chmod", "0664", conf }
      img = inside
      refused({ "mount", new_hash(), inside }, 3, "not group/world%-writable", { env = env })
    end)

    it("any caller that is not root, whatever it names", function()
      img = images.ext(work .. "/nobody.img", {})
      helper.sh { "chmod", "0755", work }
      local o = refused({ "mount", new_hash(), img }, 3, "config", { user = "nobody",
        env = { NTT_MOUNT_HELPER_CONF = "/nonexistent/x.conf" } })
      assert.matches("required when called through sudo", o.error)
    end)
  end)
end)
