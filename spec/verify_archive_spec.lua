-- spec/verify_archive_spec.lua: `ntt verify` with archives and second
-- copies -- a blob whose medium image is gone is repaired from the medium's
-- verified archive (unpacked under the data root, mounted, removed again);
-- a second copy of a blob (blob_copy) is re-hashed and put right.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local fs = require "ntt.core.fs"
local hash = require "ntt.core.hash"

local tag, policy, medium_of = runs.tag, runs.policy, runs.medium_of
local run, db = runs.run, runs.db

local function blob_path(home, data)
  return home .. "/store/by-hash/" .. hash.sum(data):gsub("^(..)(..)", "%1/%2/%1%2")
end

local function flip(path, offset)
  local b = helper.bytes_at(path, offset, 1)
  helper.bytes_at(path, offset, 1, string.char(b:byte() ~ 0x20))
end

describe("ntt verify with archives", function()
  local ok, why = runs.can_run()
  if not ok then
    it("repairs from an archive", function() pending(why) end)
    return
  end

  after_each(runs.unmount)

  it("repairs a flipped blob from the verified archive once the image is removed, exit 0 after", function()
    local dir = helper.tmpdir("verifyunpack")
    local content = ("unpacked " .. tag .. " "):rep(4000)
    local img = images.ext(dir .. "/disk.img", { size_mb = 8, files = {
      ["docs/a.txt"] = content, ["b.txt"] = "b " .. tag } })
    images.mapfile(dir .. "/disk.map", { { 0, 8 * images.MiB, "+" } })
    local home = dir .. "/home"
    local h = medium_of(img)
    local r = run(home, { policy(dir, '{ stages = { "identify", "inspect", "mount", "enumerate", "copy", "tree", '
                                      .. '"unmount", "archive" }, archive = { remove_sources = true } }'), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.is_nil(fs.stat(img), "the image was removed after its verified archive")
    local arch = home .. "/archive/" .. h .. ".tar.zst"
    assert.truthy(fs.stat(arch))
    local bp = blob_path(home, content)
    flip(bp, 777)
    -- a verify killed after it unpacked and mounted the archive: its set and
    -- its mount are swept; a set of a live process (init's pid) stays
    local dead = helper.gone_pid()
    local stale, live = ("%s/unpack/%s.%d"):format(home, h, dead), ("%s/unpack/%s.1"):format(home, h)
    helper.sh { "mkdir", "-p", stale, live }
    helper.sh { "tar", "--zstd", "-xf", arch, "-C", stale }
    local sm = assert(require("ntt.mount").mount(h, stale .. "/disk.img", { map = stale .. "/disk.map" }))
    assert.is_true(sm.ok)
    r = runs.ntt(home, { "verify", "--medium", h })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("REPAIRED from archive " .. arch .. " p0/docs/a.txt", r.stdout, 1, true)
    assert.is_nil(fs.stat(stale), "the killed verify's set is gone")
    assert.same({ h .. ".1" }, fs.readdir(home .. "/unpack"))
    fs.rmtree(live)
    assert.equal(content, helper.read(bp))
    assert.equal(content, helper.read(home .. "/tree/" .. h .. "/p0/docs/a.txt"))
    assert.equal(assert(fs.stat(bp)).ino, assert(fs.stat(home .. "/tree/" .. h .. "/p0/docs/a.txt")).ino)
    local p = runs.problems(h)
    assert.equal(hash.sum(content), p.blob_repaired[1].blob)
    assert.equal("archive " .. arch .. " p0/docs/a.txt", p.blob_repaired[1].from)
    -- nothing unpacked is left, nothing of the medium mounted
    assert.same({}, fs.readdir(home .. "/unpack"))
    for _, mi in ipairs(fs.mountinfo()) do assert.is_nil(mi.target:find(h, 1, true), mi.target) end
    -- again: all good
    r = runs.ntt(home, { "verify", "--medium", h })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("2 good, 0 repaired, 0 lost", r.stdout, 1, true)
  end)

  it("does not unpack an archive that no longer reads as recorded: the blob is lost", function()
    local dir = helper.tmpdir("verifyunpackbad")
    local content = ("badarch " .. tag .. " "):rep(4000)
    local img = images.ext(dir .. "/disk.img", { size_mb = 8, files = { ["a.txt"] = content } })
    local home = dir .. "/home"
    local h = medium_of(img)
    local r = run(home, { policy(dir, '{ stages = { "identify", "inspect", "mount", "enumerate", "copy", '
                                      .. '"unmount", "archive" }, archive = { remove_sources = true } }'), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local arch = home .. "/archive/" .. h .. ".tar.zst"
    flip(arch, assert(fs.stat(arch)).size // 2)
    flip(blob_path(home, content), 10)
    r = runs.ntt(home, { "verify", "--medium", h })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    assert.matches("LOST: medium " .. h .. ": its image " .. img .. " is not there; ", r.stdout, 1, true)
    assert.same({}, fs.readdir(home .. "/unpack"))
  end)

  it("re-hashes the second copies of a blob at the link limit; a bad one is made again and the tree moved to it", function()
    local dir = helper.tmpdir("verifycopies")
    local same = ("same " .. tag .. " "):rep(500)
    local files = {}
    for i = 1, 7 do files[("d/f%d.txt"):format(i)] = same end
    local img = images.ext(dir .. "/disk.img", { size_mb = 8, files = files })
    local home = dir .. "/home"
    local h = medium_of(img)
    local r = run(home, { policy(dir, '{ stages = { "identify", "inspect", "mount", "enumerate", "copy", "tree", '
                                      .. '"unmount" }, tree = { link_max = 3 } }'), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local bid = hash.sum(same)
    local copies = db():exec("SELECT copy_no FROM blob_copy WHERE blobid = $1 ORDER BY copy_no", bid)
    assert.is_true(#copies >= 2, "second copies made")
    local cp = ("%s/store/copies/%s/%s/%s.1"):format(home, bid:sub(1, 2), bid:sub(3, 4), bid)
    local old = assert(fs.stat(cp)).ino
    local linked = {}
    for i = 1, 7 do
      local t = ("%s/tree/%s/p0/d/f%d.txt"):format(home, h, i)
      if assert(fs.stat(t)).ino == old then linked[#linked + 1] = t end
    end
    assert.is_true(#linked >= 1)
    flip(cp, 100)
    -- reported, not repaired when asked not to: exit 1
    r = runs.ntt(home, { "verify", "--medium", h, "--no-repair" })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    assert.matches("copy 1 of blob " .. bid .. " (" .. cp .. "): reads as", r.stdout, 1, true)
    assert.equal(1, runs.problems(h).blob_copy_bad.count)
    r = runs.ntt(home, { "verify", "--medium", h })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("REPAIRED: made again from the blob, " .. #linked .. " tree links moved to it", r.stdout, 1, true)
    assert.equal(same, helper.read(cp))
    local new = assert(fs.stat(cp)).ino
    assert.are_not.equal(old, new)
    for _, t in ipairs(linked) do
      assert.equal(new, assert(fs.stat(t)).ino)
      assert.equal(same, helper.read(t))
    end
    local p = runs.problems(h)
    assert.is_nil(p.blob_copy_bad)
    assert.equal(bid, p.blob_copy_repaired[1].blob)
    r = runs.ntt(home, { "verify", "--medium", h })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("0 blob copies wrong", r.stdout, 1, true)
  end)
end)
