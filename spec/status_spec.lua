-- spec/status_spec.lua: `ntt status MEDIUM` accounts for every inode and
-- every byte of a medium, checks the totals against the walk and the map,
-- and `ntt run` exits 0 only when nothing of a medium is lost or left.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local json = require "ntt.json"
local pg = require "ntt.core.pg"
local runs = require "spec.support.runs"
local mediadb = require "spec.support.mediadb"

local MiB = images.MiB
local tag = runs.tag

local ntt = runs.ntt

local data_blocks = images.ext_blocks

describe("ntt status MEDIUM", function()
  local url = helper.db_url()
  if not url then
    it("accounts for a medium", function() pending("no test database") end)
    return
  end
  local conn
  setup(function()
    conn = assert(pg.connect(url))
    assert(require("ntt.db").migrate(conn))
  end)
  teardown(function() conn:close() end)

  local seq = 0
  local function newhash()
    seq = seq + 1
    return mediadb.newhash(0x5a000 + seq)
  end

  it("says a medium that is unknown or ambiguous is, and exits 2", function()
    local home = helper.tmpdir("status-unknown")
    local r = ntt(home, { "status", "no-such-medium-" .. tag })
    assert.equal(2, r.code, r.stderr)
    assert.truthy(r.stderr:find("no medium named or hashed 'no%-such%-medium%-"), r.stderr)
    local name = "twice-" .. tag
    local a, b = newhash(), newhash()
    for _, h in ipairs { a, b } do
      assert(conn:exec("INSERT INTO medium (medium_hash, medium_human, kind) VALUES ($1, $2, 'directory')", h, name))
    end
    r = ntt(home, { "status", name })
    assert.equal(2, r.code, r.stderr)
    assert.truthy(r.stderr:find("names 2 media", 1, true), r.stderr)
    assert.truthy(r.stderr:find(a, 1, true) and r.stderr:find(b, 1, true), r.stderr)
    -- the full hash (and a prefix unique to it) still names one
    r = ntt(home, { "status", "--json", a })
    assert.equal(0, r.code, r.stderr)
    assert.equal(a, json.decode(r.stdout).medium.medium_hash)
    r = ntt(home, { "status", b:sub(1, #b - 1) })
    assert.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("medium " .. b, 1, true), r.stdout)
  end)

  it("prints a total that does not check as an error and exits 1", function()
    local home = helper.tmpdir("status-mismatch")
    -- the walks recorded 5 inodes, the medium has none
    local h = newhash()
    assert(conn:exec([[INSERT INTO medium (medium_hash, medium_human, kind, enum_done, enum_inodes)
                       VALUES ($1, $2, 'directory', now(), 5)]], h, "lost-rows-" .. tag))
    local r = ntt(home, { "status", h })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    assert.truthy(r.stderr:find("inodes loaded does not check: 0 inode rows, the walks recorded 5", 1, true), r.stderr)
    assert.truthy(r.stdout:find("ERROR inodes loaded", 1, true), r.stdout)
    -- an image whose map cannot be read: its bytes cannot be accounted for
    local dir = helper.tmpdir("status-badmap")
    helper.write(dir .. "/x.map", "this is not a map\n")
    local h2 = newhash()
    assert(conn:exec([[INSERT INTO medium (medium_hash, medium_human, kind, size, image_path, map_path)
                       VALUES ($1, $2, 'image', 4096, $3, $4)]], h2, "bad-map-" .. tag, dir .. "/x.img", dir .. "/x.map"))
    r = ntt(home, { "status", "--json", h2 })
    assert.equal(1, r.code, r.stderr)
    local rep = json.decode(r.stdout)
    assert.is_false(rep.ok)
    assert.truthy(rep.bytes.map_error)
  end)

  it("keeps the walks' count with the rows when a rerun loads what became readable", function()
    local db = require "ntt.db"
    local enumerate = require "ntt.enumerate"
    local retry = require "ntt.enumerate.retry"
    local failures = require "ntt.enumerate.failures"
    local accounting = require "ntt.accounting"
    local dir = helper.tmpdir("status-retry")
    helper.sh { "mkdir", "-p", dir .. "/ok", dir .. "/late" }
    helper.write(dir .. "/ok/one", "1")
    local h = newhash()
    assert(conn:exec("INSERT INTO medium (medium_hash, medium_human, kind, image_path) VALUES ($1, $2, 'directory', $3)",
                     h, "retry-" .. tag, dir))
    local s = assert(enumerate.load(conn, h, { { fs_index = 0, root = dir } }))
    local m = assert(accounting.resolve(conn, h))
    assert.equal(s.inodes, m.enum_inodes)
    assert.equal(4, m.enum_inodes)   -- the root, ok, ok/one, late
    -- as if the walk had not read "late", which holds files now
    assert(db.tx(conn, function()
      failures.record(conn, h, { errors = { { fs_index = 0, path = "late", err = "EBADMSG", msg = "getdents64: Bad message" } } })
      return true
    end))
    local left = assert(accounting.loss(conn, h))
    assert.same({ pending = 1, lost = 0, unread = 1 }, left)
    helper.sh { "mkdir", "-p", dir .. "/late/deeper" }
    helper.write(dir .. "/late/new1", "n1")
    helper.write(dir .. "/late/deeper/new2", "n2")
    local r = assert(retry.run(conn, h, { { fs_index = 0, root = dir } }))
    assert.equal(1, r.resolved)
    m = assert(accounting.resolve(conn, h))
    assert.equal(7, m.enum_inodes)
    local rep = assert(accounting.report(conn, m))
    assert.is_true(rep.ok)
    assert.equal(7, rep.inodes.rows)
    assert.equal(3, rep.inodes.pending)
    assert.is_nil(rep.bytes)   -- a directory medium has no image bytes
    assert.same({ pending = 3, lost = 0, unread = 0 }, assert(accounting.loss(conn, h)))
    -- a row added behind the loader's back no longer checks
    local it = db.partition_names(h)
    assert(conn:exec(("INSERT INTO %s (medium_hash, fs_index, ino, state, fs_type) VALUES ($1, 0, 999999999, 'pending', 'f')")
                     :format(conn:escape_identifier(it)), h))
    rep = assert(accounting.report(conn, m))
    assert.is_false(rep.ok)
    local failed = {}
    for _, c in ipairs(rep.checks) do if not c.ok then failed[#failed + 1] = c.what end end
    assert.same({ "inodes loaded", "inode paths" }, failed)
  end)

  describe("after a real run", function()
    local ok, why = runs.can_run { fuse = true }
    if not ok then
      it("accounts for a partial image", function() pending(why) end)
      return
    end

    it("accounts for every inode and every byte of a partial image with a map", function()
      local dir = helper.tmpdir("status-partial")
      local files = {}
      for i = 1, 8 do files[("f%d.bin"):format(i)] = (string.char(96 + i)):rep(256 * 1024) .. tag end
      files["sub/deeper/g.txt"] = "g " .. tag
      files["sub/h.txt"] = "h " .. tag
      local name = "acct-" .. tag
      local img = images.ext(dir .. "/" .. name .. ".img", { size_mb = 8, block = 4096, files = files })
      -- f3 and f6 lie over holes; the map stops 1 MiB short of the image
      local b3, b6 = data_blocks(img, "f3.bin"), data_blocks(img, "f6.bin")
      local lo3, hi3 = b3[1] * 4096, (b3[1] + 4) * 4096
      local lo6, hi6 = b6[#b6] * 4096, (b6[#b6] + 1) * 4096
      assert.is_true(hi3 <= lo6)
      images.mapfile(dir .. "/" .. name .. ".map", { { 0, lo3, "+" }, { lo3, hi3 - lo3, "-" },
        { hi3, lo6 - hi3, "+" }, { lo6, hi6 - lo6, "/" }, { hi6, 7 * MiB - hi6, "+" } })
      local home = dir .. "/home"
      local r = ntt(home, { "run", runs.policy(dir), img })
      assert.equal(1, r.code, r.stderr .. r.stdout)
      local h = runs.medium_of(img)

      r = ntt(home, { "status", "--json", h })
      assert.equal(0, r.code, r.stderr .. r.stdout)
      local rep = assert(json.decode(r.stdout))
      assert.is_true(rep.ok)
      -- inodes: the states add up to the rows, the rows to the walk's count
      local by_state, rows = {}, 0
      for _, row in ipairs(assert(conn:exec(("SELECT state::text AS state, count(*) AS n FROM inode_p_%s GROUP BY 1"):format(h)))) do
        by_state[row.state] = row.n
        rows = rows + row.n
      end
      assert.equal(rows, rep.inodes.rows)
      assert.equal(rows, rep.inodes.sum)
      assert.equal(rows, rep.inodes.recorded)
      for state, n in pairs(by_state) do assert.equal(n, rep.inodes.states[state].n, state) end
      for state in pairs(rep.inodes.states) do assert.truthy(by_state[state], state) end
      assert.equal(2, by_state.damaged)
      assert.equal(8, by_state.copied)   -- six f*.bin, g.txt, h.txt
      assert.equal(0, rep.inodes.pending)
      assert.equal(rows, rep.inodes.terminal)
      assert.equal(2, rep.inodes.states.damaged.reasons["overlaps unrescued areas of the image"])
      -- bytes: the image's size, split as the map says
      assert.equal(8 * MiB, rep.bytes.total)
      assert.equal(7 * MiB, rep.bytes.map_size)
      local unrescued = (hi3 - lo3) + (hi6 - lo6) + MiB
      assert.equal(8 * MiB - unrescued, rep.bytes.rescued)
      assert.equal(unrescued, rep.bytes.unrescued)
      assert.equal(hi3 - lo3, rep.bytes.by_status["-"])
      assert.equal(hi6 - lo6, rep.bytes.by_status["/"])
      assert.equal(MiB, rep.bytes.by_status["?"])
      assert.equal(3, rep.bytes.holes)
      assert.equal(2, rep.bytes.files_touched)
      -- (the damage of f6 stops at its end, inside the hole's block)
      local dmg = assert(conn:exec(("SELECT damage::text AS d FROM inode_p_%s WHERE damage IS NOT NULL"):format(h)))
      local dbytes = 0
      for _, row in ipairs(dmg) do
        for _, d in ipairs(json.decode(row.d)) do dbytes = dbytes + d.length end
      end
      assert.equal(2, #dmg)
      assert.equal(hi3 - lo3 + #tag, dbytes)   -- f6: "f" * 256 KiB .. tag, the tag in the hole
      assert.equal(dbytes, rep.bytes.damaged_bytes)

      -- the same, for people, found by the medium's name
      r = ntt(home, { "status", name })
      assert.equal(0, r.code, r.stderr .. r.stdout)
      local out = r.stdout
      assert.truthy(out:find(("inodes: %d rows (walks recorded %d)"):format(rows, rows), 1, true), out)
      assert.truthy(out:find("\n  damaged +2  overlaps unrescued areas of the image: 2\n"), out)
      assert.truthy(out:find(("\n  total +%d  %%(terminal %d, still pending 0%%)\n"):format(rows, rows)), out)
      assert.truthy(out:find(("bytes: %d (image file %d, map %d)"):format(8 * MiB, 8 * MiB, 7 * MiB), 1, true), out)
      assert.truthy(out:find(("\n  rescued +%d "):format(8 * MiB - unrescued)), out)
      assert.truthy(out:find(("\n  not rescued +%d .*bad sector %d, non%%-scraped %d, non%%-tried %d; 3 ranges")
                             :format(unrescued, hi3 - lo3, hi6 - lo6, MiB)), out)
      assert.truthy(out:find(("files touched by unrescued bytes: 2 (%d bytes)"):format(rep.bytes.damaged_bytes), 1, true), out)
      assert.truthy(out:find("ok    inode states", 1, true), out)
      assert.truthy(out:find("ok    image bytes", 1, true), out)
      assert.is_nil(out:find("ERROR", 1, true), out)
      -- a map changed since inspect no longer agrees with the recorded rescued %
      images.mapfile(dir .. "/" .. name .. ".map", { { 0, 7 * MiB, "+" } })
      r = ntt(home, { "status", h })
      assert.equal(1, r.code, r.stderr .. r.stdout)
      assert.truthy(r.stderr:find("rescued % does not check", 1, true), r.stderr)
      images.mapfile(dir .. "/" .. name .. ".map", { { 0, lo3, "+" }, { lo3, hi3 - lo3, "-" },
        { hi3, lo6 - hi3, "+" }, { lo6, hi6 - lo6, "/" }, { hi6, 7 * MiB - hi6, "+" } })

      -- a second run has nothing left to do, and the damaged files are still a loss
      r = ntt(home, { "run", runs.policy(dir), img })
      assert.equal(1, r.code, r.stderr .. r.stdout)
      assert.truthy(r.stderr:find("2 skipped, failed for good or damaged", 1, true), r.stderr)
    end)

    it("exits non-zero when a run that was not interrupted leaves files pending", function()
      local dir = helper.tmpdir("status-pending")
      local img = images.ext(dir .. "/pend-" .. tag .. ".img",
                             { size_mb = 4, files = { ["a.txt"] = "a " .. tag, ["b/c.txt"] = "c " .. tag } })
      local pol = runs.policy(dir, [[{ stages = { "identify", "inspect", "mount", "enumerate", "unmount" } }]])
      local home = dir .. "/home"
      local r = ntt(home, { "run", pol, img })
      assert.equal(1, r.code, r.stderr .. r.stdout)
      assert.truthy(r.stderr:find("2 files still to copy (pending", 1, true), r.stderr)
      local rep = json.decode(ntt(home, { "status", "--json", runs.medium_of(img) }).stdout)
      assert.equal(2, rep.inodes.pending)
      assert.equal(2, rep.inodes.states.pending.n)
      -- a run with the copy stage copies them: clean, exit 0
      r = ntt(home, { "run", runs.policy(dir), img })
      assert.equal(0, r.code, r.stderr .. r.stdout)
    end)
  end)
end)
