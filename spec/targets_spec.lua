-- spec/targets_spec.lua: targets classified by content (ntt.targets), never
-- by name, and every entry of a target folder reported taken or left; then
-- `ntt run` over such folders end to end (real images, database, mounts).
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local targets = require "ntt.targets"
local json = require "ntt.json"
local hash = require "ntt.core.hash"

local MiB = images.MiB

local random_bytes = helper.random_bytes

-- Replaces the bytes of s at offset (0-based) with part.
local function poke(s, offset, part)
  return s:sub(1, offset) .. part .. s:sub(offset + #part + 1)
end

-- A ROM library: random bytes, one with a FAT boot sector and one with an
-- ISO9660 volume descriptor set inside, at offsets no image has them; and
-- a real ISO among them (a ROM of a CD game).
local function rom_folder(dir)
  local fat = images.fat(helper.tmpdir("romfat") .. "/f.img", { kb = 1440 })
  local iso = images.iso(helper.tmpdir("romiso") .. "/c.iso", { files = { ["GAME.EXE"] = "MZ game" } })
  local boot = helper.read(fat):sub(1, 512)
  local vd = helper.read(iso):sub(32769, 32768 + 4096)
  helper.sh { "mkdir", "-p", dir }
  local roms = {
    ["Game (USA).bin"] = random_bytes(262144),
    ["Game (Europe).bin"] = poke(random_bytes(524288), 4096, boot),
    ["Demo.bin"] = poke(random_bytes(1474560), 100000, vd),
    ["Small.bin"] = random_bytes(777),
    ["Disc.iso"] = helper.read(iso),
  }
  for name, data in pairs(roms) do helper.write(dir .. "/" .. name, data) end
  return roms
end

-- A shelf of real images named against every extension rule: a FAT floppy
-- .flp, an ext4 image .001 and an MBR disk .img with its full mapfile.
local function image_shelf(dir, tag)
  helper.sh { "mkdir", "-p", dir }
  images.fat(dir .. "/a.flp", { kb = 1440, files = { ["README.TXT"] = "floppy " .. tag } })
  images.ext(dir .. "/b.001", { size_mb = 8, files = { ["b.txt"] = "split-image part " .. tag } })
  local p = images.ext(helper.tmpdir("shelfp") .. "/p.img", { size_mb = 8, files = { ["c.txt"] = "disk " .. tag } })
  images.mbr(dir .. "/c.img", { size_mb = 12, parts = { { start_mb = 1, size_mb = 8, image = p } } })
  images.mapfile(dir .. "/c.map", { { 0, 12 * MiB, "+" } }, 12 * MiB)
end

-- A logger that keeps every line (JSONL under dir/log).
local function logger(dir)
  return assert(require("ntt.log").open { dir = dir .. "/log", level = "debug", stderr = "error" })
end

local function log_events(path, event)
  local out = {}
  for line in io.lines(path) do
    local e = json.decode(line)
    if e and e.event == event then out[#out + 1] = e end
  end
  return out
end

local function by_name(report)
  local t = {}
  for _, r in ipairs(report.entries) do t[r.name] = r end
  return t
end

describe("targets.look", function()
  it("finds an image by what it holds, whatever its name", function()
    local dir = helper.tmpdir("look")
    images.fat(dir .. "/floppy.flp", { kb = 1440 })
    images.ext(dir .. "/part.001", { size_mb = 4 })
    images.iso(dir .. "/cd.rom", { files = { ["A.TXT"] = "a" } })
    local p = images.ext(dir .. "/p", { size_mb = 4 })
    images.mbr(dir .. "/disk.xyz", { size_mb = 8, parts = { { start_mb = 1, size_mb = 4, image = p } } })
    images.zip(dir .. "/zip.bin", dir .. "/floppy.flp")
    local want = { ["floppy.flp"] = "vfat filesystem", ["part.001"] = "ext4 filesystem",
                   ["cd.rom"] = "iso9660 filesystem", ["disk.xyz"] = "dos partition table",
                   ["zip.bin"] = "vfat filesystem at offset 16384" }
    for name, content in pairs(want) do
      local v = targets.look(dir .. "/" .. name)
      assert.is_true(v.image, name)
      assert.equal(content, v.content:gsub(", %d+ partitions?$", ""), name)
    end
  end)

  it("does not take ROMs for images, even with a signature inside at an odd offset", function()
    local dir = helper.tmpdir("lookrom")
    local roms = rom_folder(dir)
    for name in pairs(roms) do
      local v = targets.look(dir .. "/" .. name)
      assert.equal(name == "Disc.iso", v.image, name .. ": " .. tostring(v.content))
      assert.is_nil(v.error)
    end
  end)

  it("takes a blank medium and a rescue with its first sectors missing, not a small empty file", function()
    local dir = helper.tmpdir("lookblank")
    helper.write(dir .. "/erased.ima", ("\xf6"):rep(1474560))
    helper.write(dir .. "/zeros.dat", ("\0"):rep(4096))
    -- the boot sector was never read: zeros there, and a map that says so
    local fat = helper.read(images.fat(dir .. "/f", { kb = 1440, files = { ["DATA.BIN"] = ("data"):rep(50000) } }))
    helper.write(dir .. "/rescued.img", ("\0"):rep(65536) .. fat:sub(65537))
    images.mapfile(dir .. "/rescued.map", { { 0, 65536, "-" }, { 65536, 1474560 - 65536, "+" } })
    helper.write(dir .. "/norescue.img", ("\0"):rep(65536) .. fat:sub(65537))
    local v = targets.look(dir .. "/erased.ima")
    assert.is_true(v.image)
    assert.matches("0xf6", v.content)
    assert.is_false(targets.look(dir .. "/zeros.dat").image)
    v = targets.look(dir .. "/rescued.img")
    assert.is_true(v.image)
    assert.matches("rescued%.map", v.content)
    assert.is_false(targets.look(dir .. "/norescue.img").image)
    -- a map that is not a ddrescue map does not make an image
    helper.write(dir .. "/norescue.map", "linker map: _start at 0x100\n")
    assert.is_false(targets.look(dir .. "/norescue.img").image)
    v = targets.look(dir .. "/missing.img")
    assert.is_false(v.image)
    assert.equal("ENOENT", v.code)
  end)
end)

describe("targets.expand", function()
  it("makes a folder of ROMs one directory medium (auto), each entry logged", function()
    local dir = helper.tmpdir("exrom")
    local roms = rom_folder(dir .. "/roms")
    local log = logger(dir)
    local media, report = targets.expand({ dir .. "/roms" }, { log = log })
    log:close()
    assert.equal(1, #media)
    assert.same({ path = dir .. "/roms", as = "directory" }, media[1])
    local n = 0
    for _ in pairs(roms) do n = n + 1 end
    assert.equal(n, report.counts.in_trees)
    assert.equal(0, report.counts.left)
    local cls = log_events(dir .. "/log/ops.jsonl", "target_classified")
    assert.equal(1, #cls)
    assert.equal("tree", cls[1].mode)
    assert.matches("is not a disk image", cls[1].why)
    assert.equal(n, #log_events(dir .. "/log/ops.jsonl", "target_entry"))
  end)

  it("takes a shelf of images named .flp/.001/.img by content, with their ddrescue files", function()
    local dir = helper.tmpdir("exshelf")
    local shelf = dir .. "/shelf"
    image_shelf(shelf, "x")
    helper.write(shelf .. "/c.map.bak", helper.read(shelf .. "/c.map"))
    helper.write(shelf .. "/c-ddrescue.log", "ddrescue 1.27 log\n")
    helper.write(shelf .. "/.DS_Store", "finder junk")
    local log = logger(dir)
    local media, report = targets.expand({ shelf .. "/" }, { log = log })
    log:close()
    local paths = {}
    for _, m in ipairs(media) do
      assert.equal("image", m.as)
      paths[#paths + 1] = m.path
    end
    assert.same({ shelf .. "/a.flp", shelf .. "/b.001", shelf .. "/c.img" }, paths)
    local e = by_name(report)
    assert.equal("mapfile", e["c.map"].as)
    assert.equal("c.img", e["c.map"].of)
    assert.equal("ddrescue file", e["c.map.bak"].as)
    assert.equal("ddrescue file", e["c-ddrescue.log"].as)
    assert.is_false(e[".DS_Store"].taken)
    assert.equal("hidden", e[".DS_Store"].reason)
    assert.same({ folders = 1, image_folders = 1, tree_folders = 0, images = 3, companions = 3,
                  in_trees = 0, left = 1, lost = 0, left_by = { hidden = 1 } }, report.counts)
    -- one line per entry in the ops log, taken or left
    local lines = log_events(dir .. "/log/ops.jsonl", "target_entry")
    assert.equal(7, #lines)
    for _, l in ipairs(lines) do assert.is_true(l.taken ~= nil and (l.as ~= nil or l.reason ~= nil)) end
  end)

  it("sorts a mixed folder: auto copies it whole, --images takes the images and says why it leaves the rest", function()
    local dir = helper.tmpdir("exmix")
    local mix = dir .. "/mix"
    image_shelf(mix, "y")
    helper.write(mix .. "/notes.txt", "not an image")
    helper.write(mix .. "/odd.name", helper.read(mix .. "/a.flp"))       -- an image, unknown extension
    helper.sh { "mkdir", mix .. "/sub" }
    helper.sh { "ln", "-s", "a.flp", mix .. "/link.img" }
    helper.sh { "mkfifo", mix .. "/pipe" }
    local media, report = targets.expand({ mix })
    assert.same({ { path = mix, as = "directory" } }, media)
    assert.equal(1, report.counts.tree_folders)
    -- a map of no image keeps auto from taking a folder as images
    local lone = dir .. "/lone"
    helper.sh { "mkdir", lone }
    images.fat(lone .. "/a.flp", { kb = 1440 })
    helper.write(lone .. "/a.flp-ddrescue.log", "log")
    assert.same({ { path = lone .. "/a.flp", as = "image", folder = lone } }, (targets.expand({ lone })))
    images.mapfile(lone .. "/zzz.map", { { 0, 1474560, "+" } })
    assert.same({ { path = lone, as = "directory" } }, (targets.expand({ lone })))
    local log = logger(dir)
    media, report = targets.expand({ { path = mix, mode = "images" } }, { log = log })
    log:close()
    local got = {}
    for _, m in ipairs(media) do got[#got + 1] = m.path:match("[^/]+$") end
    assert.same({ "a.flp", "b.001", "c.img", "odd.name" }, got)
    local e = by_name(report)
    assert.equal("not_image", e["notes.txt"].reason)
    assert.equal("directory", e["sub"].reason)
    assert.equal("symlink", e["link.img"].reason)
    assert.equal("special", e["pipe"].reason)
    assert.matches("fifo", e["pipe"].why)
    assert.equal("mapfile", e["c.map"].as)
    assert.equal(4, report.counts.left)
    assert.equal(0, report.counts.lost)
    local left = 0
    for _, l in ipairs(log_events(dir .. "/log/ops.jsonl", "target_entry")) do
      if not l.taken then left = left + 1; assert.is_string(l.why) end
    end
    assert.equal(4, left)
  end)

  it("--tree makes a folder of images one directory medium; refuses a file; --images of no image fails", function()
    local dir = helper.tmpdir("extree")
    image_shelf(dir .. "/shelf", "z")
    local media, report = targets.expand({ { path = dir .. "/shelf", mode = "tree" } })
    assert.same({ { path = dir .. "/shelf", as = "directory" } }, media)
    assert.equal(4, report.counts.in_trees)
    media = targets.expand({ { path = dir .. "/shelf/a.flp", mode = "tree" } })
    assert.equal("ENOTDIR", media[1].code)
    rom_folder(dir .. "/roms")
    -- --images of the ROMs takes the one real ISO, leaves the rest
    media, report = targets.expand({ dir .. "/roms" }, { mode = "images" })
    assert.same({ { path = dir .. "/roms/Disc.iso", as = "image", folder = dir .. "/roms" } }, media)
    assert.equal(4, report.counts.left_by.not_image)
    os.remove(dir .. "/roms/Disc.iso")
    media, report = targets.expand({ dir .. "/roms" }, { mode = "images" })
    assert.equal(1, #media)
    assert.equal("ENOENT", media[1].code)
    assert.equal(4, report.counts.left_by.not_image)
    -- misuse raises
    assert.has_error(function() targets.expand({ { path = dir, mode = "img" } }) end)
    assert.has_error(function() targets.expand({ dir }, { mod = "tree" }) end)
    -- a file given by name is taken as given
    media = targets.expand({ dir .. "/roms/Small.bin" })
    assert.same({ { path = dir .. "/roms/Small.bin", as = "target" } }, media)
    -- the same file or folder given twice (a link, a "..") is taken once
    helper.sh { "ln", "-s", dir .. "/roms/Small.bin", dir .. "/link.bin" }
    media = targets.expand({ dir .. "/roms/Small.bin", dir .. "/link.bin", dir .. "/roms/../roms/Small.bin" })
    assert.same({ { path = dir .. "/roms/Small.bin", as = "target" } }, media)
    media = targets.expand({ dir .. "/shelf", dir .. "/roms/../shelf" }, { mode = "tree" })
    assert.same({ { path = dir .. "/shelf", as = "directory" } }, media)
  end)

  it("reports an entry it cannot look at as a loss (images), or copies the folder whole (auto)", function()
    if not helper.is_root() then pending("needs root (to look as another account)"); return end
    local dir = helper.tmpdir("exlost")
    helper.sh { "chmod", "0755", dir }
    helper.sh { "mkdir", dir .. "/shelf" }
    images.fat(dir .. "/shelf/ok.flp", { kb = 1440 })
    images.fat(dir .. "/shelf/secret.img", { kb = 1440 })
    helper.sh { "chmod", "0000", dir .. "/shelf/secret.img" }
    helper.write(dir .. "/look.lua", [[
      local targets, json = require "ntt.targets", require "ntt.json"
      for _, mode in ipairs { "images", "auto" } do
        local media, report = targets.expand({ arg[1] }, { mode = mode })
        print(json.encode { media = media, entries = report.entries, counts = report.counts })
      end]])
    local ntt = assert(require("ntt.core.fs").realpath(helper.ntt))
    local r = helper.sh { "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", ntt,
                          dir .. "/look.lua", dir .. "/shelf" }
    local images_mode, auto = r.stdout:match("([^\n]+)\n([^\n]+)")
    images_mode, auto = json.decode(images_mode), json.decode(auto)
    assert.equal(1, #images_mode.media)
    assert.equal(1, images_mode.counts.lost)
    local e = by_name(images_mode)
    assert.equal("unreadable", e["secret.img"].reason)
    assert.is_true(e["secret.img"].loss)
    assert.matches("Permission denied", e["secret.img"].why)
    assert.equal("directory", auto.media[1].as)
    assert.equal(0, auto.counts.lost)
  end)

  it("is a policy setting, checked at load", function()
    local policy = require "ntt.policy"
    local p = assert(policy.load("default"))
    assert.equal("auto", p.targets.folders)
    local ok, err = pcall(policy.extend, p, { targets = { folders = "imgs" } })
    assert.is_false(ok)
    assert.matches("images", tostring(err))
  end)
end)

describe("ntt run over target folders", function()
  local ok, why = runs.can_run { fuse = true }
  if not ok then
    it("runs folders end to end", function() pending(why) end)
    return
  end

  after_each(runs.unmount)

  local run = runs.run

  local function stored(home, data)
    local h = hash.sum(data)
    local f = io.open(("%s/store/by-hash/%s/%s/%s"):format(home, h:sub(1, 2), h:sub(3, 4), h), "rb")
    if f then f:close() end
    return f ~= nil
  end

  it("copies every ROM of a ROM folder as a file (one directory medium)", function()
    local dir = helper.tmpdir("runrom")
    local roms = rom_folder(dir .. "/roms")
    roms["tag.txt"] = runs.tag .. " roms"
    helper.write(dir .. "/roms/tag.txt", roms["tag.txt"])
    local home = dir .. "/home"
    local pol = runs.policy(dir, '{ hooks = { on_finish = function(t) print("heard in_trees " .. t.targets.in_trees) end } }')
    local r = run(home, { pol, dir .. "/roms" })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("heard in_trees 6", r.stdout)
    assert.matches("media:%s+1 %(0 ", r.stdout)
    assert.matches("copied:%s+6 ", r.stdout)
    assert.matches("folders:%s+1 %(0 as their images, 1 as directory media%)", r.stdout)
    assert.matches("6 taken %(0 images, 0 mapfiles and ddrescue files, 6 in directory media%), 0 left", r.stdout)
    for name, data in pairs(roms) do assert.is_true(stored(home, data), name) end
    local cls = log_events(home .. "/log/ops.jsonl", "target_classified")
    assert.equal("tree", cls[1].mode)
  end)

  it("mounts each image of a shelf named .flp/.001/.img, found by content", function()
    local dir = helper.tmpdir("runshelf")
    image_shelf(dir .. "/shelf", runs.tag)
    local home = dir .. "/home"
    local r = run(home, { runs.policy(dir), dir .. "/shelf" })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("media:%s+3 %(0 ", r.stdout)
    assert.matches("copied:%s+3 ", r.stdout)
    assert.matches("4 taken %(3 images, 1 mapfiles and ddrescue files, 0 in directory media%), 0 left", r.stdout)
    assert.is_true(stored(home, "floppy " .. runs.tag))
    assert.is_true(stored(home, "split-image part " .. runs.tag))
    assert.is_true(stored(home, "disk " .. runs.tag))
    local mounted = log_events(home .. "/log/ops.jsonl", "mounted")
    assert.equal(3, #mounted)
    -- the image files themselves were not copied as files
    assert.is_false(stored(home, helper.read(dir .. "/shelf/a.flp")))
  end)

  it("--images takes the images of a mixed folder and reports the rest left; --tree copies it whole", function()
    local dir = helper.tmpdir("runmix")
    local mix = dir .. "/mix"
    image_shelf(mix, runs.tag .. "m")
    helper.write(mix .. "/notes.txt", "notes " .. runs.tag)
    helper.sh { "mkdir", mix .. "/sub" }
    helper.write(mix .. "/sub/inner.txt", "inner " .. runs.tag)
    local home = dir .. "/home"
    local pol = runs.policy(dir)
    local r = run(home, { pol, "--images", mix })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("media:%s+3 %(0 ", r.stdout)
    assert.matches("4 taken %(3 images, 1 mapfiles and ddrescue files, 0 in directory media%), 2 left %(directory 1, not image 1%)", r.stdout)
    assert.is_false(stored(home, "notes " .. runs.tag))
    local left = {}
    for _, e in ipairs(log_events(home .. "/log/ops.jsonl", "target_entry")) do
      if not e.taken then left[e.entry] = e.reason end
    end
    assert.same({ ["notes.txt"] = "not_image", sub = "directory" }, left)
    -- the same folder as one tree: every file copied, the images as files
    local home2 = dir .. "/home2"
    r = run(home2, { "--tree", mix, pol })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("media:%s+1 %(0 ", r.stdout)
    assert.matches("copied:%s+6 ", r.stdout)
    assert.is_true(stored(home2, "notes " .. runs.tag))
    assert.is_true(stored(home2, "inner " .. runs.tag))
    assert.is_true(stored(home2, helper.read(mix .. "/a.flp")))
    -- auto (no flag) picks the tree too, and says why
    r = run(dir .. "/home3", { "-v", pol, mix })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("one directory medium of 6 entries: 'notes.txt' is not a disk image", r.stderr)
    -- --images of a folder with no image cannot run
    rom_folder(dir .. "/roms")
    os.remove(dir .. "/roms/Disc.iso")
    r = run(dir .. "/home4", { pol, "--images", dir .. "/roms" })
    assert.equal(2, r.code, r.stderr .. r.stdout)
    assert.matches("no disk image in this folder", r.stderr)
  end)
end)
