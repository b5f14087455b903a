-- spec/report_spec.lua: condition reports (ntt.report, `ntt report`, the
-- report stage) read by the real judges: headless Chromium renders the page
-- and the index, the JSON is checked against docs/report.schema.json by
-- python3-jsonschema.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local mediaimg = require "spec.support.mediaimg"
local json = require "ntt.json"
local proc = require "ntt.core.proc"

local MiB = images.MiB
local tag, policy, medium_of, run, db = runs.tag, runs.policy, runs.medium_of, runs.run, runs.db

after_each(runs.unmount)

-- chromium --headless: the DOM after rendering, or a screenshot.
local function chromium(dir, url, what)
  local argv = { "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 "--user-data-dir=" .. dir .. "/chromium", "--window-size=1200,1600" }
  if what == "dom" then argv[#argv + 1] = "--dump-dom"
  else argv[#argv + 1] = "--screenshot=" .. what end
  argv[#argv + 1] = url
  local r = assert(proc.run { argv = argv, timeout = 120 })
  assert.equal(0, r.code, r.stderr)
  return r.stdout
end

local function size_of(path)
  local f = assert(io.open(path, "rb"))
  local n = f:seek("end")
  f:close()
  return n
end

-- A PNG that shows something: much bigger than the screenshot of a blank page.
local function assert_not_blank(dir, png)
  local blank = dir .. "/blank.html"
  helper.write(blank, "<!DOCTYPE html><html><body></body></html>")
  chromium(dir, "file://" .. blank, dir .. "/blank.png")
  assert.equal("\137PNG", helper.read(png):sub(1, 4))
  assert.is_true(size_of(png) > 2.5 * size_of(dir .. "/blank.png"),
                 ("%s: %d bytes, a blank page %d"):format(png, size_of(png), size_of(dir .. "/blank.png")))
end

local count_states = runs.states

describe("the condition report", function()
  local ok, why = runs.can_run { fuse = true, tools = { "chromium", "mkfs.vfat" } }
  if not ok then
    it("renders a medium's page in a browser", function() pending(why) end)
    return
  end

  it("renders a partial two-partition medium: map with a mark per damaged file, totals equal to the DB", function()
    local dir = helper.tmpdir("report")
    -- p1: ext4 with two files over map holes; p2: a FAT cut by the image's end
    local img = mediaimg.partial_disk(dir, tag)
    local home = dir .. "/home"
    local r = run(home, { policy(dir), img })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    local h = medium_of(img)
    local states = count_states(h)
    assert.equal(2, states.damaged, json.encode(states))
    assert.is_true((states.skipped or 0) + (states.failed_permanent or 0) >= 1, json.encode(states))
    local total = 0
    for _, n in pairs(states) do total = total + n end

    -- the stage wrote all three and the index
    local rdir = home .. "/report"
    for _, ext_ in ipairs { ".html", ".json", ".dfxml" } do assert.truthy(io.open(rdir .. "/" .. h .. ext_)) end
    assert.truthy(io.open(rdir .. "/index.html"))

    -- the page, rendered
    local dom = chromium(dir, "file://" .. rdir .. "/" .. h .. ".html", "dom")
    assert.matches('<svg[^>]*class="imagemap"', dom)
    local marks = {}
    for path, title in dom:gmatch('<g class="damage%-mark" data%-path="([^"]*)"><title>([^<]*)</title>') do
      marks[path] = title
    end
    assert.truthy(marks["f2.bin"], dom:match('<g class="damage%-marks">.-</g></svg>'))
    assert.truthy(marks["f5.bin"])
    assert.matches("^f2%.bin %(p1, 8192 bytes damaged", marks["f2.bin"])
    local n = 0
    for _ in pairs(marks) do n = n + 1 end
    assert.equal(2, n)
    assert.equal(total, tonumber(dom:match('class="n total%-inodes" data%-n="(%d+)"')))
    local bytes = tonumber(dom:match('class="n total%-bytes" data%-n="(%d+)"'))
    assert.equal(12 * MiB, bytes)
    assert.equal(12 * MiB - 2 * 8192 - (12 * MiB - (9 * MiB + 700 * 1024)),
                 tonumber(dom:match('class="n total%-rescued" data%-n="(%d+)"')))
    assert.matches("p2/FILE12%.BIN", dom)          -- a skipped file listed with its partition
    chromium(dir, "file://" .. rdir .. "/" .. h .. ".html", dir .. "/page.png")
    assert_not_blank(dir, dir .. "/page.png")

    -- the index links the medium's page
    local idx = chromium(dir, "file://" .. rdir .. "/index.html", "dom")
    assert.matches('<a href="' .. h .. '%.html">disk</a>', idx)
    chromium(dir, "file://" .. rdir .. "/index.html", dir .. "/index.png")
    assert_not_blank(dir, dir .. "/index.png")

    -- the JSON: valid against its schema, the lists whole and equal to the DB
    local rep = json.decode(helper.read(rdir .. "/" .. h .. ".json"))
    assert.equal(2, rep.lists.damaged.count)
    assert.equal(2, #rep.lists.damaged.entries)
    assert.equal(rep.lists.unread.count, #rep.lists.unread.entries)
    assert.equal((states.skipped or 0) + (states.failed_permanent or 0) + (states.failed_retryable or 0),
                 rep.lists.unread.count)
    assert.equal(total, rep.accounting.inodes.sum)
    for _, d in ipairs(rep.lists.damaged.entries) do
      assert.equal(8192, d.damaged_bytes)
      assert.is_true(d.ranges[1].image_offset > MiB)
    end
    if mediaimg.have("python3") and proc.run { argv = { "python3", "-c", "import jsonschema" } }.code == 0 then
      local v = assert(proc.run { argv = { "python3", "-c", [[
import json, sys, jsonschema
jsonschema.validate(json.load(open(sys.argv[2])), json.load(open(sys.argv[1])))
print("valid")]], "docs/report.schema.json", rdir .. "/" .. h .. ".json" }, timeout = 60 })
      assert.equal(0, v.code, v.stderr)
      -- and a report that breaks the schema is caught (the check can fail)
      rep.lists.damaged.entries[1].ranges[1].length = -1
      helper.write(dir .. "/bad.json", json.encode(rep))
      v = assert(proc.run { argv = { "python3", "-c", [[
import json, sys, jsonschema
jsonschema.validate(json.load(open(sys.argv[2])), json.load(open(sys.argv[1])))]], "docs/report.schema.json",
        dir .. "/bad.json" }, timeout = 60 })
      assert.is_not.equal(0, v.code)
    else
      error("python3-jsonschema is not installed (make deps)")
    end

    -- `ntt report` gives the same page on stdout, and refuses what it cannot do
    local out = runs.ntt(home, { "report", h })
    assert.equal(0, out.code, out.stderr)
    assert.matches('class="damage%-mark" data%-path="f5%.bin"', out.stdout)
    assert.equal(2, runs.ntt(home, { "report", "no-such-medium" }).code)
    assert.equal(64, runs.ntt(home, { "report", "--format", "pdf", h }).code)
    out = runs.ntt(home, { "report", "--format", "json", "-o", dir .. "/again.json", h })
    assert.equal(0, out.code, out.stderr)
    assert.equal(2, json.decode(helper.read(dir .. "/again.json")).lists.damaged.count)
  end)
end)
