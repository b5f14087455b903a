-- spec/identity_spec.lua: an image medium is named by its whole content
-- (docs/media.md, "Identity"): a clone with 4 KiB changed in the middle is
-- another medium, a byte-identical copy is the same medium at a second
-- location, and the content hash is computed once per unchanged file.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local util = require "ntt.core.util"
local fs = require "ntt.core.fs"
local json = require "ntt.json"

local MiB = images.MiB
local tag, policy, medium_of = runs.tag, runs.policy, runs.medium_of

local run, db = runs.run, runs.db


local function medium(h)
  local r = assert(db():exec([[
    SELECT medium_human, image_path, map_path, sampled_hash, problems::text AS problems,
           copy_done IS NOT NULL AS copied FROM medium WHERE medium_hash = $1]], h))
  return r[1]
end

local function locations(h)
  return assert(db():exec("SELECT path FROM medium_location WHERE medium_hash = $1 ORDER BY first_seen, path", h))
end

local poke = helper.poke

local function copy(src, dst) helper.sh { "cp", src, dst } end

describe("image identity", function()
  local ok, why = runs.can_run()
  if not ok then
    it("names an image by its whole content", function() pending(why) end)
    return
  end

  it("makes two media of two images that differ only by 4 KiB in the middle, and copies both", function()
    local dir = helper.tmpdir("ident-clone")
    local img = images.ext(dir .. "/disk.img", { size_mb = 16, files = {
      ["a.txt"] = "alpha " .. tag, ["b.txt"] = "beta " .. tag } })
    local clone = dir .. "/clone.img"
    copy(img, clone)
    poke(clone, 8 * MiB, ("clone " .. tag .. " "):rep(400):sub(1, 4096))
    local home = dir .. "/home"
    local r1 = run(home, { policy(dir), img })
    assert.equal(0, r1.code, r1.stderr .. r1.stdout)
    local r2 = run(home, { "-v", policy(dir), clone })
    assert.equal(0, r2.code, r2.stderr .. r2.stdout)
    local h1, h2 = medium_of(img), medium_of(clone)
    assert.are_not.equal(h1, h2)
    local m1, m2 = medium(h1), medium(h2)
    assert.is_true(m1.copied)
    assert.is_true(m2.copied)
    assert.equal(m1.sampled_hash, m2.sampled_hash)        -- same size, same first and last MiB
    assert.equal(h1, json.decode(m2.problems).same_sampled_hash_as)
    assert.is_nil(json.decode(m1.problems).same_sampled_hash_as)
    assert.matches("same first and last MiB and size as medium " .. h1, r2.stderr)
    assert.equal(clone, m2.image_path)
    assert.equal(img, m1.image_path)
  end)

  it("records a byte-identical copy as a second location of the same medium, the first untouched", function()
    local dir = helper.tmpdir("ident-copy")
    helper.sh { "mkdir", "-p", dir .. "/a", dir .. "/b" }
    local img = images.ext(dir .. "/a/disk.img", { size_mb = 8, files = { ["c.txt"] = "gamma " .. tag } })
    local home = dir .. "/home"
    local r = run(home, { policy(dir), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local h = medium_of(img)
    assert(db():exec([[UPDATE medium SET problems = problems || '{"operator_note": "first"}'::jsonb
                        WHERE medium_hash = $1]], h))
    local before = medium(h)
    local other = dir .. "/b/copy-of-disk.img"
    copy(img, other)
    r = run(home, { "-v", policy(dir), other })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.equal(h, medium_of(other))
    assert.matches("second location", r.stderr)
    local after = medium(h)
    assert.equal(img, after.image_path)
    assert.equal("disk", after.medium_human)
    assert.same(json.decode(before.problems), json.decode(after.problems))
    assert.equal("first", json.decode(after.problems).operator_note)
    local locs = locations(h)
    assert.equal(2, #locs)
    assert.equal(img, locs[1].path)
    assert.equal(other, locs[2].path)
    -- ntt status names the second location, and --json lists both
    local st = runs.ntt(home, { "status", h })
    assert.equal(0, st.code, st.stderr)
    assert.matches("also at " .. other:gsub("%p", "%%%0"), st.stdout)
    assert.is_nil(st.stdout:find("also at " .. img .. " ", 1, true))
    st = runs.ntt(home, { "status", "--json", h })
    local rep = json.decode(st.stdout)
    assert.equal(2, #rep.locations)
    assert.equal(other, rep.locations[2].path)
    -- a rerun of the first notes nothing new
    r = run(home, { "-v", policy(dir), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.is_nil(r.stderr:find("second location", 1, true))
    assert.equal(2, #locations(h))
  end)

  it("moves image_path when the recorded file is gone", function()
    local dir = helper.tmpdir("ident-move")
    local img = images.ext(dir .. "/old.img", { size_mb = 8, files = { ["d.txt"] = "delta " .. tag } })
    local home = dir .. "/home"
    assert.equal(0, run(home, { policy(dir), img }).code)
    local h = medium_of(img)
    helper.sh { "mv", img, dir .. "/new.img" }
    local r = run(home, { "-v", policy(dir), dir .. "/new.img" })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.equal(dir .. "/new.img", medium(h).image_path)
    assert.is_nil(r.stderr:find("second location", 1, true))
  end)
end)

describe("the content hash cache", function()
  local ok, why = runs.can_run()
  if not ok then
    it("hashes an unchanged image once", function() pending(why) end)
    return
  end
  local media = require "ntt.media"
  local hashcache = require "ntt.hashcache"

  -- Bytes this process read through read(2)/pread(2) so far.
  local function rchar()
    local f = assert(io.open("/proc/self/io"))
    local n = tonumber(f:read("a"):match("rchar:%s*(%d+)"))
    f:close()
    return n
  end

  it("does not read an unchanged image again; a new mtime, size or content (ctime) hashes again", function()
    local dir = helper.tmpdir("ident-cache")
    local path = dir .. "/big.img"
    helper.write(path, (tag .. " "):rep(4096):sub(1, 8192):rep(32 * MiB // 8192 - 1) .. ("z"):rep(8192))
    local cache = hashcache.new(db())
    local first = assert(media.identify(path, { cache = cache }))
    assert.is_true(first.hashed)
    assert.is_nil(first.cached)
    local before, t0 = rchar(), util.monotonic()
    local again = assert(media.identify(path, { cache = cache }))
    local took, read = util.monotonic() - t0, rchar() - before
    assert.is_true(again.cached)
    assert.is_nil(again.hashed)
    assert.equal(first.hash, again.hash)
    assert.equal(first.sampled_hash, again.sampled_hash)
    assert.is_true(read < MiB, "read again: " .. read)
    assert.is_true(took < 0.5, "took " .. took)
    -- another mtime: read through again, same content, same hash
    helper.sh { "touch", "-d", "2001-02-03 04:05:06", path }
    local touched = assert(media.identify(path, { cache = cache }))
    assert.is_true(touched.hashed)
    assert.equal(first.hash, touched.hash)
    assert.is_true(assert(media.identify(path, { cache = cache })).cached)
    -- 4 KiB changed in the middle, mtime set back: ctime still moved
    local st = assert(fs.stat(path))
    poke(path, 16 * MiB, ("m"):rep(4096))
    helper.sh { "touch", "-d", "2001-02-03 04:05:06", path }
    assert.equal(st.mtime_ns, assert(fs.stat(path)).mtime_ns)
    local poked = assert(media.identify(path, { cache = cache }))
    assert.is_true(poked.hashed)
    assert.are_not.equal(first.hash, poked.hash)
    assert.equal(first.sampled_hash, poked.sampled_hash)
    -- another size
    local f = assert(io.open(path, "ab")); f:write("tail"); f:close()
    local grown = assert(media.identify(path, { cache = cache }))
    assert.is_true(grown.hashed)
    assert.are_not.equal(poked.hash, grown.hash)
    -- without a cache, every identify reads the image
    assert.is_true(assert(media.identify(path)).hashed)
  end)

  it("says in the run's log whether the image was hashed or its hash reused", function()
    local dir = helper.tmpdir("ident-log")
    local img = images.ext(dir .. "/disk.img", { size_mb = 8, files = { ["e.txt"] = "epsilon " .. tag } })
    local home = dir .. "/home"
    local r = run(home, { "-v", policy(dir), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local line = r.stderr:match("[^\n]*identified[^\n]*")
    assert.truthy(line, r.stderr)
    assert.matches("hashed.-true", line)
    r = run(home, { "-v", policy(dir), img })
    line = r.stderr:match("[^\n]*identified[^\n]*")
    assert.matches("cached.-true", line)
    assert.matches("hashed.-false", line)
  end)
end)
