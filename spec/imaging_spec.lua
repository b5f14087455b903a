-- spec/imaging_spec.lua: the parts of the image stage that need no device
-- (docs/imaging.md): who writes a file (ntt.core.openers), ddrescue's status
-- as it prints it, an image still being written (ntt.writing), what a map
-- leaves to rescue, SMART without smartctl, the device policy.
local helper = require "spec.support.helper"
local proc = require "ntt.core.proc"
local openers = require "ntt.core.openers"
local ddrescue = require "ntt.ddrescue"
local writing = require "ntt.writing"
local imaging = require "ntt.imaging"
local mapfile = require "ntt.mapfile"
local util = require "ntt.core.util"

describe("ntt.core.openers.writers", function()
  it("lists a process holding the file open for writing, not one reading it", function()
    local dir = helper.tmpdir("openers")
    local path = dir .. "/img"
    helper.write(path, "x")
    assert.same({}, openers.writers(path))
    local reader = assert(io.open(path, "rb"))
    assert.same({}, openers.writers(path))
    reader:close()
    local p = assert(proc.spawn { argv = { "sleep", "30" }, stdout = path })
    finally(function() p:kill(9); p:wait(10) end)
    local ws = openers.writers(path)
    assert.equal(1, #ws)
    assert.same({ p:pid(), 1, "sleep" }, { ws[1].pid, ws[1].fd, ws[1].comm })
    -- the same file by another name
    assert(os.rename(path, dir .. "/renamed"))
    assert.equal(1, #openers.writers(dir .. "/renamed"))
  end)

  it("fails with the errno name for a path that is not there", function()
    local r, err, code = openers.writers("/nonexistent/x")
    assert.is_nil(r)
    assert.matches("/nonexistent/x", err)
    assert.equal("ENOENT", code)
  end)
end)

describe("ddrescue.status", function()
  local screen = "GNU ddrescue 1.27\nPress Ctrl-C to interrupt\n\n\n\27[A\27[A"
    .. "     ipos:   20905 kB, non-trimmed:     4096 B,  current rate:  20971 kB/s\n"
    .. "     opos:   20905 kB, non-scraped:        0 B,  average rate:  20971 kB/s\n"
    .. "non-tried:        0 B,  bad-sector:     1536 B,    error rate:       0 B/s\n"
    .. "  rescued:   20.96 MB,   bad areas:        2,        run time:          1s\n"
    .. "pct rescued:   99.97%, read errors:        5,  remaining time:         n/a\n"

  it("reads the last status ddrescue printed, in bytes", function()
    local st = ddrescue.status(("junk rescued: 1 B\n"):rep(3) .. screen)
    assert.same({ ipos = 20905000, rescued = 20960000, non_tried = 0, non_trimmed = 4096, non_scraped = 0,
                  bad_sector = 1536, bad_areas = 2, read_errors = 5, pct = 99.97 }, st)
  end)

  it("is nil before the first status", function()
    assert.is_nil(ddrescue.status("GNU ddrescue 1.27\nPress Ctrl-C to interrupt\n"))
  end)

  it("gives the map last, after ddrescue's own words", function()
    assert.same({ "ddrescue", "-n", "--idirect", "/dev/sdx", "a.img", "a.map" },
                ddrescue.argv({ "-n", "--idirect" }, "/dev/sdx", "a.img", "a.map"))
  end)

  it("ends a phase at its budget, and a stalled one by the watchdog", function()
    local dir = helper.tmpdir("ddrescue")
    local t0 = util.monotonic()
    local r = assert(ddrescue.run { argv = { "sleep", "30" }, out = dir .. "/out", budget = 0.3, poll = 0.05 })
    assert.equal("budget", r.outcome)
    assert.is_true(util.monotonic() - t0 < 10)
    r = assert(ddrescue.run { argv = { "sleep", "30" }, out = dir .. "/out", stall = 0.3, poll = 0.05 })
    assert.equal("stall", r.outcome)
    r = assert(ddrescue.run { argv = { "false" }, out = dir .. "/out" })
    assert.same({ "failed", 1 }, { r.outcome, r.exit })
    local none, _, code = ddrescue.run { argv = { "/nonexistent/ddrescue" }, out = dir .. "/out" }
    assert.is_nil(none)
    assert.equal("ENOENT", code)
  end)
end)

describe("ntt.writing.check", function()
  it("refuses a fresh map that does not say ddrescue finished, not one that does, not an old one", function()
    local dir = helper.tmpdir("writing")
    local img, map = dir .. "/d.img", dir .. "/d.map"
    helper.write(img, ("\0"):rep(4096))
    helper.write(map, "0x800 ? 1\n0 0x800 +\n0x800 0x800 ?\n")
    local busy = writing.check(img, map, { map_age = 300 })
    assert.same({ "map_age", map, "?" }, { busy.why, busy.path, busy.status })
    assert.matches("does not say ddrescue finished", writing.describe(busy))
    assert.is_false(writing.check(img, map, { map_age = 0 }))
    assert.is_false(writing.check(img, map, { map_age = 300, now = util.now() + 3600 }))
    helper.write(map, "0 + 1\n0 0x1000 +\n")
    assert.is_false(writing.check(img, map, { map_age = 300 }))
  end)

  it("refuses an image a process writes, naming it", function()
    local dir = helper.tmpdir("writing")
    local img = dir .. "/d.img"
    helper.write(img, "x")
    local p = assert(proc.spawn { argv = { "sleep", "30" }, stdout = img })
    finally(function() p:kill(9); p:wait(10) end)
    local busy = writing.check(img, nil)
    assert.same({ "writer", img, p:pid() }, { busy.why, busy.path, busy.pid })
    assert.matches("still being written by sleep", writing.describe(busy), 1, true)
  end)
end)

describe("imaging.map_state", function()
  it("counts what is left by status, the uncovered tail as non-tried", function()
    local map = assert(mapfile.parse("0 ? 1\n0 1024 +\n1024 512 -\n1536 512 *\n", "t.map"))
    local st = imaging.map_state(map, 4096)
    assert.same({ rescued = 1024, left = 3072, by_status = { ["-"] = 512, ["*"] = 512, ["?"] = 2048 } },
                { rescued = st.rescued, left = st.left, by_status = st.by_status })
    assert.equal(25, st.pct)
    st = imaging.map_state(nil, 4096)
    assert.same({ 0, 4096 }, { st.rescued, st.left })
  end)
end)

describe("ntt.smart.summary", function()
  it("says why there is no summary when smartctl is missing", function()
    local s = require("ntt.smart").summary("/dev/null", { binary = "/nonexistent/smartctl" })
    assert.is_false(s.available)
    assert.matches("smartctl", s.reason)
  end)
end)

describe("policies/device.lua", function()
  it("images first, then runs the default workflow; a phase's keys are checked", function()
    local policy = require "ntt.policy"
    local p = assert(policy.load("policies/device.lua"))
    assert.same({ "image", "identify", "inspect", "mount", "enumerate", "copy", "report", "unmount" }, p.stages)
    assert.equal("fast", p.image.phases[1].name)
    assert.equal(300, p.identify.map_age)
    local dir = helper.tmpdir("devpol")
    helper.write(dir .. "/bad.lua", 'return require("ntt").policy.extend("device", { image = { phases = { '
                 .. '{ name = "x", budgett = 5 } } } })\n')
    local ok, err = policy.load(dir .. "/bad.lua")
    assert.is_nil(ok)
    assert.matches("budgett", err)
  end)
end)
