-- spec/view_findings_spec.lua: what the honest view refuses, told apart and
-- handled exactly, on real ext4 and FAT images: bytes past the end of a
-- truncated image (view:beyond_eof) or never rescued (view:unrescued); a
-- salvage zeroing the pages the view refuses; a FAT file over a hole
-- recorded damaged with its ranges.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local hash = require "ntt.core.hash"
local cfat = require "ntt.core.fat"
local json = require "ntt.json"

local MiB = images.MiB

local data_blocks = images.ext_blocks

-- The image offset range [lo, hi) of a FAT file's clusters.
local function fat_span(img, name)
  local x = assert(cfat.extents(img, 0, name))
  local lo, hi = math.huge, 0
  for _, e in ipairs(x) do lo = math.min(lo, e.physical); hi = math.max(hi, e.physical + e.length) end
  return lo, hi
end

-- The findings the copy stage gives for each named file of a medium
-- mounted through the helper (the honest view), as the retry loop asks.
local function findings_of(dir, img, mapfile, names)
  local mount = require "ntt.mount"
  local media = require "ntt.media"
  local mapmod = require "ntt.mapfile"
  local stage = require "ntt.stage.copy"
  local h = hash.sum(dir .. runs.tag):sub(1, 32)
  local res = assert(mount.mount(h, img, { map = mapfile }))
  finally(function() mount.unmount(h, img) end)
  assert.truthy(res.view, "mounted through the honest view")
  local roots = mount.roots_of(res)
  local ctx = { medium = { hash = h, image_path = img, kind = "image", size = res.view.size },
                mount_result = res, roots = roots, policy = { copy = {} },
                inspection = { map = mapfile and assert(mapmod.read(mapfile)) or nil } }
  local view = assert(stage.setup(ctx).view)
  local out = {}
  for _, name in ipairs(names) do
    local root = roots[1].root
    local st = assert(require("ntt.core.fs").stat(root .. "/" .. name))
    out[name] = table.concat(view { fs_index = roots[1].fs_index, root = root, path = name, size = st.size }, ",")
  end
  assert.is_function(media.view_findings)
  return out
end

local function inodes(h)
  return assert(runs.db():exec(("SELECT i.ino, p.path, i.state::text AS state, i.reason, i.blobid, i.damage::text AS damage"
    .. " FROM inode_p_%s i JOIN path_p_%s p USING (fs_index, ino) ORDER BY p.path"):format(h, h)))
end

describe("media.refused and media.view_findings", function()
  local media = require "ntt.media"
  local mapfile = require "ntt.mapfile"
  -- 1 MiB rescued but for [hole, hole + len)
  local function map(hole, len)
    return assert(mapfile.parse(("0 +\n0x0 0x%x +\n0x%x 0x%x -\n0x%x 0x%x +\n"):format(
      hole, hole, len, hole + len, 1048576 - hole - len)))
  end
  -- one contiguous 64 KiB file at filesystem offset 0x12800 (not page aligned)
  local ext = { { logical = 0, physical = 0x12800, length = 65536, flags = 0 } }

  it("widens unrescued bytes to the file's pages, and to the device's pages first for a FUSE driver", function()
    local m = map(0x12800 + 5 * 1024, 8192)              -- file bytes 5-13 KiB
    assert.same({ { file_offset = 4096, length = 12288, status = "-" } }, media.refused(m, ext, 0, 65536))
    -- through the device's page cache: device pages 0x13000-0x16000 are refused,
    -- file bytes 2-14 KiB, then whole file pages 0-16 KiB
    assert.same({ { file_offset = 0, length = 16384, status = "-" } },
                media.refused(m, ext, 0, 65536, { device_pages = true }))
    -- clipped to the file's size; nothing refused over rescued bytes
    assert.same({ { file_offset = 4096, length = 6000 } }, (function()
      local r = media.refused(m, ext, 0, 10096); r[1].status = nil; return r end)())
    assert.same({}, media.refused(map(0x80000, 4096), ext, 0, 65536))
  end)

  it("tells bytes past the image's end from unrescued ones", function()
    local m = map(0x12800 + 5 * 1024, 1024)
    assert.same({ "view:unrescued" }, media.view_findings(ext, 0, 65536, 1048576, m))
    assert.same({}, media.view_findings(ext, 0, 65536, 1048576, map(0x80000, 512)))
    assert.same({ "view:beyond_eof" }, media.view_findings(ext, 0, 65536, 0x12800 + 4096, map(0x80000, 512)))
    assert.same({ "view:beyond_eof", "view:unrescued" }, media.view_findings(ext, 0, 65536, 0x12800 + 8192, m))
    -- the file ends 1 KiB before the image does: not past it, except for a
    -- FUSE driver, which reads the device page that straddles the end
    assert.same({}, media.view_findings(ext, 0, 65536, 0x12800 + 65536 + 1024))
    assert.same({ "view:beyond_eof" }, media.view_findings(ext, 0, 65536, 0x12800 + 65536 + 1024, nil,
                                                           { device_pages = true }))
    -- a filesystem at an offset in the image
    assert.same({ "view:beyond_eof" }, media.view_findings(ext, 16384, 65536, 0x12800 + 65536))
  end)
end)

describe("the honest view's refusals", function()
  local ok, why = runs.can_run { fuse = true }
  if not ok then
    it("tells past-the-end from unrescued", function() pending(why) end)
    return
  end
  after_each(runs.unmount)

  it("names view:beyond_eof past a truncated ext4 image's end and view:unrescued over a hole", function()
    local dir = helper.tmpdir("vfext")
    local files = {}
    for i = 1, 6 do files[("f%d.bin"):format(i)] = (string.char(96 + i)):rep(40 * 1024) .. runs.tag end
    local img = images.ext(dir .. "/disk.img", { size_mb = 8, block = 1024, files = files })
    local b3, b6 = data_blocks(img, "f3.bin"), data_blocks(img, "f6.bin")
    local last = 0
    for i = 1, 5 do
      for _, b in ipairs(data_blocks(img, ("f%d.bin"):format(i))) do last = math.max(last, b) end
    end
    assert.is_true(b6[1] > last, "f6 lies after the others")
    -- the image ends inside f6; the map never read 3 KiB in the middle of f3
    local cut = (b6[1] + 5) * 1024
    local lo = (b3[10]) * 1024
    images.mapfile(dir .. "/disk.map", { { 0, lo, "+" }, { lo, 3072, "-" }, { lo + 3072, 8 * MiB - lo - 3072, "+" } })
    images.truncate(img, cut)
    local got = findings_of(dir, img, dir .. "/disk.map", { "f1.bin", "f3.bin", "f5.bin", "f6.bin" })
    assert.same({ ["f1.bin"] = "view:readable", ["f3.bin"] = "view:unrescued", ["f5.bin"] = "view:readable",
                  ["f6.bin"] = "view:beyond_eof" }, got)
  end)

  it("names them for FAT too, whose files a FUSE driver reads page by page of the device", function()
    local dir = helper.tmpdir("vffat")
    local files = {}
    for i = 1, 8 do files[("FILE%d.BIN"):format(i)] = (string.char(64 + i)):rep(60 * 1024 - 3) .. "end" end
    local img = images.fat(dir .. "/floppy.img", { kb = 1440, files = files })
    local lo3 = fat_span(img, "FILE3.BIN")
    local lo7, hi7 = fat_span(img, "FILE7.BIN")
    local _, hi6 = fat_span(img, "FILE6.BIN")
    assert.is_true(lo7 >= hi6)
    -- one unrescued sector in FILE3; the image cut inside FILE7
    images.mapfile(dir .. "/floppy.map", { { 0, lo3 + 8192, "+" }, { lo3 + 8192, 512, "-" },
                                           { lo3 + 8704, 1440 * 1024 - lo3 - 8704, "+" } })
    images.truncate(img, lo7 + (hi7 - lo7) // 2)
    local got = findings_of(dir, img, dir .. "/floppy.map", { "FILE1.BIN", "FILE3.BIN", "FILE5.BIN", "FILE7.BIN", "FILE8.BIN" })
    assert.equal("view:readable", got["FILE1.BIN"])
    assert.equal("view:unrescued", got["FILE3.BIN"])
    assert.equal("view:readable", got["FILE5.BIN"])
    assert.equal("view:beyond_eof", got["FILE7.BIN"])
    assert.equal("view:beyond_eof", got["FILE8.BIN"])
  end)

  it("gives every skipped file of a truncated FAT floppy the finding view:beyond_eof", function()
    local dir = helper.tmpdir("vfrun")
    local files = {}
    for i = 1, 10 do files[("FILE%02d.BIN"):format(i)] = (string.char(64 + i)):rep(100 * 1024 - 7) .. runs.tag:sub(1, 7) end
    local img = images.fat(dir .. "/floppy.img", { kb = 1440, files = files })
    images.truncate(img, 600 * 1024)
    local home = dir .. "/home"
    local r = runs.run(home, { runs.policy(dir), img })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    local h = runs.medium_of(img)
    local pr = json.decode(assert(runs.db():exec("SELECT problems::text AS p FROM medium WHERE medium_hash = $1", h))[1].p)
    -- the unreadable files are decided on the kernel's confirmation, which
    -- the kernel rate-limits on a busy machine: skipped, or failed at the
    -- maximum without it; each decision carries the view's finding
    local skipped, unread = 0, 0
    for _, row in ipairs(inodes(h)) do
      if row.state == "skipped" then skipped = skipped + 1 end
      if row.state ~= "copied" and row.state ~= "non_file" then unread = unread + 1 end
    end
    assert.is_true(unread >= 3, "unread: " .. unread)
    assert.is_true(#pr.diagnostic_events >= unread)
    for _, ev in ipairs(pr.diagnostic_events) do
      local checks = table.concat(ev.checks, ",")
      -- (a readable file failing with a neighbour's page is tried again:
      -- view:readable, not decided on the end of the image)
      if ev.action ~= "max_retries" and not checks:find("view:readable", 1, true) then
        assert.matches("view:beyond_eof", checks)
        assert.is_nil(checks:find("view:unrescued", 1, true))
      end
    end
    -- a file skipped on that finding counts towards the medium's summary
    if skipped > 0 then assert.equal(skipped, pr.skip_count) end
  end)

  it("salvages a 1 KiB-block ext4 file over an 8 KiB hole: zeros over the pages the view refuses, damaged", function()
    local dir = helper.tmpdir("vfsalv")
    local body = {}
    for k = 0, 63 do body[#body + 1] = string.char(65 + k % 26):rep(1024) end
    local files = { ["f.bin"] = table.concat(body), ["g.bin"] = ("g"):rep(5000) }
    local img = images.ext(dir .. "/disk.img", { size_mb = 8, block = 1024, files = files })
    local blocks = data_blocks(img, "f.bin")
    assert.equal(64, #blocks)
    assert.equal(blocks[1] + 63, blocks[64], "f.bin is contiguous")
    -- file bytes 5 KiB .. 13 KiB never read: file pages 4-8, 8-12, 12-16 KiB are refused
    local lo = (blocks[1] + 5) * 1024
    images.mapfile(dir .. "/disk.map", { { 0, lo, "+" }, { lo, 8192, "-" }, { lo + 8192, 8 * MiB - lo - 8192, "+" } })
    local home = dir .. "/home"
    local r = runs.run(home, { runs.policy(dir, '{ copy = { damaged = "salvage" } }'), img })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    assert.matches("damaged:%s+1 %(1 salvaged", r.stdout)
    local h = runs.medium_of(img)
    local row
    for _, x in ipairs(inodes(h)) do
      if x.path == "f.bin" then row = x end
      if x.path == "g.bin" then assert.equal("copied", x.state) end
    end
    assert.equal("damaged", row.state)
    assert.matches("salvaged", row.reason)
    assert.same({ { file_offset = 4096, length = 12288, status = "-" } }, json.decode(row.damage))
    local want = files["f.bin"]:sub(1, 4096) .. ("\0"):rep(12288) .. files["f.bin"]:sub(16385)
    assert.equal(hash.sum(want), row.blobid)
    local blob = ("%s/store/by-hash/%s/%s/%s"):format(home, row.blobid:sub(1, 2), row.blobid:sub(3, 4), row.blobid)
    assert.equal(row.blobid, (assert(hash.file(blob))))
  end)

  it("records a FAT file over unrescued bytes as damaged with its ranges, and copies the rest", function()
    local dir = helper.tmpdir("vffatrec")
    local files = {}
    for i = 1, 6 do files[("FILE%d.BIN"):format(i)] = (string.char(64 + i)):rep(30 * 1024) end
    local img = images.fat(dir .. "/floppy.img", { kb = 1440, files = files })
    local lo4 = fat_span(img, "FILE4.BIN")
    images.mapfile(dir .. "/floppy.map", { { 0, lo4 + 4096, "+" }, { lo4 + 4096, 1024, "-" },
                                           { lo4 + 5120, 1440 * 1024 - lo4 - 5120, "+" } })
    local home = dir .. "/home"
    local r = runs.run(home, { runs.policy(dir), img })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    local h = runs.medium_of(img)
    local states = {}
    for _, x in ipairs(inodes(h)) do
      if x.path:match("%.BIN$") then
        states[x.path] = x.state
        if x.path == "FILE4.BIN" then
          assert.is_nil(x.blobid)
          assert.same({ { file_offset = 4096, length = 1024, status = "-", image_offset = lo4 + 4096 } },
                      json.decode(x.damage))
        else
          assert.equal(hash.sum(files[x.path]), x.blobid)
        end
      end
    end
    assert.same({ ["FILE1.BIN"] = "copied", ["FILE2.BIN"] = "copied", ["FILE3.BIN"] = "copied",
                  ["FILE4.BIN"] = "damaged", ["FILE5.BIN"] = "copied", ["FILE6.BIN"] = "copied" }, states)
  end)
end)
