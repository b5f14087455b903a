-- spec/reader_ntfs_spec.lua: `ntt run` over NTFS and exFAT images (the
-- kernel here has neither driver: ntt-tskfs reads them through The Sleuth
-- Kit).  The images are written by the filesystems' own FUSE drivers
-- (ntfs-3g, exfat-fuse): long names, accents, nested folders, set mtimes,
-- resident, non-resident, compressed and sparse NTFS data, a hard link, two
-- deleted files.  The DB's names, sizes and mtimes must be what sleuthkit's
-- `fls -r -p -m` (and istat) report for the allocated files; no metadata
-- file ($MFT, $ALLOC_BITMAP...) nor the volume label is a file; the deleted
-- files are rows of kind 'deleted', their content recovered.
local helper = require "spec.support.helper"
local hash = require "ntt.core.hash"
local runs = require "spec.support.runs"

local tag = runs.tag
local run, db = runs.run, runs.db
local sh = helper.sh
local UTC = { TZ = "UTC", LC_ALL = "C.UTF-8" }
local WHEN = "1994-03-15 10:20:30.25"

local have = require("spec.support.mediaimg").have

-- seconds since the epoch of a UTC wall clock
local function utc(y, mo, d, hh, mi, ss)
  local t = os.time { year = y, month = mo, day = d, hour = hh, min = mi, sec = ss, isdst = false }
  local now = os.time()
  return t - (os.time(os.date("!*t", now)) - now)
end

-- Writes files (name -> content) under the mounted root mnt, sets their
-- mtimes, then deletes the names in gone (written first, so they had data);
-- extra.pre(mnt) runs before the files are written, extra.post(mnt) after.
local function populate(mnt, files, gone, extra)
  for name, content in pairs(gone) do helper.write(mnt .. "/" .. name, content) end
  if extra then extra.pre(mnt) end
  for name, content in pairs(files) do
    local path = mnt .. "/" .. name
    sh { "mkdir", "-p", (path:match("^(.*)/[^/]*$")) }
    helper.write(path, content)
  end
  if extra then extra.post(mnt) end
  for name in pairs(files) do sh({ "touch", "-d", WHEN, mnt .. "/" .. name }, { env = UTC }) end
  for name in pairs(gone) do sh { "rm", mnt .. "/" .. name } end
  sh { "sync" }
end

-- An NTFS image by mkfs.ntfs, written through ntfs-3g.
local function ntfs_image(path, files, gone, extra)
  sh { "truncate", "-s", "16M", path }
  sh { "mkfs.ntfs", "-F", "-Q", "-q", "-L", "ARCHNTFS", path }
  local mnt = helper.tmpdir("ntfsmnt")
  sh { "ntfs-3g", "-o", "compression", path, mnt }
  local ok, err = pcall(populate, mnt, files, gone, extra)
  sh { "umount", mnt }
  assert(ok, err)
end

-- An exFAT image by mkfs.exfat, written through exfat-fuse (it wants a
-- block device) running in time zone tz (default UTC).
local function exfat_image(path, files, gone, tz)
  sh { "truncate", "-s", "16M", path }
  sh { "mkfs.exfat", "-L", "ARCHEXFAT", path }
  local dev = sh({ "losetup", "-f", "--show", path }).stdout:gsub("%s+$", "")
  local mnt = helper.tmpdir("exfatmnt")
  local ok, err = pcall(function()
    sh({ "mount.exfat-fuse", dev, mnt }, { env = { TZ = tz or "UTC" } })
    local ok2, err2 = pcall(populate, mnt, files, gone)
    sh { "umount", mnt }
    assert(ok2, err2)
  end)
  sh { "losetup", "-d", dev }
  assert(ok, err)
end

-- `fls -r -p -m /` (body format, times in seconds): allocated regular files
-- (path -> {size=, mtime=, addr=}) and deleted names (path -> addr), TSK's
-- own and the filesystem's $-files left out.
local function fls_body(img)
  local live, deleted = {}, {}
  for line in sh({ "fls", "-r", "-p", "-m", "/", img }, { env = UTC }).stdout:gmatch("[^\n]+") do
    local name, addr, mode, size, mtime = line:match("^[^|]*|/([^|]*)|(%d+)[^|]*|([^|]*)|[^|]*|[^|]*|(%d+)|%d+|(%d+)|")
    if name and not name:find("^%$") and not name:find("%$FILE_NAME%)") and not name:find("%$OrphanFiles/") then
      local dname = name:match("^(.*) %(deleted%)$")
      if dname then
        deleted[dname] = tonumber(addr)
      elseif mode:sub(1, 3) == "r/r" and not name:find("Volume Label Entry", 1, true) then
        live[name] = { size = tonumber(size), mtime = tonumber(mtime), addr = tonumber(addr) }
      end
    end
  end
  return live, deleted
end

-- The DB's live entries of medium h: path -> {size=, mtime_ns=, type=, state=, blobid=, ino=}
local function db_files(h)
  local out = {}
  for _, r in ipairs(assert(db():exec(([[SELECT p.path, i.size, i.mtime_ns, i.fs_type, i.state::text AS state,
                                              i.blobid, i.ino
                                         FROM path_p_%s p JOIN inode_p_%s i USING (fs_index, ino)]]):format(h, h)))) do
    out[r.path] = { size = r.size, mtime_ns = r.mtime_ns, type = r.fs_type, state = r.state, blobid = r.blobid,
                    ino = r.ino }
  end
  return out
end

-- Runs ntt on img (deleted files recovered) and checks it against fls:
-- every allocated file with fls's size and mtime, copied, and nothing else;
-- the label a fact of the filesystem; the deleted names as deleted rows.
local function check(img, label, files, gone)
  local dir = img:match("^(.*)/")
  local r = run(dir .. "/home", { runs.policy(dir, '{ copy = { deleted = "recover" } }'), img })
  assert.equal(0, r.code, r.stderr .. r.stdout)
  local h = runs.medium_of(img)
  local got = db_files(h)
  local live, deleted = fls_body(img)
  local n = 0
  for path, e in pairs(live) do
    n = n + 1
    local row = got[path]
    assert.truthy(row, "fls lists what the DB lacks: " .. path)
    assert.equal(e.size, row.size, path)
    assert.equal(e.mtime, row.mtime_ns // 1000000000, path)
    assert.equal("copied", row.state, path)
  end
  local m = 0
  for path, row in pairs(got) do
    assert.falsy(path:find("^%$"), "a metadata file in the DB: " .. path)
    assert.falsy(path:find(label, 1, true), "the label as a file: " .. path)
    if row.type == "f" then
      m = m + 1
      assert.truthy(live[path], "not an allocated file per fls: " .. path)
    end
  end
  assert.equal(n, m)
  -- what the test wrote, byte for byte and at the time it set
  local when = utc(1994, 3, 15, 10, 20, 30)
  for path, content in pairs(files) do
    assert.truthy(got[path], "missing " .. path)
    assert.equal(#content, got[path].size, path)
    assert.equal(hash.sum(content), got[path].blobid, path)
    assert.equal(when, got[path].mtime_ns // 1000000000, path)
  end
  assert.equal(label, assert(db():exec("SELECT label FROM filesystem WHERE medium_hash = $1", h))[1].label)
  -- the deleted files: exactly fls's deleted names, kind 'deleted', their content recovered
  local rows = assert(db():exec([[SELECT kind, type, path, size, recoverability, state, blobid
                                   FROM deleted_entry WHERE medium_hash = $1 ORDER BY path]], h))
  local names = {}
  for p in pairs(deleted) do names[#names + 1] = p end
  table.sort(names)
  assert.equal(#names, #rows)
  for i, row in ipairs(rows) do
    assert.equal(names[i], row.path)
    assert.equal("deleted", row.kind)
    assert.equal("file", row.type)
    assert.equal(#gone[row.path], row.size, row.path)
    assert.equal("recoverable", row.recoverability, row.path)
    assert.equal("recovered", row.state, row.path)
    assert.equal(hash.sum(gone[row.path]), row.blobid, row.path)
    assert.is_nil(got[row.path])
  end
  return h, got, live
end

describe("the Sleuth Kit reader on NTFS and exFAT", function()
  local ok, why = runs.can_run { fuse = true }
  if ok and not have("fls") then ok, why = nil, "sleuthkit missing (fls)" end
  if not ok then
    it("reads NTFS and exFAT exactly", function() pending(why) end)
    return
  end

  after_each(runs.unmount)

  local big = {}
  for i = 1, 3000 do big[#big + 1] = ("%s %05d "):format(tag, i * 7919 % 100000) end
  local files = {
    ["photo.bmp"] = "photo " .. tag,                               -- NTFS: resident
    ["work/chap1.doc"] = "chapter one " .. tag,
    ["work/deep/résumé de l'été.txt"] = "accents " .. tag,
    ["A Long Lowercase Name, with Spaces.text"] = "long " .. tag,
    ["big.bin"] = table.concat(big),                              -- non-resident, several clusters
  }
  local gone = { ["gone one.txt"] = "first deleted " .. tag, ["gone2.txt"] = "second deleted " .. tag }

  it("NTFS (mkfs.ntfs + ntfs-3g): names, sizes, mtimes as fls; no $-files; deleted rows; compressed, sparse, hard link",
    function()
      if not (have("mkfs.ntfs") and have("ntfs-3g")) then pending("ntfs-3g missing (make deps)") return end
      local ntfs = {}
      for k, v in pairs(files) do ntfs[k] = v end
      local text = {}
      for i = 1, 20000 do text[i] = ("line %d of a compressible file %s\n"):format(i, tag) end
      ntfs["packed/text.txt"] = table.concat(text)                 -- compressed by ntfs-3g
      local sparse = ("\0"):rep(2 * 1024 * 1024) .. "tail " .. tag
      local img = helper.tmpdir("ntfs") .. "/disk.img"
      ntfs_image(img, ntfs, gone, {
        pre = function(mnt)
          -- the folder compressed before its file is written (FILE_ATTRIBUTE_COMPRESSED)
          sh { "mkdir", mnt .. "/packed" }
          if have("python3") then
            sh { "python3", "-c", ("import os; os.setxattr(%q, 'system.ntfs_attrib_be', (0x800).to_bytes(4, 'big'))")
                                  :format(mnt .. "/packed") }
          end
        end,
        post = function(mnt)
          sh { "truncate", "-s", tostring(2 * 1024 * 1024), mnt .. "/sparse.bin" }
          local f = assert(io.open(mnt .. "/sparse.bin", "ab"))
          f:write("tail " .. tag)
          f:close()
          sh { "ln", mnt .. "/photo.bmp", mnt .. "/work/photo link.bmp" }
        end })
      local h, got, live = check(img, "ARCHNTFS", ntfs, gone)
      -- NTFS keeps 100 ns: the quarter second set is there
      for path in pairs(ntfs) do assert.equal(250000000, got[path].mtime_ns % 1000000000, path) end
      local r = sh({ "istat", img, tostring(live["photo.bmp"].addr) }, { env = UTC })
      assert.truthy(r.stdout:find("File Modified:\t1994-03-15 10:20:30.250000000 (UTC)", 1, true), r.stdout)
      -- the sparse file reads as its zeros and its tail
      assert.equal(#sparse, got["sparse.bin"].size)
      assert.equal(hash.sum(sparse), got["sparse.bin"].blobid)
      -- the hard link is one inode, as fls says (one MFT entry)
      assert.equal(live["photo.bmp"].addr, live["work/photo link.bmp"].addr)
      assert.equal(got["photo.bmp"].ino, got["work/photo link.bmp"].ino)
      assert.equal(got["photo.bmp"].blobid, got["work/photo link.bmp"].blobid)
      -- and the compressed file was compressed on the disk, if python3 could ask for it
      if have("python3") then
        local st = sh({ "istat", img, tostring(live["packed/text.txt"].addr) }).stdout
        assert.truthy(st:find("Compressed", 1, true), st)
      end
      -- no orphan of the MFT's reserved entries (16-23) as a deleted row
      local n = assert(db():exec([[SELECT count(*) AS n FROM deleted_entry
                                    WHERE medium_hash = $1 AND path LIKE '$OrphanFiles/%']], h))[1].n
      assert.equal(0, n)
    end)

  it("NTFS: a deleted folder's files are deleted rows under its name, as fls lists them", function()
    if not (have("mkfs.ntfs") and have("ntfs-3g")) then pending("ntfs-3g missing (make deps)") return end
    local img = helper.tmpdir("ntfsdeldir") .. "/disk.img"
    local keep = { ["keep.txt"] = "kept " .. tag }
    ntfs_image(img, keep, {}, { pre = function() end, post = function(mnt)
      sh { "mkdir", "-p", mnt .. "/old folder/sub" }
      helper.write(mnt .. "/old folder/a.txt", "a " .. tag)
      helper.write(mnt .. "/old folder/sub/b.txt", "b " .. tag)
      sh { "rm", "-r", mnt .. "/old folder" }
    end })
    local dir = img:match("^(.*)/")
    local r = run(dir .. "/home", { runs.policy(dir, '{ copy = { deleted = "recover" } }'), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local h = runs.medium_of(img)
    local got = db_files(h)
    assert.equal(hash.sum(keep["keep.txt"]), got["keep.txt"].blobid)
    assert.is_nil(got["old folder"])
    local _, deleted = fls_body(img)
    local want = {}
    for p in pairs(deleted) do want[#want + 1] = p end
    table.sort(want)
    assert.same({ "old folder", "old folder/a.txt", "old folder/sub", "old folder/sub/b.txt" }, want)
    local rows = assert(db():exec([[SELECT path, type, state, blobid FROM deleted_entry
                                     WHERE medium_hash = $1 ORDER BY path]], h))
    local paths = {}
    for i, row in ipairs(rows) do paths[i] = row.path end
    assert.same(want, paths)
    assert.equal("dir", rows[1].type)
    assert.equal(hash.sum("a " .. tag), rows[2].blobid)
    assert.equal(hash.sum("b " .. tag), rows[4].blobid)
  end)

  it("a truncated NTFS image: the honest view; files inside copied, past the end EIO (never zeros), within 2 s",
    function()
      if not (have("mkfs.ntfs") and have("ntfs-3g")) then pending("ntfs-3g missing (make deps)") return end
      local img = helper.tmpdir("ntfscut") .. "/disk.img"
      local late = {}
      for i = 1, 4 do late[("late%d.bin"):format(i)] = (("%s late %d "):format(tag, i)):rep(20000) end
      ntfs_image(img, files, {}, { pre = function() end, post = function(mnt)
        for name, content in pairs(late) do helper.write(mnt .. "/" .. name, content) end
      end })
      -- cut where the first late file's data begins: the MFT and the folders lie before it
      local live = fls_body(img)
      local first
      for name in pairs(late) do
        local st = sh({ "istat", img, tostring(live[name].addr) }).stdout
        local cluster = tonumber(st:match("Non%-Resident[^\n]*\n(%d+)"))
        first = math.min(first or cluster, cluster)
      end
      local cut = first * 4096
      sh { "truncate", "-s", tostring(cut), img }
      local dir = img:match("^(.*)/")
      local r = run(dir .. "/home", { runs.policy(dir), img }, 120)
      assert.equal(1, r.code, r.stderr .. r.stdout)
      local h = runs.medium_of(img)
      local got = db_files(h)
      for path, content in pairs(files) do
        if path ~= "big.bin" or got[path].state == "copied" then
          assert.equal("copied", got[path].state, path)
          assert.equal(hash.sum(content), got[path].blobid, path)
        end
      end
      for name in pairs(late) do
        assert.are_not.equal("copied", got[name].state, name)
        local e = assert(db():exec(([[SELECT i.errors::text AS e FROM inode_p_%s i JOIN path_p_%s p USING (fs_index, ino)
                                       WHERE p.path = $1]]):format(h, h), name))[1].e
        assert.matches("EIO", e, 1, true)
      end
      -- the image is known short (NTFS's own sector count): read through the honest view
      local p = assert(db():exec("SELECT problems::text AS p FROM medium WHERE medium_hash = $1", h))[1].p
      assert.matches("partial_image", p, 1, true)
      -- read through the reader: EIO at once
      local mount = require "ntt.mount"
      local res = assert(mount.mount(h, img))
      finally(function() mount.unmount(h, img) end)
      local root = mount.roots_of(res)[1]
      assert.equal("ntt-tskfs", root.driver)
      local util = require "ntt.core.util"
      for name in pairs(late) do
        local t0 = util.monotonic()
        local f = assert(io.open(root.root .. "/" .. name, "rb"))
        local data, err = f:read("a")
        f:close()
        assert.is_nil(data, name)
        assert.matches("Input/output error", err)
        assert.is_true(util.monotonic() - t0 < 2, name .. " took too long")
      end
    end)

  it("exFAT (mkfs.exfat + exfat-fuse): names, sizes, mtimes as fls; no bitmap/up-case/label files; deleted rows",
    function()
      if not (have("mkfs.exfat") and have("mount.exfat-fuse")) then
        pending("exfatprogs or exfat-fuse missing (make deps)")
        return
      end
      local img = helper.tmpdir("exfat") .. "/disk.img"
      exfat_image(img, files, gone)
      local _, _, live = check(img, "ARCHEXFAT", files, gone)
      local r = sh({ "istat", img, tostring(live["work/chap1.doc"].addr) }, { env = UTC })
      assert.truthy(r.stdout:find("Written:\t1994-03-15 10:20:30 (UTC)", 1, true), r.stdout)
    end)

  it("exFAT written in another time zone: the entry's UTC offset applied (TSK reads the wall clock)", function()
    if not (have("mkfs.exfat") and have("mount.exfat-fuse")) then
      pending("exfatprogs or exfat-fuse missing (make deps)")
      return
    end
    local img = helper.tmpdir("exfattz") .. "/disk.img"
    local one = { ["paris/lettre.txt"] = "écrit à Paris " .. tag }
    exfat_image(img, one, {}, "Europe/Paris")
    local dir = img:match("^(.*)/")
    local r = run(dir .. "/home", { runs.policy(dir), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local got = db_files(runs.medium_of(img))
    local live = fls_body(img)
    -- touch set 10:20:30 UTC; Paris is UTC+1 in March: the disk holds 11:20:30 and +01:00
    assert.equal(utc(1994, 3, 15, 10, 20, 30), got["paris/lettre.txt"].mtime_ns // 1000000000)
    assert.equal(utc(1994, 3, 15, 11, 20, 30), live["paris/lettre.txt"].mtime)
    assert.equal(hash.sum(one["paris/lettre.txt"]), got["paris/lettre.txt"].blobid)
  end)
end)
