-- spec/mount_helper_race_spec.lua: ntt-mount-helper in restricted (sudo)
-- mode against a caller who changes the names it was given while it runs:
-- a directory swapped for a symbolic link out of the roots, a mapfile
-- swapped for a FIFO, and FIFOs, devices and directories named as image or
-- mapfile, which are refused without being opened.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local mh = require "spec.support.mounthelper"
local proc = require "ntt.core.proc"

describe("ntt-mount-helper against names that change under it", function()
  local t, why = mh.setup("mhr", teardown)
  if not t then it("runs", function() pending(why) end) return end
  local new_hash, raw, read, loops_of = t.new_hash, t.raw, t.read, t.loops_of

  -- A restricted (sudo) setup: one allowed root, a mount root, a config.
  local function restricted()
    local s = { allowed = helper.tmpdir("mhr-allowed"), other = helper.tmpdir("mhr-other"),
                base = helper.tmpdir("mhr-mnt") }
    local conf = helper.tmpdir("mhr-conf") .. "/mount-helper.conf"
    helper.write(conf, "root = " .. s.allowed .. "\nmount_root = " .. s.base .. "\n")
    s.env = { SUDO_UID = "65534", NTT_MOUNT_HELPER_CONF = conf }
    return s
  end

  -- Runs build/ntt spec/support/exchange_loop.lua a b until the test ends.
  local function swapping(finally, a, b)
    local p = assert(proc.spawn { argv = { helper.ntt, "spec/support/exchange_loop.lua", a, b },
                                  stdout = "null" })
    local stopped = false
    local function stop()
      if stopped then return end
      stopped = true
      p:kill(9)
      p:wait(10)
    end
    finally(stop)
    return stop
  end

  local function race(env_extra)
    return function()
      local s = restricted()
      for k, v in pairs(env_extra or {}) do s.env[k] = v end
      helper.sh { "mkdir", s.allowed .. "/d", s.other .. "/d" }
      local inside = images.ext(s.allowed .. "/d/disk.img", { label = "INSIDE", files = { ["in.txt"] = "in\n" } })
      local outside = images.ext(s.other .. "/d/disk.img", { label = "OUTSIDE", files = { ["out.txt"] = "out\n" } })
      helper.sh { "chmod", "0600", outside }
      helper.sh { "ln", "-s", s.other .. "/d", s.allowed .. "/s" }
      local stop = swapping(finally, s.allowed .. "/d", s.allowed .. "/s")
      local seen, escaped = { mounted = 0 }, {}
      local h
      finally(function() if h then raw({ "unmount", h }, { env = s.env }) end end)
      for _ = 1, 200 do
        h = new_hash()
        local r, obj = raw({ "mount", h, s.allowed .. "/d/disk.img", "--timeout", "30" }, { env = s.env })
        assert.is_table(obj, r.stdout .. r.stderr)
        local why
        for _, e in ipairs(obj.filesystems or {}) do
          if e.label == "OUTSIDE" then why = "probed the outside image" end
          if e.status == "mounted" and read(e.mount .. "/out.txt") then why = "mounted the outside image" end
        end
        if r.code == 0 then
          seen.mounted = seen.mounted + 1
          if read(obj.filesystems[1].mount .. "/in.txt") ~= "in\n" then why = why or "mounted something else" end
        else
          local key = r.code .. " " .. tostring(obj.error):gsub("/tmp/%S+", "…")
          seen[key] = (seen[key] or 0) + 1
        end
        if why then escaped[#escaped + 1] = h .. ": " .. why end
        local u = raw({ "unmount", h }, { env = s.env })
        assert.are.equal(0, u.code, u.stdout .. u.stderr)
      end
      stop()
      local summary = {}
      for k, n in pairs(seen) do summary[#summary + 1] = n .. " × " .. k end
      summary = table.concat(summary, "\n")
      assert.are.same({}, escaped, summary)
      assert.are.same({}, loops_of(outside))
      assert.are.same({}, loops_of(inside))
      -- both outcomes happened: the race was real, and the image inside still mounts
      assert.is_true(seen.mounted > 0, "never mounted the image inside the root:\n" .. summary)
      local refused = 0
      for k, n in pairs(seen) do if k ~= "mounted" then refused = refused + n end end
      assert.is_true(refused > 0, "the swap never hit a helper run:\n" .. summary)
    end
  end

  it("a directory swapped for a symbolic link out of the root, 200 tries: never the outside image", race())

  it("the same without openat2 (the walk one component at a time), 200 tries", race {
    NTT_MOUNT_HELPER_NO_OPENAT2 = "1" })

  -- The helper run with a deadline: a refusal must come back, never a hang.
  local function bounded(args, env)
    local argv = { t.HELPER }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local r = assert(proc.run { argv = argv, env = env, timeout = 20 })
    assert.is_false(r.timed_out, "the helper hung: " .. table.concat(args, " "))
    return r
  end

  it("a mapfile swapped for a FIFO: mounted or refused as not a regular file, never a hang", function()
    local s = restricted()
    local img = images.ext(s.allowed .. "/disk.img", { files = { ["in.txt"] = "in\n" } })
    images.mapfile(s.allowed .. "/disk.map", { { 0, 8 * images.MiB, "+" } })
    helper.sh { "mkfifo", s.allowed .. "/fifo" }
    local stop = swapping(finally, s.allowed .. "/disk.map", s.allowed .. "/fifo")
    local seen = {}
    for _ = 1, 40 do
      local h = new_hash()
      local r = bounded({ "mount", h, img, "--map", s.allowed .. "/disk.map" }, s.env)
      if r.code == 0 then
        seen.mounted = (seen.mounted or 0) + 1
      else
        assert.are.equal(2, r.code, r.stdout .. r.stderr)
        assert.matches("mapfile /%S+ is not a regular file", r.stderr)
        seen.refused = (seen.refused or 0) + 1
      end
      assert.are.equal(0, bounded({ "unmount", h }, s.env).code)
    end
    stop()
    assert.are.same({}, loops_of(img))
    assert.is_truthy(seen.mounted and seen.refused, "both outcomes: " .. tostring(seen.mounted) .. "/" .. tostring(seen.refused))
  end)

  it("a FIFO as image, as mapfile, as the image's sibling map: refused without being opened", function()
    local s = restricted()
    local img = images.ext(s.allowed .. "/disk.img", {})
    local fifo = s.allowed .. "/fifo"
    helper.sh { "mkfifo", fifo }
    -- a writer blocks in open until someone opens the FIFO for reading
    local writer = assert(proc.spawn { argv = { "sh", "-c", "echo x > " .. fifo }, stdout = "null" })
    finally(function() writer:kill(9); writer:wait(10) end)
    local r = bounded({ "mount", new_hash(), fifo }, s.env)
    assert.are.equal(2, r.code)
    assert.matches("image /%S+/fifo is not a regular file", r.stderr)
    r = bounded({ "mount", new_hash(), img, "--map", fifo }, s.env)
    assert.are.equal(2, r.code)
    assert.matches("mapfile /%S+/fifo is not a regular file", r.stderr)
    r = bounded({ "mount", new_hash(), img, "--map", fifo })   -- root calling directly: the same
    assert.are.equal(2, r.code)
    assert.matches("mapfile /%S+/fifo is not a regular file", r.stderr)
    helper.sh { "ln", fifo, s.allowed .. "/disk.map" }         -- the sibling <stem>.map, a FIFO
    r = bounded({ "mount", new_hash(), img }, s.env)
    assert.are.equal(2, r.code)
    assert.matches("mapfile /%S+/disk.map is not a regular file", r.stderr)
    -- nobody ever opened it: the writer still waits
    local done = writer:wait(0.3)
    assert.is_nil(done, "the helper opened the FIFO")
    assert.are.same({}, loops_of(img))
  end)

  it("a device node or a directory as image or mapfile: refused before any read", function()
    local s = restricted()
    local img = images.ext(s.allowed .. "/disk.img", {})
    helper.sh { "mknod", s.allowed .. "/null", "c", "1", "3" }
    helper.sh { "mknod", s.allowed .. "/loopdev", "b", "7", "0" }
    helper.sh { "mkdir", s.allowed .. "/dir" }
    for _, name in ipairs { "null", "loopdev", "dir" } do
      local p = s.allowed .. "/" .. name
      local r = bounded({ "mount", new_hash(), p }, s.env)
      assert.are.equal(2, r.code, r.stderr)
      assert.matches("image /%S+/" .. name .. " is not a regular file", r.stderr)
      r = bounded({ "mount", new_hash(), img, "--map", p }, s.env)
      assert.are.equal(2, r.code, r.stderr)
      assert.matches("mapfile /%S+/" .. name .. " is not a regular file", r.stderr)
    end
    assert.are.same({}, loops_of(img))
  end)

  it("a link inside the root to an image inside the root still mounts", function()
    local s = restricted()
    helper.sh { "mkdir", s.allowed .. "/d" }
    local img = images.ext(s.allowed .. "/d/disk.img", { files = { ["in.txt"] = "in\n" } })
    helper.sh { "ln", "-s", "d/disk.img", s.allowed .. "/alias.img" }
    local h = new_hash()
    finally(function() bounded({ "unmount", h }, s.env) end)
    local r, obj = raw({ "mount", h, s.allowed .. "/alias.img" }, { env = s.env })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.are.equal(img, obj.image)
    assert.are.equal("in\n", read(obj.filesystems[1].mount .. "/in.txt"))
    assert.are.equal(0, bounded({ "unmount", h }, s.env).code)
  end)

  it("a mount root below a directory others may rename in, or below a link: refused", function()
    local s = restricted()
    local img = images.ext(s.allowed .. "/disk.img", {})
    local open = helper.tmpdir("mhr-open")
    helper.sh { "chmod", "0777", open }                   -- world-writable, not sticky
    local conf = helper.tmpdir("mhr-conf") .. "/mount-helper.conf"
    local env = { SUDO_UID = "65534", NTT_MOUNT_HELPER_CONF = conf }
    helper.write(conf, "root = " .. s.allowed .. "\nmount_root = " .. open .. "/mnt\n")
    local r = bounded({ "mount", new_hash(), img }, env)
    assert.are.equal(3, r.code, r.stdout .. r.stderr)
    assert.matches("must be a directory owned by root and not group/world%-writable unless sticky", r.stderr)
    helper.sh { "ln", "-s", s.base, s.allowed .. "/link" }
    helper.write(conf, "root = " .. s.allowed .. "\nmount_root = " .. s.allowed .. "/link/mnt\n")
    r = bounded({ "mount", new_hash(), img }, env)
    assert.are.equal(3, r.code, r.stdout .. r.stderr)
    assert.matches("/link %(above the mount root .*%) is a symbolic link: not followed", r.stderr)
    assert.are.same({}, loops_of(img))
    -- sticky (like /tmp) is fine: nobody renames root's entries there
    helper.sh { "chmod", "1777", open }
    helper.write(conf, "root = " .. s.allowed .. "\nmount_root = " .. open .. "/mnt\n")
    local h = new_hash()
    finally(function() bounded({ "unmount", h }, env) end)
    r = bounded({ "mount", h, img }, env)
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.are.equal(0, bounded({ "unmount", h }, env).code)
  end)
end)
