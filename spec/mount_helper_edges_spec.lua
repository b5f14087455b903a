-- spec/mount_helper_edges_spec.lua: ntt-mount-helper at its edges, on real
-- images and loop devices: partitions past the end, nothing mountable, a
-- filesystem the kernel refuses, concurrent callers, stray and orphaned
-- loops, the --timeout argument, and every refusal of bad input.
-- What gets mounted and how: mount_helper_spec.lua.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local mh = require "spec.support.mounthelper"
local json = require "ntt.json"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"

local MiB = images.MiB

describe("ntt-mount-helper at its edges", function()
  -- for this file's specs only: later spec files see the defaults again
  local t, why = mh.setup("mhe", teardown)
  if not t then it("runs", function() pending(why) end) return end
  local HELPER, base, work = t.HELPER, t.base, t.work
  local new_hash, raw, mounts, loops_of, fs, read, mounted =
    t.new_hash, t.raw, t.mounts, t.loops_of, t.fs, t.read, t.mounted
  local mount = require "ntt.mount"


  it("mounts a partition table whose last partition lies beyond the image end", function()
    local p1 = images.ext(work .. "/tp1.fs", { size_mb = 4, files = { ["ok.txt"] = "ok\n" } })
    local img = images.mbr(work .. "/cut.img", { size_mb = 12,
      parts = { { start_mb = 1, size_mb = 4, image = p1 }, { start_mb = 8, size_mb = 4 } } })
    images.truncate(img, 6 * MiB)
    local h = new_hash()
    local res = mounted(finally, h, img)
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
    local res = mounted(finally, h, img)
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
    local res = mounted(finally, h, img)
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
    local res = mounted(finally, h, img)
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
    local res = mounted(finally, h, img)
    local dev = fs(res, 0).device
    os.remove(img)
    local c = assert(mount.cleanup())
    local found = false
    for _, x in ipairs(c.cleaned) do if x.device == dev then found = true end end
    assert.is_true(found, json.encode(c))
    assert.are.same({}, mounts(base .. "/" .. h))
    assert.are.same({}, loops_of(img))
  end)

  it("hands a policy's mount.timeout to the helper as --timeout (sudo drops the environment)", function()
    local url = helper.db_url()
    if not url then return pending("no test database") end
    local conn = assert(require("ntt.core.pg").connect(url))
    finally(function() conn:close() end)
    assert(require("ntt.db").migrate(conn))
    local log = work .. "/argv.log"
    local wrapper = work .. "/recording-helper.sh"
    helper.write(wrapper, ("#!/bin/sh\nprintf '%%s\\n' \"$@\" > '%s'\nexec '%s' \"$@\"\n"):format(log, HELPER))
    helper.sh { "chmod", "0755", wrapper }
    util.setenv("NTT_MOUNT_HELPER", wrapper)
    finally(function() util.setenv("NTT_MOUNT_HELPER", HELPER) end)
    local stage = require "ntt.stage.mount"
    -- a directory as image: the helper refuses it after reading its arguments
    local function run(timeout)
      local ctx = { medium = { hash = new_hash(), image_path = work, kind = "image" },
                    policy = { mount = { timeout = timeout } }, db = conn, problems = {} }
      local ok, err = stage.run(ctx)
      assert.is_nil(ok)
      local words = {}
      for w in helper.read(log):gmatch("[^\n]+") do words[#words + 1] = w end
      return err, words
    end
    local err, words = run(2.5)
    assert.matches("not a regular file", err)
    assert.are.same({ "--timeout", "3" }, { words[#words - 1], words[#words] })
    err = run(7200)
    assert.matches("%-%-timeout wants whole seconds from 1 to 3600, not '7200'", err)
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

    it("a --timeout that is not whole seconds from 1 to 3600", function()
      img = images.ext(work .. "/timeout.img", {})
      for _, v in ipairs { "0", "3601", "abc", "-5", "2.5", "", "99999999999", "10s", "inf" } do
        refused({ "mount", new_hash(), img, "--timeout", v }, 2, "%-%-timeout wants whole seconds from 1 to 3600")
      end
      refused({ "mount", new_hash(), img, "--timeout" }, 2, "usage")
      refused({ "mount", new_hash(), img, "--timeout", "5", "--timeout", "6" }, 2, "usage")
      refused({ "status", new_hash(), "--timeout", "-nan" }, 2, "%-%-timeout wants")
      local res, err, ename = mount.mount(new_hash(), img, { timeout = 1 / 0 })
      assert.is_nil(res)
      assert.matches("%-%-timeout wants whole seconds", err)
      assert.are.equal("EINVAL", ename)
      assert.has_error(function() mount.mount(new_hash(), img, { timeout = "10" }) end)
      -- in range it is taken, wherever it stands among the arguments
      local h = new_hash()
      local r = raw({ "status", h, "--timeout", "3600" })
      assert.are.equal(1, r.code, r.stderr)
      r = raw({ "mount", h, "--timeout", "1", img })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal(0, raw({ "unmount", h, img, "--timeout", "30" }).code)
    end)

    it("a directory, a device, a missing file as image", function()
      refused({ "mount", new_hash(), work }, 2, "not a regular file")
      refused({ "mount", new_hash(), "/dev/null" }, 2, "not a regular file")
      refused({ "mount", new_hash(), work .. "/nope.img" }, 2, "No such file")
    end)

    it("a garbage mapfile", function()
      local map = work .. "/garbage.map"
      helper.write(map, "this is not\na ddrescue map\n")
      refused({ "mount", new_hash(), img, "--map", map }, 2, "line 1: status line: bad current position")
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
