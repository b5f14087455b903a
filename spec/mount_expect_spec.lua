-- spec/mount_expect_spec.lua: the image a run mounts is the file it hashed.
-- media.identify keeps the stat it took before reading the image (and found
-- again after); the mount helper, given it (--expect), attaches that very
-- file or nothing: an image replaced at its path, or written in place,
-- between identification and mount is refused with exit 6 (ESTALE), and
-- no loop device is left.  One written while it is hashed gets no hash.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local mh = require "spec.support.mounthelper"

describe("ntt-mount-helper --expect", function()
  local t, why = mh.setup("mx", teardown)
  if not t then it("runs", function() pending(why) end) return end
  local work, loops_of, fs, read = t.work, t.loops_of, t.fs, t.read
  local media = require "ntt.media"
  local mount = require "ntt.mount"

  local function two_images(tag)
    local a = images.ext(work .. "/" .. tag .. "-a.img", { size_mb = 4, files = { ["which.txt"] = "A\n" } })
    local b = images.ext(work .. "/" .. tag .. "-b.img", { size_mb = 4, files = { ["which.txt"] = "B\n" } })
    return a, b
  end

  it("mounts the image identify read, and says which stat it holds", function()
    local a = two_images("same")
    local ident = assert(media.identify(a))
    assert.is_table(ident.stat)
    assert.are.equal(ident.size, ident.stat.size)
    local res = t.mounted(finally, ident.hash, ident.image_path, { expect = ident.stat })
    assert.are.equal(0, res.exit)
    assert.are.equal("A\n", read(fs(res, 0).mount .. "/which.txt"))
  end)

  it("refuses an image replaced at its path after it was identified: ESTALE, nothing attached", function()
    local a, b = two_images("swap")
    local ident = assert(media.identify(a))
    helper.sh { "mv", "-f", b, a }             -- another file, same path, same size
    local res, err, ename = mount.mount(ident.hash, ident.image_path, { expect = ident.stat })
    finally(function() mount.unmount(ident.hash, ident.image_path) end)
    assert.is_nil(res)
    assert.are.equal("ESTALE", ename)
    assert.matches("changed since it was identified", err)
    assert.matches("another file", err)
    assert.matches(ident.hash, err, 1, true)
    assert.are.same({}, loops_of(a))
    -- without the expectation (what a run did before) the other file is mounted
    local other = t.mounted(finally, ident.hash, ident.image_path)
    assert.are.equal("B\n", read(fs(other, 0).mount .. "/which.txt"))
  end)

  it("refuses an image written in place, even with its mtime set back", function()
    local a = two_images("write")
    local ident = assert(media.identify(a))
    local mtime = helper.sh({ "stat", "-c", "%y", a }).stdout:gsub("%s+$", "")
    helper.sh { "dd", "if=/dev/zero", "of=" .. a, "bs=1", "count=1", "seek=3000000", "conv=notrunc", "status=none" }
    helper.sh { "touch", "-d", mtime, a }
    local res, err, ename = mount.mount(ident.hash, ident.image_path, { expect = ident.stat })
    finally(function() mount.unmount(ident.hash, ident.image_path) end)
    assert.is_nil(res)
    assert.are.equal("ESTALE", ename)
    assert.matches("written since", err)
    assert.are.same({}, loops_of(a))
  end)

  it("an image written while it is hashed gets no hash (EAGAIN), one left still does", function()
    local img = work .. "/busy.img"
    helper.sh { "truncate", "-s", "1536M", img }   -- mostly holes: hashed at memory speed, ~0.3 s
    local f = assert(io.open(img, "r+b"))
    f:seek("set", 0)
    f:write("head")
    f:close()
    -- a writer touching it every 5 ms for as long as the hash could take
    local w = assert(require("ntt.core.proc").spawn {
      argv = { "sh", "-c", 'i=0; while [ $i -lt 2000 ]; do touch "$0"; sleep 0.005; i=$((i+1)); done', img } })
    finally(function() w:kill(9); w:wait(5) end)
    local ident, err, code = media.identify(img)
    assert.is_nil(ident)
    assert.equal("EAGAIN", code)
    assert.matches("changed while it was hashed", err)
    w:kill(9)
    w:wait(5)
    ident = assert(media.identify(img))
    assert.is_table(ident.stat)
  end)

  it("refuses a malformed expectation as a usage error, and checks its argument in Lua", function()
    local a = two_images("bad")
    for _, bad in ipairs { "1:2:3:4", "1:2:3:4:5:6", "a:2:3:4:5", "1:2:3:4:", "-1:2:3:4:5", "1:2:3:4:99999999999999999999" } do
      local r, obj = t.raw { "mount", t.new_hash(), a, "--expect", bad }
      assert.are.equal(2, r.code, bad)
      assert.matches("expect", obj.error, 1, true)
    end
    assert.has_error(function() mount.mount(t.new_hash(), a, { expect = "1:2:3:4:5" }) end)
    assert.has_error(function() mount.mount(t.new_hash(), a, { expect = { dev = 1, ino = 2, size = 3 } }) end)
    assert.are.same({}, loops_of(a))
  end)
end)
