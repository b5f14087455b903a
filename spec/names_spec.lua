-- spec/names_spec.lua: media whose names are not UTF-8 (a Latin-1 name from
-- an old disk) go through `ntt run` like any other: the image, the folder
-- given as a directory medium, and an image whose broken superblock gives
-- a label of stray bytes.  Their paths come back from the database as the
-- bytes they are (status, the archive's member name, verify).
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local proc = require "ntt.core.proc"
local json = require "ntt.json"

describe("names that are not UTF-8", function()
  local ok, why = runs.can_run()
  if not ok then
    it("run", function() pending(why) end)
    return
  end
  after_each(runs.unmount)

  local function run(dir, home, argv)
    local full = { helper.ntt }
    for _, a in ipairs(argv) do full[#full + 1] = a end
    return assert(proc.run { argv = full, env = runs.env_of(dir, home), timeout = 240 })
  end

  it("an image named in Latin-1: identified, copied, archived under its own name, verified", function()
    local dir = helper.tmpdir("names-img")
    local name = "M\xfcller " .. runs.tag .. ".img"   -- "Müller" in Latin-1
    local img = images.ext(dir .. "/" .. name, { size_mb = 4, files = { ["brief.txt"] = "Sehr geehrte " .. runs.tag } })
    local home = dir .. "/home"
    local r = run(dir, home, { "run", runs.policy(dir), img })
    assert.equal(0, r.code, r.stderr)
    local real = assert(require("ntt.core.fs").realpath(img))
    local rows = assert(runs.db():exec("SELECT medium_hash, image_path, medium_human FROM medium WHERE image_path = $1", real))
    assert.equal(1, #rows, "the medium's image_path comes back as its bytes")
    assert.equal(real, rows[1].image_path)
    assert.equal(name:sub(1, -5), rows[1].medium_human)
    local h = rows[1].medium_hash
    local st = json.decode(run(dir, home, { "status", "--json", h }).stdout)
    assert.equal(0, st.inodes.pending)
    -- the archive holds the image under its name, byte for byte
    local t = helper.sh { "tar", "--zstd", "--quoting-style=literal", "-tf", home .. "/archive/" .. h .. ".tar.zst" }
    assert.truthy(t.stdout:find(name, 1, true), t.stdout)
    local v = run(dir, home, { "verify", "--medium", h })
    assert.equal(0, v.code, v.stderr .. v.stdout)
    assert.equal(1, runs.copied(runs.db(), h))
  end)

  it("a folder named in Latin-1, given as a directory medium", function()
    local dir = helper.tmpdir("names-dir")
    local tree = dir .. "/Ordner \xe4\xf6\xfc " .. runs.tag
    helper.sh { "mkdir", "-p", tree .. "/sub" }
    local f = assert(io.open(tree .. "/sub/d\xe9j\xe0.txt", "wb"))
    f:write("contenu " .. runs.tag)
    f:close()
    local home = dir .. "/home"
    local r = run(dir, home, { "run", runs.policy(dir), "--tree", tree })
    assert.equal(0, r.code, r.stderr)
    local real = assert(require("ntt.core.fs").realpath(tree))
    local rows = assert(runs.db():exec("SELECT medium_hash, image_path FROM medium WHERE image_path = $1", real))
    assert.equal(1, #rows)
    assert.equal(real, rows[1].image_path)
    assert.equal(1, runs.copied(runs.db(), rows[1].medium_hash))
  end)

  it("a superblock of stray bytes: the filesystem recorded as not mounted, the run goes on (exit 1)", function()
    local dir = helper.tmpdir("names-label")
    local img = images.ext(dir .. "/label-" .. runs.tag .. ".img", { size_mb = 4, label = "OLD", files = { ["a"] = "a" } })
    -- the label field (superblock at 1024, s_volume_name at offset 120) and the
    -- rest of it: bytes that are no UTF-8, a checksum that no longer holds
    local fh = assert(io.open(img, "r+b"))
    fh:seek("set", 1024 + 120)
    fh:write(("\xfc\xff\xfe\x80"):rep(4))
    fh:seek("set", 1024 + 1020)
    fh:write("\1\2\3\4")
    fh:close()
    local home = dir .. "/home"
    local r = run(dir, home, { "run", runs.policy(dir), img })
    assert.equal(1, r.code, r.stderr)
    assert.is_nil(r.stderr:find("invalid byte sequence", 1, true), r.stderr)
    local h = runs.medium_of(img)
    local pr = runs.problems(h)
    assert.is_not_nil(pr.filesystems_not_mounted or pr.nothing_mounted, json.encode(pr))
  end)
end)
