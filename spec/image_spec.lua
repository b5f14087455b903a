-- spec/image_spec.lua: the image stage on a real failing disk
-- (docs/imaging.md).  spec/fixtures/faultfs.c serves an ext4 image as one
-- FUSE file whose reads fail with EIO over chosen ranges; a read-only loop
-- device over it is the disk.  `ntt run` of a policy extending
-- policies/device.lua images it with ddrescue, then runs the default
-- workflow on the image: the map's bad areas are the faulty ranges to the
-- sector, files outside them are copied, the file over one is damaged.  ^C
-- during a phase and a rerun resume from the map (no rescued area read
-- again); a rescue more after the disk "heals" is a new rescue in the
-- lineage; an image with a live writer is refused before it is read.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local fs = require "ntt.core.fs"
local mapfile = require "ntt.mapfile"

local MiB = images.MiB
local SIZE = 16 * MiB

local can, why = runs.can_run { fuse = true }
if can and not proc.run { argv = { "ddrescue", "--version" }, timeout = 10 } then
  can, why = nil, "GNU ddrescue is not installed (apt-get install gddrescue)"
end
if not can then
  describe("the image stage", function() it("images a failing disk", function() pending(why) end) end)
  return
end

local bin
local function faultfs_bin()
  if bin then return bin end
  local dir = helper.tmpdir("faultfs")
  local flags = assert(proc.run { argv = { "pkg-config", "--cflags", "--libs", "fuse3" }, timeout = 30 })
  local argv = { "cc", "-O1", "-Wall", "-Werror", "-o", dir .. "/faultfs", "spec/fixtures/faultfs.c" }
  for w in flags.stdout:gmatch("%S+") do argv[#argv + 1] = w end
  local r = assert(proc.run { argv = argv, timeout = 120 })
  assert(r.code == 0, r.stderr)
  bin = dir .. "/faultfs"
  return bin
end

-- A failing disk: { loop=, log=, bad_file=, mnt= }; detached and unmounted by finally.
local function failing_disk(dir, image, bad, delay_ms)
  local mnt = dir .. "/fault"
  assert(fs.mkdirp(mnt))
  local bad_file = dir .. "/bad.txt"
  helper.write(bad_file, bad)
  local p = assert(proc.spawn {
    argv = { faultfs_bin(), "-f", "-s", mnt },
    env = { FAULTFS_IMAGE = image, FAULTFS_BAD_FILE = bad_file, FAULTFS_LOG = dir .. "/reads.log",
            FAULTFS_DELAY_MS = tostring(delay_ms or 0) },
    stdout = "null", stderr = "null" })
  assert(runs.wait_for(function() return fs.stat(mnt .. "/disk") ~= nil end), "faultfs did not mount")
  local r = assert(proc.run { argv = { "losetup", "-r", "-f", "--show", mnt .. "/disk" }, timeout = 30 })
  assert(r.code == 0, r.stderr)
  local loop = r.stdout:match("(%S+)")
  finally(function()
    proc.run { argv = { "losetup", "-d", loop }, timeout = 30 }
    proc.run { argv = { "fusermount3", "-u", "-z", mnt }, timeout = 30 }
    p:wait(10)
  end)
  return { loop = loop, log = dir .. "/reads.log", bad_file = bad_file, mnt = mnt }
end

-- An ext4 disk with files; bad.bin's data starts at the returned image offset.
local function ext4_disk(dir, label)
  local files = {}
  for i = 1, 4 do files[("good%d.bin"):format(i)] = (("%s %s good %d|"):format(runs.tag, label, i)):rep(6000) end
  local marker = ("BADFILE %s %s "):format(runs.tag, label)
  files["bad.bin"] = (marker .. ("x"):rep(64 - #marker)):rep(2048)   -- 128 KiB
  local image = dir .. "/disk.ext4"
  images.ext(image, { type = "ext4", size_mb = SIZE // MiB, block = 1024, files = files })
  local text = helper.read(image)
  local at = assert(text:find(marker, 1, true), "bad.bin not found in the image") - 1
  assert(at % 512 == 0)
  return image, at
end

local function policy(dir, extra)
  local path = dir .. "/imaging_policy.lua"
  helper.write(path, ('return require("ntt").policy.extend("device", { image = { smart = false%s }, progress = { interval = 1 } })\n')
                     :format(extra or ""))
  return path
end

local function bad_areas(map_path)
  local map = assert(mapfile.read(map_path))
  local out = {}
  for _, b in ipairs(map.blocks) do
    if b.status ~= "+" then out[#out + 1] = ("%d:%d%s"):format(b.pos, b.size, b.status) end
  end
  return out, map
end

local function states(conn, h)
  local it, pt = require("ntt.db").partitions(conn, h)
  assert(it, "no partitions for " .. h)
  local rows = assert(conn:exec(([[SELECT convert_from(p.path, 'UTF8') AS name, i.state::text AS state
                                     FROM %s p JOIN %s i USING (fs_index, ino) WHERE i.fs_type = 'f']]):format(pt, it)))
  local out = {}
  for _, r in ipairs(rows) do out[r.name:match("([^/]*)$")] = r.state end
  return out
end

describe("the image stage", function()
  after_each(runs.unmount)

  it("images a failing disk: the map's bad areas are the faulty ranges, files outside copied, the one over them damaged; a rescue more after it heals is a new rescue", function()
    local dir = helper.tmpdir("image")
    local home = dir .. "/home"
    local image, at = ext4_disk(dir, "one")
    local in_file = { pos = at + 8192, size = 3 * 512 }            -- 3 sectors of bad.bin
    local free = { pos = 13 * MiB + 1024, size = 8 * 512 }          -- 8 sectors of free space
    local disk = failing_disk(dir, image, ("%d:%d,%d:%d"):format(in_file.pos, in_file.size, free.pos, free.size))
    local pol = policy(dir)
    local r = runs.run(home, { "-v", pol, disk.loop })
    assert.equal(1, r.code, r.stderr)   -- finished, with a damaged file
    local conn = runs.db()
    local dev = assert(conn:exec("SELECT * FROM imaging WHERE device_path = $1 ORDER BY started_at DESC LIMIT 1",
                                 disk.loop))[1]
    assert.equal("finished", dev.state)
    assert.equal(home .. "/images/" .. dev.device_hash .. ".img", dev.image_path)
    local areas = bad_areas(dev.map_path)
    assert.same({ ("%d:%d-"):format(in_file.pos, in_file.size), ("%d:%d-"):format(free.pos, free.size) }, areas)
    assert.truthy(fs.stat(dev.map_path .. ".bak"))
    -- the device is a medium of its own; the image medium is its first rescue
    local m = assert(conn:exec("SELECT medium_hash, rescue_of, rescue_basis, kind FROM medium WHERE medium_hash = $1",
                               dev.image_medium))[1]
    assert.same({ dev.device_hash, "imaged", "image" }, { m.rescue_of, m.rescue_basis, m.kind })
    assert.equal("device", assert(conn:exec("SELECT kind FROM medium WHERE medium_hash = $1", dev.device_hash))[1].kind)
    local st = states(conn, m.medium_hash)
    assert.same({ ["good1.bin"] = "copied", ["good2.bin"] = "copied", ["good3.bin"] = "copied",
                  ["good4.bin"] = "copied", ["bad.bin"] = "damaged" }, st)
    -- every phase is recorded with the map given to ddrescue
    local phases = assert(conn:exec([[SELECT phase, outcome, argv FROM imaging_phase WHERE device_hash = $1 AND pass = 1
                                        ORDER BY id]], dev.device_hash))
    assert.equal("fast", phases[1].phase)
    assert.equal("done", phases[1].outcome)
    assert.matches(dev.map_path, tostring(phases[1].argv), 1, true)

    -- a rerun does not image again
    r = runs.run(home, { pol, disk.loop })
    assert.equal(1, r.code, r.stderr)
    assert.matches("imaged before", helper.read(home .. "/log/ops.jsonl") or r.stderr)
    local again = assert(conn:exec("SELECT count(*) AS n FROM imaging_phase WHERE device_hash = $1", dev.device_hash))[1].n
    assert.equal(#phases, again)

    -- the disk heals where bad.bin lies: a rescue more reads it, the image is a new rescue
    helper.write(disk.bad_file, ("%d:%d"):format(free.pos, free.size))
    r = runs.ntt(home, { "image", "--policy", pol, "--more", m.medium_hash:sub(1, 12) })
    assert.equal(1, r.code, r.stderr)
    dev = assert(conn:exec("SELECT * FROM imaging WHERE device_hash = $1", dev.device_hash))[1]
    assert.equal(2, dev.pass)
    assert.same({ ("%d:%d-"):format(free.pos, free.size) }, (bad_areas(dev.map_path)))
    local m2 = assert(conn:exec("SELECT medium_hash, rescue_of, rescue_basis FROM medium WHERE medium_hash = $1",
                                dev.image_medium))[1]
    assert.are_not.equal(m.medium_hash, m2.medium_hash)
    assert.same({ m.medium_hash, "more" }, { m2.rescue_of, m2.rescue_basis })
    assert.equal("copied", states(conn, m2.medium_hash)["bad.bin"])
  end)

  it("resumes an imaging stopped by ^C from its map, never reading a rescued area again", function()
    local dir = helper.tmpdir("image")
    local home = dir .. "/home"
    local image = ext4_disk(dir, "two")
    local disk = failing_disk(dir, image, "", 15)     -- a slow disk: 64 KiB reads, 15 ms each
    local pol = policy(dir)
    local p = assert(proc.spawn { argv = { helper.ntt, "run", pol, disk.loop }, env = { NTT_HOME = home },
                                  stdout = "null", stderr = dir .. "/first.err" })
    -- stopped once ddrescue has read past 8 MiB (the log of the disk says so)
    assert(runs.wait_for(function()
      local log = io.open(disk.log, "rb")
      local text = log and log:read("a") or ""
      if log then log:close() end
      for pos, len in text:gmatch("(%d+) (%d+) ok\n") do
        if tonumber(len) == 65536 and tonumber(pos) >= 8 * MiB then return true end
      end
      return false
    end), "the imaging did not get going")
    assert(p:kill(2))
    local how, code = p:wait(60)
    assert.same({ "exit", 130 }, { how, code }, helper.read(dir .. "/first.err"))
    local conn = runs.db()
    local dev = assert(conn:exec("SELECT * FROM imaging WHERE device_path = $1 ORDER BY started_at DESC LIMIT 1",
                                 disk.loop))[1]
    local map = dev.map_path
    assert.equal("imaging", dev.state)
    local first = assert(conn:exec([[SELECT phase, outcome FROM imaging_phase WHERE device_hash = $1 ORDER BY id]],
                                   dev.device_hash))
    assert.equal(1, #first)
    assert.same({ "fast", "interrupted" }, { first[1].phase, first[1].outcome })
    -- what was rescued when it stopped, and what had been read
    local stopped = assert(mapfile.read(map))
    local rescued = {}
    for _, b in ipairs(stopped.blocks) do if b.status == "+" then rescued[#rescued + 1] = b end end
    local covers = false       -- the area the check below looks at was rescued before the stop
    for _, b in ipairs(rescued) do covers = covers or (b.pos <= 4 * MiB and b.pos + b.size >= 8 * MiB) end
    assert.is_true(covers)
    local before = #helper.read(disk.log)

    local r = runs.run(home, { pol, disk.loop })
    assert.is_true(r.code == 0 or r.code == 1, r.stderr)
    dev = assert(conn:exec("SELECT * FROM imaging WHERE device_hash = $1", dev.device_hash))[1]
    assert.equal("finished", dev.state)
    local second = assert(conn:exec([[SELECT phase, outcome, argv FROM imaging_phase WHERE device_hash = $1
                                        AND ended_at IS NOT NULL ORDER BY id]], dev.device_hash))
    assert.same({ "fast", "done" }, { second[2].phase, second[2].outcome })
    assert.matches(map, tostring(second[2].argv), 1, true)   -- given the map
    -- no read of the rerun touches what was rescued (the first and last MiB
    -- are read by the device's identification, through the page cache, whose
    -- readahead reaches past it: 4 MiB at each end are left out; ddrescue reads
    -- with O_DIRECT, past any cache)
    local again = {}
    for pos, len in helper.read(disk.log):sub(before + 1):gmatch("(%d+) (%d+) %a+\n") do
      pos, len = tonumber(pos), tonumber(len)
      if pos + len > 4 * MiB and pos < SIZE - 4 * MiB then
        for _, b in ipairs(rescued) do
          if pos < b.pos + b.size and pos + len > b.pos then
            again[#again + 1] = ("%d+%d"):format(pos, len)
          end
        end
      end
    end
    assert.same({}, again)
    assert.is_true(#helper.read(disk.log) > before)   -- it did read the rest
    assert.same({}, (bad_areas(map)))
  end)

  it("refuses an image that a process still holds open for writing: recorded, nothing mounted", function()
    local dir = helper.tmpdir("image")
    local home = dir .. "/home"
    local image = ext4_disk(dir, "three")
    local idpol = runs.policy(dir, '{ stages = { "identify" } }')
    local r = runs.run(home, { idpol, image })
    assert.equal(0, r.code, r.stderr)
    local h = runs.medium_of(image)
    local writer = assert(proc.spawn { argv = { "sleep", "60" }, stdout = image })
    finally(function() writer:kill(9); writer:wait(10) end)
    local full = dir .. "/full.lua"
    helper.write(full, 'return require("ntt").policy.extend("default", {})\n')
    r = runs.run(home, { full, image })
    assert.equal(2, r.code, r.stderr)
    assert.matches("still being written by sleep", r.stderr, 1, true)
    local conn = runs.db()
    local pr = assert(conn:exec("SELECT problems->'image_being_written' AS p FROM medium WHERE medium_hash = $1", h))[1]
    assert.truthy(pr.p)
    assert.matches('"why": *"writer"', pr.p)
    local mnt = proc.run { argv = { "findmnt", "-rn", "-o", "TARGET" }, timeout = 10 }
    assert.falsy(mnt.stdout:find("/" .. h, 1, true))
    assert.matches("image_being_written", helper.read(home .. "/log/errors.jsonl"))
  end)
end)
