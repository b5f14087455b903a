-- spec/verify_spec.lua: `ntt verify` end to end -- real images, a real store:
-- a blob with a byte flipped is reported with every path using it, lost
-- while no image can give it back, repaired from the image once one can; a
-- byte flipped in an archive and a tree link replaced by a copy are
-- reported.  (--medium throughout: the suite's database holds the media of
-- other specs, whose blobs are in other stores.)
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local fs = require "ntt.core.fs"
local hash = require "ntt.core.hash"
local json = require "ntt.json"

local tag, policy, medium_of = runs.tag, runs.policy, runs.medium_of
local run, db = runs.run, runs.db

local function blob_path(home, data)
  return home .. "/store/by-hash/" .. hash.sum(data):gsub("^(..)(..)", "%1/%2/%1%2")
end

local problems_of = runs.problems

local function flip(path, offset)
  local b = helper.bytes_at(path, offset, 1)
  helper.bytes_at(path, offset, 1, string.char(b:byte() ~ 0x20))
end

describe("ntt verify", function()
  local ok, why = runs.can_run()
  if not ok then
    it("re-hashes blobs and repairs them", function() pending(why) end)
    return
  end

  after_each(runs.unmount)

  it("reports a flipped byte with every path using the blob, exit 1 while lost, repairs it from the image", function()
    local dir = helper.tmpdir("verify")
    local shared = ("shared " .. tag .. " "):rep(3000)
    local img = images.ext(dir .. "/disk.img", { size_mb = 8, files = {
      ["a.txt"] = shared, ["sub/same.txt"] = shared, ["other.txt"] = "other " .. tag } })
    local home = dir .. "/home"
    local pol = policy(dir, '{ stages = { "identify", "inspect", "mount", "enumerate", "copy", "tree", "verify", "unmount" } }')
    local r = run(home, { "-v", pol, img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("verified.*blobs=2", r.stderr)
    local h = medium_of(img)
    local bid = hash.sum(shared)
    local b = assert(db():exec("SELECT last_verified IS NOT NULL AS v, lost_at FROM blob WHERE blobid = $1", bid))[1]
    assert.is_true(b.v)
    local verify = function() return runs.ntt(home, { "verify", "--medium", h }) end
    r = verify()
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("verified 2 blobs .* 2 good, 0 repaired, 0 lost", r.stdout)
    -- a byte of the blob flipped; the image away: reported, lost, exit 1
    flip(blob_path(home, shared), 1000)
    assert(os.rename(img, img .. ".away"))
    r = verify()
    assert.equal(1, r.code, r.stderr .. r.stdout)
    assert.matches("blob " .. bid, r.stdout, 1, true)
    assert.matches("used by " .. h .. " (disk) p0/a.txt\n", r.stdout, 1, true)
    assert.matches("used by " .. h .. " (disk) p0/sub/same.txt\n", r.stdout, 1, true)
    assert.matches("LOST:", r.stdout, 1, true)
    local p = problems_of(h)
    assert.equal(1, #p.blob_mismatch)
    assert.equal(bid, p.blob_mismatch[1].blob)
    assert.same({ "p0/a.txt", "p0/sub/same.txt" }, p.blob_mismatch[1].paths)
    b = assert(db():exec("SELECT lost_at IS NOT NULL AS lost FROM blob WHERE blobid = $1", bid))[1]
    assert.is_true(b.lost)
    -- the image back: repaired from it, the tree's links too
    assert(os.rename(img .. ".away", img))
    r = verify()
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("REPAIRED from image " .. h .. " p0/", r.stdout, 1, true)
    assert.equal(shared, helper.read(blob_path(home, shared)))
    assert.equal(shared, helper.read(home .. "/tree/" .. h .. "/p0/a.txt"))
    assert.equal(shared, helper.read(home .. "/tree/" .. h .. "/p0/sub/same.txt"))
    assert.equal(1, #fs.readdir(home .. "/store/quarantine"))
    p = problems_of(h)
    assert.is_nil(p.blob_mismatch)
    assert.equal(bid, p.blob_repaired[1].blob)
    b = assert(db():exec("SELECT lost_at FROM blob WHERE blobid = $1", bid))[1]
    assert.is_nil(b.lost_at)
    -- once more: all good
    r = verify()
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("2 good, 0 repaired, 0 lost; 1 media checked, 0 tree paths wrong", r.stdout, 1, true)
    -- the blob gone from the store: repaired, and the tree links made to it
    assert(os.remove(blob_path(home, shared)))
    r = verify()
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("1 good, 1 repaired, 0 lost; 1 media checked, 0 tree paths wrong", r.stdout, 1, true)
    local ino = assert(fs.stat(blob_path(home, shared))).ino
    assert.equal(ino, assert(fs.stat(home .. "/tree/" .. h .. "/p0/a.txt")).ino)
    assert.equal(ino, assert(fs.stat(home .. "/tree/" .. h .. "/p0/sub/same.txt")).ino)
  end)

  it("reports a byte flipped in the archive and a tree link replaced by a copy", function()
    local dir = helper.tmpdir("verifyar")
    local img = images.ext(dir .. "/disk.img", { size_mb = 8, files = {
      ["a.txt"] = "alpha " .. tag, ["b/c.bin"] = ("archive " .. tag .. " "):rep(20000) } })
    local home = dir .. "/home"
    local r = run(home, { policy(dir, '{ stages = { "identify", "inspect", "mount", "enumerate", "copy", "tree", '
                                      .. '"unmount", "archive" } }'), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local h = medium_of(img)
    r = runs.ntt(home, { "verify", "--medium", h, "--json" })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local rep = json.decode(r.stdout)
    assert.equal(1, #rep.archives)
    assert.is_true(rep.archives[1].ok)
    -- a tree link replaced by a copy of the same content
    local t = home .. "/tree/" .. h .. "/p0/a.txt"
    assert(os.remove(t))
    helper.write(t, "alpha " .. tag)
    -- a byte flipped in the archive
    local arch = home .. "/archive/" .. h .. ".tar.zst"
    flip(arch, math.floor(assert(fs.stat(arch)).size / 2))
    r = runs.ntt(home, { "verify", "--medium", h })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    assert.matches("tree " .. h .. " p0/a.txt: not a link to its blob", r.stdout, 1, true)
    assert.matches("archive " .. h .. " (" .. arch .. "):", r.stdout, 1, true)
    local p = problems_of(h)
    assert.equal(1, p.tree_links_bad.count)
    assert.equal(arch, p.archive_mismatch.path)
    -- the link put back: only the archive is left
    assert(os.remove(t))
    helper.sh { "ln", blob_path(home, "alpha " .. tag), t }
    r = runs.ntt(home, { "verify", "--medium", h })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    assert.is_nil(problems_of(h).tree_links_bad)
    assert.matches("0 tree paths wrong, 1 of 1 archives wrong", r.stdout, 1, true)
  end)
  it("the verify stage repairs a blob damaged after the copy from the mounted image, and a rerun reads nothing", function()
    local dir = helper.tmpdir("verifystage")
    local content = ("stage " .. tag .. " "):rep(5000)
    local img = images.ext(dir .. "/disk.img", { size_mb = 8, files = { ["x/y.txt"] = content, ["z.txt"] = "z " .. tag } })
    local home = dir .. "/home"
    local bp = blob_path(home, content)
    -- a byte of the blob flipped between copy and verify
    local pol = policy(dir, ([[{ stages = { "identify", "inspect", "mount", "enumerate", "copy",
      function(ctx)
        return require("ntt.core.proc").run { argv = { "sh", "-c",
          "printf '#' | dd of=\"$1\" bs=1 seek=7 conv=notrunc 2>/dev/null", "-", %q }, timeout = 20 }.code == 0
      end, "verify", "unmount" } }]]):format(bp))
    local r = run(home, { "-v", pol, img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("blob_repaired", r.stderr, 1, true)
    assert.matches("verified.*blobs=2.*lost=0.*repaired=1", r.stderr)
    assert.equal(content, helper.read(bp))
    local h = medium_of(img)
    local p = problems_of(h)
    assert.is_nil(p.blob_mismatch)
    assert.equal(hash.sum(content), p.blob_repaired[1].blob)
    assert.same({ "p0/x/y.txt" }, p.blob_repaired[1].paths)
    local v = assert(db():exec("SELECT verified_at IS NOT NULL AS v FROM medium WHERE medium_hash = $1", h))[1]
    assert.is_true(v.v)
    -- again, without the damage: nothing left to read
    r = run(home, { "-v", policy(dir, '{ stages = { "identify", "inspect", "mount", "enumerate", "copy", "verify", "unmount" } }'), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("verified.*blobs=0", r.stderr)
  end)
end)
