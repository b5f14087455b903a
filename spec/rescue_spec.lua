-- spec/rescue_spec.lua: a new rescue of the same disk (docs/media.md, "A new
-- rescue"): ddrescue run again over the same image and map reads the block
-- a file lost; the image is then a new medium, linked to the first as its
-- new rescue, and the file now readable is stored.  A clone changed in the
-- middle with no map is a medium of its own; the operator can link one.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local hash = require "ntt.core.hash"
local mapfile = require "ntt.mapfile"
local lineage = require "ntt.lineage"
local json = require "ntt.json"
local mediadb = require "spec.support.mediadb"

local MiB = images.MiB
local tag = runs.tag

local function map_of(blocks)
  local lines = { "0 +" }
  for _, b in ipairs(blocks) do lines[#lines + 1] = ("%d %d %s"):format(b[1], b[2], b[3]) end
  return assert(mapfile.parse(table.concat(lines, "\n") .. "\n", "t.map"))
end

describe("lineage.further (the rule)", function()
  local old = map_of { { 0, 4096, "+" }, { 4096, 4096, "-" }, { 8192, 8192, "+" } }

  it("holds when every byte rescued before is rescued and more bytes are", function()
    assert.is_true((lineage.further(old, map_of { { 0, 16384, "+" } }, 16384)))
    assert.is_true((lineage.further(old, map_of { { 0, 6144, "+" }, { 6144, 2048, "/" }, { 8192, 8192, "+" } }, 16384)))
  end)

  it("does not hold for the same map, fewer bytes, or a byte rescued before and lost now", function()
    local ok, why = lineage.further(old, old, 16384)
    assert.is_false(ok)
    assert.matches("not further", why)
    -- more bytes in all, but 512 bytes rescued before are not any more
    ok, why = lineage.further(old, map_of { { 0, 512, "-" }, { 512, 15872, "+" } }, 16384)
    assert.is_false(ok)
    assert.matches("512 byte%(s%) rescued before are not rescued in the new map %(first at 0%)", why)
    assert.is_false((lineage.further(map_of { { 0, 16384, "+" } }, old, 16384)))
  end)

  it("counts only the bytes inside the image", function()
    -- the new map rescues more, but only past the image's end
    assert.is_false((lineage.further(old, map_of { { 0, 4096, "+" }, { 4096, 4096, "-" }, { 8192, 16384, "+" } }, 16384)))
  end)
end)

describe("lineage in the database", function()
  local url = helper.db_url()
  if not url then
    it("links and counts", function() pending("no test database") end)
    return
  end
  local db = require "ntt.db"
  local conn
  mediadb.connect_for(url, setup, teardown, function(c) conn = c end)

  local function new_medium(label)
    local h = hash.sum(label .. " " .. tag, 16)
    assert(conn:exec("INSERT INTO medium (medium_hash, medium_human, kind) VALUES ($1, $2, 'image')", h, label))
    return h
  end
  local blob = hash.sum("lineage blob " .. tag)
  local function rows(h, list)
    local it, pt = assert(db.ensure_partitions(conn, h))
    assert(conn:exec("INSERT INTO blob (blobid, size) VALUES ($1, 1) ON CONFLICT DO NOTHING", blob))
    for _, r in ipairs(list) do
      assert(conn:exec(("INSERT INTO %s (medium_hash, fs_index, ino, state, fs_type, blobid) VALUES ($1, 1, $2, $3, 'f', $4) ON CONFLICT DO NOTHING")
                       :format(it), h, r[1], r[2], r[2] == "copied" and blob or nil))
      assert(conn:exec(("INSERT INTO %s (medium_hash, fs_index, path, ino) VALUES ($1, 1, $2::bytea, $3)"):format(pt),
                       h, r[3], r[1]))
    end
  end

  it("refuses a medium as its own rescue and a cycle; notes each later rescue once", function()
    local a, b = new_medium("lin-a"), new_medium("lin-b")
    local ok, err, code = lineage.link(conn, a, a, "operator")
    assert.is_nil(ok)
    assert.equal("EINVAL", code, err)
    assert.is_true(lineage.link(conn, b, a, "map"))
    assert.is_true(lineage.link(conn, b, a, "map"))
    ok, err, code = lineage.link(conn, a, b, "operator")
    assert.is_nil(ok)
    assert.equal("EINVAL", code)
    assert.matches("no cycle", err)
    local function problems_of(h)
      return json.decode(assert(conn:exec("SELECT problems::text AS p FROM medium WHERE medium_hash = $1", h))[1].p)
    end
    assert.same({ b }, problems_of(a).rescued_again_as)
    -- the operator moves the link: the former older medium no longer lists it
    local c = new_medium("lin-c")
    assert.is_true(lineage.link(conn, b, c, "operator"))
    assert.is_nil(problems_of(a).rescued_again_as)
    assert.same({ b }, problems_of(c).rescued_again_as)
    assert.equal(c, problems_of(b).rescue_of)
    assert.is_true(lineage.link(conn, b, a, "map"))
    assert.same({ b }, problems_of(a).rescued_again_as)
    assert.has_error(function() lineage.link(conn, b, a, "guess") end)
    assert.is_false(lineage.recovered(conn, a))
  end)

  it("counts the older medium's lost files by path: copied here, not copied, not found", function()
    local old, new = new_medium("lin-old"), new_medium("lin-new")
    assert.is_true(lineage.link(conn, new, old, "operator"))
    -- nothing of either loaded yet
    assert.same({ rescue_of = old, lost = 0, recovered = 0, not_copied = 0, not_found = 0, places = 0, places_read = 0 },
                lineage.recovered(conn, new))
    rows(old, { { 11, "damaged", "a" }, { 12, "skipped", "b" }, { 12, "skipped", "b2" }, { 13, "copied", "c" },
                { 14, "pending", "d" }, { 15, "failed_permanent", "dir/e" }, { 16, "non_file", "dir" } })
    assert(conn:exec([[INSERT INTO enum_failure (medium_hash, fs_index, path, kind, err, retry)
                       VALUES ($1, 1, 'dir'::bytea, 'error', 'EIO', true), ($1, 1, 'gone'::bytea, 'error', 'EIO', true)]], old))
    local c = lineage.recovered(conn, new)
    assert.equal(4, c.lost)          -- a, b (two paths, one file), d, dir/e
    assert.equal(4, c.not_found)     -- the new medium has no rows yet
    assert.equal(2, c.places)
    assert.equal(0, c.places_read)
    -- the new one: a copied, b2 (b's other name) copied, d damaged, dir/e absent
    rows(new, { { 21, "copied", "a" }, { 22, "copied", "b2" }, { 23, "damaged", "d" }, { 24, "copied", "c" },
                { 26, "non_file", "dir" } })
    c = lineage.recovered(conn, new)
    assert.equal(4, c.lost)
    assert.equal(2, c.recovered)
    assert.equal(1, c.not_copied)
    assert.equal(1, c.not_found)
    assert.equal(1, c.places_read)   -- dir is walked here, gone is not
  end)
end)

local ntt = runs.ntt

local bytes = helper.bytes_at

local events = runs.events

describe("a new rescue of the same disk", function()
  local ok, why = runs.can_run { fuse = true }
  if not ok then
    it("is linked to the first, and stores what is readable now", function() pending(why) end)
    return
  end
  local conn
  local function db()
    if not conn then
      conn = assert(require("ntt.db").connect { url = assert(helper.db_url()), migrate = true })
    end
    return conn
  end
  local function medium(h)
    return assert(db():exec([[SELECT medium_human, rescue_of, rescue_basis, problems::text AS problems
                               FROM medium WHERE medium_hash = $1]], h))[1]
  end
  local function file_row(h, path)
    return assert(db():exec(("SELECT i.state::text AS state, i.blobid FROM path_p_%s p JOIN inode_p_%s i USING (fs_index, ino) WHERE p.path = $1")
                            :format(h, h), path))[1]
  end

  it("links a further ddrescue pass as a new rescue; the file readable now is stored, exit 0", function()
    local dir = helper.tmpdir("rescue")
    local lost_text = ("lost and found again " .. tag .. "\n"):rep(400)     -- 2 blocks and more
    local img = images.ext(dir .. "/disk.img", { size_mb = 16, block = 4096, files = {
      ["keep.txt"] = "kept " .. tag, ["deep/lost.txt"] = lost_text } })
    local size = 16 * MiB
    local r = helper.sh { "debugfs", "-R", "blocks /deep/lost.txt", img }
    local block = assert(tonumber(r.stdout:match("%d+")), r.stdout)
    local lo = block * 4096
    -- the hole must not touch the first or last MiB, or the sampled hashes differ
    assert.is_true(lo >= MiB and lo + 4096 <= size - MiB, "block at " .. lo)
    local good = bytes(img, lo, 4096)
    bytes(img, lo, 4096, ("\0"):rep(4096))             -- ddrescue leaves zeros where it could not read
    local map = dir .. "/disk.map"
    images.mapfile(map, { { 0, lo, "+" }, { lo, 4096, "-" }, { lo + 4096, size - lo - 4096, "+" } })
    local home = dir .. "/home"
    local pol = runs.policy(dir)

    -- the first pass: the file over the hole is damaged, exit 1
    r = ntt(home, { "run", pol, img })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    local h1 = runs.medium_of(img)
    assert.equal("damaged", file_row(h1, "deep/lost.txt").state)
    assert.equal("copied", file_row(h1, "keep.txt").state)

    -- ddrescue again over the same image and map: the block is read, the map full
    bytes(img, lo, 4096, good)
    images.mapfile(map, { { 0, size, "+" } }, size)
    r = ntt(home, { "run", "-v", pol, img })
    assert.equal(0, r.code, r.stderr .. r.stdout)          -- the first medium's loss is not this run's
    local h2 = runs.medium_of(img)
    assert.are_not.equal(h1, h2)
    assert.matches("a new rescue of medium " .. h1, r.stderr)
    assert.is_nil(r.stderr:find("a medium of its own", 1, true), r.stderr)
    local m2, m1 = medium(h2), medium(h1)
    assert.equal(h1, m2.rescue_of)
    assert.equal("map", m2.rescue_basis)
    assert.equal(h1, json.decode(m2.problems).rescue_of)
    assert.same({ h2 }, json.decode(m1.problems).rescued_again_as)
    assert.is_nil(m1.rescue_of)
    -- the file readable now is stored, whole; the unchanged one deduplicated
    local row = file_row(h2, "deep/lost.txt")
    assert.equal("copied", row.state)
    assert.equal(hash.sum(lost_text), row.blobid)
    local blob = ("%s/store/by-hash/%s/%s/%s"):format(home, row.blobid:sub(1, 2), row.blobid:sub(3, 4), row.blobid)
    assert.equal(lost_text, helper.read(blob))
    assert.equal(file_row(h1, "keep.txt").blobid, file_row(h2, "keep.txt").blobid)
    assert.matches("copied:%s+2 %(1 new, 1 deduplicated%)", r.stdout)
    -- the count, in the log
    local rec = events(home, "rescue_recovered")
    assert.equal(1, #rec)
    assert.equal(h2, rec[1].medium)
    assert.equal(h1, rec[1].rescue_of)
    assert.equal(1, rec[1].lost)
    assert.equal(1, rec[1].recovered)
    assert.equal(0, rec[1].not_copied)
    assert.equal(0, rec[1].not_found)
    assert.matches("1 of its 1 files skipped, failed, damaged or pending there are copied here", r.stderr)
    assert.matches("new rescues:  1 %(of the 1 files lost on the older media, 1 copied now%)\n", r.stdout)

    -- the lineage, in ntt status
    r = ntt(home, { "status", "--json", h2 })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local rep = json.decode(r.stdout)
    assert.equal(h1, rep.lineage.rescue_of)
    assert.equal("map", rep.lineage.basis)
    assert.equal(1, #rep.lineage.chain)
    assert.equal(h1, rep.lineage.chain[1].medium_hash)
    assert.equal(1, rep.lineage.recovered.recovered)
    assert.equal(1, rep.lineage.recovered.lost)
    assert.same({}, rep.lineage.rescues)
    assert.equal(h1, rep.medium.rescue_of)
    r = ntt(home, { "status", "--json", h1 })
    rep = json.decode(r.stdout)
    assert.equal(h2, rep.lineage.rescues[1].medium_hash)
    assert.is_nil(rep.lineage.rescue_of)
    assert.is_nil(rep.lineage.recovered)
    r = ntt(home, { "status", h2 })
    assert.matches("lineage: a new rescue of " .. h1 .. " %(disk, by its map%)", r.stdout)
    assert.matches("of its 1 files skipped, failed, damaged or pending: 1 copied here, 0 found but not copied, 0 not found", r.stdout)
    -- the older medium's bytes: the map it was inspected with (the file is the later one's now)
    r = ntt(home, { "status", h1 })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("lineage: rescued again as " .. h2, r.stdout)
    assert.matches("the map kept at inspect: the image and map files now hold the later rescue " .. h2, r.stdout)
    rep = json.decode(ntt(home, { "status", "--json", h1 }).stdout)
    assert.equal(h2, rep.bytes.map_kept)
    assert.equal(4096, rep.bytes.unrescued)
    assert.equal(1, rep.bytes.files_touched)
    r = ntt(home, { "status" })
    assert.matches(h2 .. "[^\n]*%[rescue of " .. h1:sub(1, 8) .. "%]", r.stdout)
    assert.matches(h1 .. "[^\n]*%[rescued again 1%]", r.stdout)
    r = ntt(home, { "status", "--json" })
    local listed = {}
    for _, m in ipairs(json.decode(r.stdout)) do listed[m.medium_hash] = m end
    assert.equal(h1, listed[h2].rescue_of)
    assert.equal(1, listed[h1].rescues)

    -- a rerun changes nothing of the link
    r = ntt(home, { "run", pol, img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.same({ h2 }, json.decode(medium(h1).problems).rescued_again_as)
    assert.equal(h1, medium(h2).rescue_of)

    -- a clone with 4 KiB changed in the middle and no map: a medium of its own
    local clone = dir .. "/clone.img"
    helper.sh { "cp", img, clone }
    bytes(clone, 8 * MiB, 4096, ("clone " .. tag .. " "):rep(400):sub(1, 4096))
    r = ntt(home, { "run", "-v", pol, clone })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local h3 = runs.medium_of(clone)
    assert.is_nil(medium(h3).rescue_of)
    assert.equal(h1, json.decode(medium(h3).problems).same_sampled_hash_as)
    assert.matches("same first and last MiB and size as medium " .. h1, r.stderr)
    assert.is_nil(r.stderr:find("a new rescue", 1, true))
    assert.same({ h2 }, json.decode(medium(h1).problems).rescued_again_as)

    -- unless the operator says so; an unknown OLD cannot run
    r = ntt(home, { "run", pol, "--rescue-of", "no-such-medium-" .. tag, clone })
    assert.equal(2, r.code, r.stderr .. r.stdout)
    assert.matches("no medium named or hashed", r.stderr)
    assert.is_nil(medium(h3).rescue_of)
    r = ntt(home, { "run", pol, "--rescue-of", h1, dir })
    assert.equal(2, r.code, r.stderr .. r.stdout)
    assert.matches("takes an image, not a folder", r.stderr)
    r = ntt(home, { "run", "-v", pol, "--rescue-of", h2:sub(1, 12), clone })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("a new rescue of medium " .. h2 .. " %(said by the operator%)", r.stderr)
    assert.equal(h2, medium(h3).rescue_of)
    assert.equal("operator", medium(h3).rescue_basis)
    assert.same({ h3 }, json.decode(medium(h2).problems).rescued_again_as)
    rep = json.decode(ntt(home, { "status", "--json", h3 }).stdout)
    assert.equal(2, #rep.lineage.chain)
    assert.equal(h2, rep.lineage.chain[1].medium_hash)
    assert.equal("operator", rep.lineage.chain[1].basis)
    assert.equal(h1, rep.lineage.chain[2].medium_hash)
    assert.equal("map", rep.lineage.chain[2].basis)
    rep = json.decode(ntt(home, { "status", "--json", h1 }).stdout)
    assert.equal(2, #rep.lineage.rescues)
    assert.equal(h3, rep.lineage.rescues[2].medium_hash)
    assert.equal(2, rep.lineage.rescues[2].depth)
    -- no cycle: the older one cannot be said a rescue of its later one
    r = ntt(home, { "run", pol, "--rescue-of", h3, img })
    assert.equal(2, r.code, r.stderr .. r.stdout)
    assert.matches("no cycle", r.stderr)
    assert.equal(h1, medium(h2).rescue_of)
  end)
end)
