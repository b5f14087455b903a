-- spec/reader_spec.lua: `ntt run` over filesystems the kernel here cannot
-- mount (vfat, iso9660), read by ntt-tskfs (The Sleuth Kit): the DB's
-- names, sizes and mtimes are what mtools (mdir) and sleuthkit (fls -r -p,
-- istat, fiwalk) report; no label file; deleted files are rows of kind
-- 'deleted' (and recovered with copy.deleted = "recover"); a truncated
-- floppy copies what is inside and fails what is past the end with EIO.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local hash = require "ntt.core.hash"
local runs = require "spec.support.runs"

local tag = runs.tag
local run, db = runs.run, runs.db
local sh = helper.sh

local MTOOLS_ENV = { MTOOLS_SKIP_CHECK = "1", LC_ALL = "C.UTF-8", TZ = "UTC" }

local have = require("spec.support.mediaimg").have

-- A source tree with set dates (1994-03-15 10:20:30 unless given).
local function tree(dir, files, dates)
  for name, content in pairs(files) do
    local path = dir .. "/" .. name
    sh { "mkdir", "-p", (path:match("^(.*)/[^/]*$")) }
    helper.write(path, content)
  end
  for name in pairs(files) do
    sh { "touch", "-h", "-d", (dates and dates[name]) or "1994-03-15 10:20:30", dir .. "/" .. name }
  end
end

-- A FAT image by mkfs.vfat + mcopy -m (dates kept) + mdel (two deleted files).
local function fat_image(path, o)
  sh { "rm", "-f", path }
  sh { "mkfs.vfat", "-C", "-F", tostring(o.fat), "-n", o.label, path, tostring(o.kb) }
  local src = helper.tmpdir("fatsrc")
  tree(src, o.files)
  local tops, seen = {}, {}
  for name in pairs(o.files) do
    local top = name:match("^[^/]+")
    if not seen[top] then seen[top] = true; tops[#tops + 1] = top end
  end
  table.sort(tops)           -- allocation order = this order
  for _, top in ipairs(tops) do
    sh({ "mcopy", "-m", "-s", "-i", path, src .. "/" .. top, "::/" .. top }, { env = MTOOLS_ENV })
  end
  for _, gone in ipairs(o.delete or {}) do
    sh({ "mdel", "-i", path, "::/" .. gone }, { env = MTOOLS_ENV })
  end
  return path
end

-- The DB's live files of a medium: path -> {size=, mtime=seconds}
local function db_files(h)
  local out = {}
  for _, r in ipairs(assert(db():exec(([[SELECT p.path, i.size, i.mtime_ns, i.fs_type, i.state::text AS state,
                                              i.blobid, i.reason
                                         FROM path_p_%s p JOIN inode_p_%s i USING (fs_index, ino)]]):format(h, h)))) do
    out[r.path] = { size = r.size, mtime = r.mtime_ns and r.mtime_ns // 1000000000, type = r.fs_type,
                    state = r.state, blobid = r.blobid, reason = r.reason }
  end
  return out
end

-- `fls -r -p -m / -l`-free listing: allocated regular files, path -> inode address
local function fls_files(img)
  local out, deleted = {}, {}
  local r = sh { "fls", "-r", "-p", img }
  for line in r.stdout:gmatch("[^\n]+") do
    local kind, star, addr, path = line:match("^(%S+) (%*?) ?(%d+)[^:]*:\t(.*)$")
    if kind == "r/r" and not path:find("%(Volume Label Entry%)") and not path:find("^%$") then
      if star == "*" then deleted[path] = tonumber(addr) else out[path] = tonumber(addr) end
    end
  end
  return out, deleted
end

-- `mdir -/` of the whole image: path -> {size=, minute="YYYY-MM-DD HH:MM"} of every file
local function mdir_files(img)
  local out, dir = {}, ""
  local text = sh({ "mdir", "-/", "-i", img, "::/" }, { env = MTOOLS_ENV }).stdout
  for line in text:gmatch("[^\n]+") do
    local d = line:match("^Directory for ::/(.*)$")
    if d then
      dir = d ~= "" and (d .. "/") or ""
    else
      local short, size, y, mo, dd, hh, mi, long =
        line:match("^(.-)%s+(%d+) (%d%d%d%d)%-(%d%d)%-(%d%d) +(%d+):(%d%d) ?(.*)$")
      if short and not line:find("<DIR>", 1, true) then
        long = long:gsub("^%s+", ""):gsub("%s+$", "")
        local name = long
        if name == "" then
          local base, ext = short:match("^(%S+)%s+(%S+)$")
          name = base and (base .. "." .. ext) or short
        end
        out[dir .. name] = { size = tonumber(size), minute = ("%s-%s-%s %02d:%s"):format(y, mo, dd, tonumber(hh), mi) }
      end
    end
  end
  return out
end

-- istat's size and "Written" time (as TZ=UTC prints it) of inode addr.
local function istat(img, addr)
  local r = sh({ "istat", img, tostring(addr) }, { env = { TZ = "UTC" } })
  local size = tonumber(r.stdout:match("\nSize: (%d+)"))
  local y, mo, d, hh, mi, ss = r.stdout:match("Written:\t(%d+)%-(%d+)%-(%d+) (%d+):(%d+):(%d+)")
  local t = y and os.time { year = tonumber(y), month = tonumber(mo), day = tonumber(d), hour = tonumber(hh),
                            min = tonumber(mi), sec = tonumber(ss), isdst = false }
  return size, t
end

-- seconds since the epoch of a UTC wall clock (os.time reads local time: the spec runs TZ-independent)
local function utc(y, mo, d, hh, mi, ss)
  local t = os.time { year = y, month = mo, day = d, hour = hh, min = mi, sec = ss, isdst = false }
  local now = os.time()
  local off = os.time(os.date("!*t", now)) - now
  return t - off
end

describe("the Sleuth Kit reader", function()
  local ok, why = runs.can_run { fuse = true }
  if ok and not (have("fls") and have("mcopy") and have("fiwalk")) then ok, why = nil, "sleuthkit or mtools missing" end
  if not ok then
    it("reads FAT and ISO 9660 exactly", function() pending(why) end)
    return
  end

  after_each(runs.unmount)

  local files = {
    ["photo.bmp"] = "photo " .. tag,
    ["work/chap1.doc"] = "chapter one " .. tag,
    ["work/deep/résumé de l'été.txt"] = "accents " .. tag,
    ["A Long Lowercase Name.text"] = "long " .. tag,
    ["gone one.txt"] = "first deleted " .. tag,
    ["gone2.txt"] = "second deleted " .. tag,
  }

  for _, variant in ipairs { { fat = 12, kb = 1440, name = "FAT12 floppy" }, { fat = 32, kb = 40960, name = "FAT32 image" } } do
    it(variant.name .. ": names, sizes, mtimes as mdir and fls/istat; no label file; deleted rows", function()
      local dir = helper.tmpdir("reader")
      local img = fat_image(dir .. "/disk.img", { fat = variant.fat, kb = variant.kb, label = "ARCHIVE94",
                                                  files = files, delete = { "gone one.txt", "gone2.txt" } })
      local home = dir .. "/home"
      local pol = runs.policy(dir, '{ copy = { deleted = "recover" } }')
      local r = run(home, { pol, img })
      assert.equal(0, r.code, r.stderr .. r.stdout)
      local h = runs.medium_of(img)
      local got = db_files(h)
      -- fls: the same allocated files, and istat: their sizes and times
      local live, deleted = fls_files(img)
      local n = 0
      for path, addr in pairs(live) do
        n = n + 1
        local size, t = istat(img, addr)
        assert.truthy(got[path], "missing in the DB: " .. path)
        assert.equal(size, got[path].size, path)
        assert.equal(t, got[path].mtime, path)
        assert.equal("copied", got[path].state, path)
      end
      assert.equal(4, n)
      for path, row in pairs(got) do
        if row.type == "f" then assert.truthy(live[path], "not a file per fls: " .. path) end
      end
      -- what the test set: the names and dates mdir shows
      local when = utc(1994, 3, 15, 10, 20, 30)
      for path, content in pairs(files) do
        if not path:find("^gone") then
          assert.equal(#content, got[path].size, path)
          assert.equal(when, got[path].mtime, path)
        end
      end
      -- mdir: every file it lists, with its size and its minute
      local listed, m = mdir_files(img), 0
      for path, e in pairs(listed) do
        m = m + 1
        assert.truthy(got[path], "mdir lists what the DB lacks: " .. path)
        assert.equal(e.size, got[path].size, path)
        assert.equal(e.minute, os.date("!%Y-%m-%d %H:%M", got[path].mtime), path)
      end
      assert.equal(4, m)
      assert.truthy(listed["work/deep/résumé de l'été.txt"])
      -- no label file; the label is the filesystem's fact
      for path in pairs(got) do assert.falsy(path:find("ARCHIVE94", 1, true), path) end
      local fsrow = assert(db():exec("SELECT label FROM filesystem WHERE medium_hash = $1", h))[1]
      assert.equal("ARCHIVE94", fsrow.label)
      -- the deleted files: rows of kind 'deleted', named as fls names them, recovered
      local rows = assert(db():exec([[SELECT kind, type, path, size, mtime_ns, recoverability, state, blobid
                                       FROM deleted_entry WHERE medium_hash = $1 ORDER BY path]], h))
      local dnames = {}
      for p in pairs(deleted) do dnames[#dnames + 1] = p end
      table.sort(dnames)
      assert.equal(2, #rows)
      for i, row in ipairs(rows) do
        assert.equal("deleted", row.kind)
        assert.equal("file", row.type)
        assert.equal(dnames[i], row.path)
        assert.equal(when, row.mtime_ns // 1000000000)
        assert.equal("recoverable", row.recoverability)
        assert.equal("recovered", row.state)
      end
      -- (a deleted FAT short name has lost its first byte; a long name keeps it)
      local first, second = rows[1], rows[2]
      if not first.path:find("one one.txt", 1, true) then first, second = second, first end
      assert.equal(hash.sum("first deleted " .. tag), first.blobid)
      assert.equal(#("first deleted " .. tag), first.size)
      assert.equal(hash.sum("second deleted " .. tag), second.blobid)
      -- and none of them is a live file
      assert.is_nil(got["gone one.txt"])
      assert.is_nil(got["gone2.txt"])
    end)
  end

  it("FAT and ext4: ntt's file list (path, size, mtime) equals fiwalk's allocated files", function()
    local dir = helper.tmpdir("fiwalk")
    local src = helper.tmpdir("extsrc")
    local many = {}
    for i = 1, 12 do many[("d%d/f%02d.dat"):format(i % 3, i)] = ("%s %d "):format(tag, i):rep(i * 50) end
    tree(src, many)
    local ext = dir .. "/ext.img"
    sh { "mkfs.ext4", "-q", "-F", "-d", src, ext, "8M" }
    local fat = fat_image(dir .. "/fat.img", { fat = 16, kb = 20480, label = "FIW", files = many })
    for _, img in ipairs { ext, fat } do
      local r = run(dir .. "/home", { runs.policy(dir), img })
      assert.equal(0, r.code, r.stderr .. r.stdout)
      local h = runs.medium_of(img)
      local got = db_files(h)
      sh { "rm", "-f", dir .. "/fw.xml" }
      sh({ "fiwalk", "-X", dir .. "/fw.xml", img }, { env = { TZ = "UTC" } })
      local xml = helper.read(dir .. "/fw.xml")
      local n = 0
      for obj in xml:gmatch("<fileobject>(.-)</fileobject>") do
        local name = obj:match("<filename>(.-)</filename>")
        local alloc = obj:match("<alloc>1</alloc>") or obj:match("<alloc_name>1</alloc_name>")
        local typ = obj:match("<name_type>(.-)</name_type>")
        if alloc and typ == "r" and name and not name:find("^%$") and not name:find("Volume Label Entry") then
          local size = tonumber(obj:match("<filesize>(%d+)</filesize>"))
          local mt = obj:match("<mtime[^>]*>(.-)</mtime>")
          local y, mo, d, hh, mi, ss = mt:match("(%d+)%-(%d+)%-(%d+)T(%d+):(%d+):(%d+)")
          n = n + 1
          assert.truthy(got[name], img .. ": missing " .. name)
          assert.equal(size, got[name].size, name)
          assert.equal(utc(tonumber(y), tonumber(mo), tonumber(d), tonumber(hh), tonumber(mi), tonumber(ss)),
                       got[name].mtime, name)
        end
      end
      assert.is_true(n >= 12, img .. ": fiwalk listed " .. n)
      local files_in_db = 0
      for _, row in pairs(got) do if row.type == "f" then files_in_db = files_in_db + 1 end end
      assert.equal(n, files_in_db, img)
    end
  end)

  it("ext4 mounted by the kernel: its deleted entries are rows of kind 'deleted' too, as fls lists them", function()
    local dir = helper.tmpdir("extdel")
    local src = helper.tmpdir("extdelsrc")
    -- deleted names at several depths beside live ones: the report passes live
    -- files by name alone and must still find every deleted one below them
    local files, gone = { ["keep.txt"] = "kept " .. tag }, { "sub/gone.txt", "top.txt", "a/b/deep.txt", "a/mid.txt" }
    for i, p in ipairs(gone) do files[p] = ("gone %d %s"):format(i, tag) end
    for i = 1, 20 do files[("a/b/live%02d.txt"):format(i)] = ("live %d %s"):format(i, tag) end
    tree(src, files)
    local img = dir .. "/ext.img"
    sh { "mkfs.ext4", "-q", "-F", "-d", src, img, "4M" }
    for _, p in ipairs(gone) do sh { "debugfs", "-w", "-R", "rm " .. p, img } end
    local r = run(dir .. "/home", { runs.policy(dir), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local h = runs.medium_of(img)
    local got = db_files(h)
    assert.equal("copied", got["keep.txt"].state)
    assert.equal("copied", got["a/b/live20.txt"].state)
    local rows = assert(db():exec(
      "SELECT kind, type, path, size FROM deleted_entry WHERE medium_hash = $1 ORDER BY path", h))
    local want = {}
    for _, p in ipairs(gone) do want[#want + 1] = p end
    table.sort(want)
    assert.equal(#want, #rows)
    for i, row in ipairs(rows) do
      assert.equal("deleted", row.kind)
      assert.equal(want[i], row.path)
      assert.equal(#files[want[i]], row.size)
    end
    if have("fls") then
      local listed = {}
      for line in sh({ "fls", "-r", "-d", "-p", img }).stdout:gmatch("[^\n]+") do
        listed[#listed + 1] = line:match("\t(.*)$")
      end
      table.sort(listed)
      assert.same(want, listed)
    end
  end)

  it("an ISO 9660 image with Joliet long names is read exactly", function()
    local dir = helper.tmpdir("joliet")
    local src = helper.tmpdir("isosrc")
    local iso = {
      ["A rather long Joliet file name, with commas.txt"] = "joliet " .. tag,
      ["Unterordner/Ärger über Öl.txt"] = "umlauts " .. tag,
    }
    tree(src, iso)
    local img = dir .. "/cd.iso"
    sh { "xorriso", "-as", "mkisofs", "-quiet", "-J", "-joliet-long", "-V", "JOLIET", "-o", img, src }
    local r = run(dir .. "/home", { runs.policy(dir), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local got = db_files(runs.medium_of(img))
    for path, content in pairs(iso) do
      assert.truthy(got[path], "missing " .. path)
      assert.equal(#content, got[path].size, path)
      assert.equal(hash.sum(content), got[path].blobid, path)
    end
  end)

  it("a truncated floppy: files inside copied, files past the end failed with EIO, each within 2 s", function()
    local dir = helper.tmpdir("cutfat")
    local big = { ["early.txt"] = "early " .. tag }
    for i = 1, 6 do big[("late%d.bin"):format(i)] = ("%s late %d "):format(tag, i):rep(8000) end
    local img = fat_image(dir .. "/floppy.img", { fat = 12, kb = 1440, label = "CUT", files = big })
    -- where each file lies, as istat says, before the cut
    local cut = 720 * 1024
    local inside = {}
    for line in sh({ "fls", img }).stdout:gmatch("[^\n]+") do
      local addr, name = line:match("^r/r (%d+):\t(%S+)$")
      if addr and big[name] then
        local last = 0
        local sectors = sh({ "istat", img, addr }).stdout:match("Sectors:(.*)$")
        for n in sectors:gmatch("%d+") do last = math.max(last, tonumber(n)) end
        inside[name] = (last + 1) * 512 <= cut
      end
    end
    images.truncate(img, cut)
    local r = run(dir .. "/home", { runs.policy(dir), img }, 120)
    assert.equal(1, r.code, r.stderr .. r.stdout)
    local h = runs.medium_of(img)
    local got = db_files(h)
    local past = 0
    for name, content in pairs(big) do
      if inside[name] then
        assert.equal("copied", got[name].state, name .. ": " .. tostring(got[name].reason))
        assert.equal(hash.sum(content), got[name].blobid, name)
      else
        past = past + 1
        assert.are_not.equal("copied", got[name].state, name)
        local e = assert(db():exec(([[SELECT i.errors::text AS e FROM inode_p_%s i JOIN path_p_%s p USING (fs_index, ino)
                                       WHERE p.path = $1]]):format(h, h), name))[1].e
        assert.matches("EIO", e, 1, true)
        assert.not_matches("EPERM", e, 1, true)
      end
    end
    assert.is_true(past >= 2, "nothing past the end")
    -- each one decided at once, with EIO (not EPERM): read through the reader
    local mount = require "ntt.mount"
    local res = assert(mount.mount(h, img))
    finally(function() mount.unmount(h, img) end)
    local root = mount.roots_of(res)[1]
    assert.equal("ntt-tskfs", root.driver)
    local util = require "ntt.core.util"
    for name in pairs(big) do
      if not inside[name] then
        local t0 = util.monotonic()
        local f = assert(io.open(root.root .. "/" .. name, "rb"))
        local data, err = f:read("a")
        f:close()
        assert.is_nil(data, name)
        assert.matches("Input/output error", err)
        assert.is_true(util.monotonic() - t0 < 2, name .. " took too long")
      end
    end
  end)

  it("an unrescued directory cluster: the directory is flagged (metadata_damage) and an unreadable place", function()
    local dir = helper.tmpdir("metadmg")
    local img = fat_image(dir .. "/floppy.img", { fat = 12, kb = 1440, label = "DMG", files = {
      ["a.txt"] = ("a " .. tag):rep(800), ["sub/b.txt"] = "b " .. tag, ["sub/c.txt"] = "c " .. tag } })
    local addr
    for line in sh({ "fls", img }).stdout:gmatch("[^\n]+") do
      addr = addr or line:match("^d/d (%d+):\tsub$")
    end
    local sector = tonumber(sh({ "istat", img, assert(addr) }).stdout:match("Sectors:%s+(%d+)"))
    local size = 1440 * 1024
    local lo = (sector * 512) // 4096 * 4096
    images.mapfile(img .. ".map", { { 0, lo, "+" }, { lo, 4096, "-" }, { lo + 4096, size - lo - 4096, "+" } }, size)
    local r = run(dir .. "/home", { runs.policy(dir), img })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    local h = runs.medium_of(img)
    local json = require "ntt.json"
    local p = json.decode(assert(db():exec("SELECT problems::text AS p FROM medium WHERE medium_hash = $1", h))[1].p)
    assert.truthy(p.metadata_damage, json.encode(p))
    assert.equal("dir_unreadable", p.metadata_damage.first[1].reason)
    assert.equal("sub", p.metadata_damage.first[1].path)
    local f = assert(db():exec("SELECT path, err FROM enum_failure WHERE medium_hash = $1", h))
    assert.equal(1, #f)
    assert.equal("sub", f[1].path)
    assert.equal("EIO", f[1].err)
  end)
end)
