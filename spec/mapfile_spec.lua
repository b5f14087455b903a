-- spec/mapfile_spec.lua: the ddrescue mapfile parser and what it says about a medium.
local helper = require "spec.support.helper"
local mapfile = require "ntt.mapfile"
local badmaps = require "spec.support.badmaps"

local SAMPLE = [[
# Mapfile. Created by GNU ddrescue version 1.27
# Command line: ddrescue -d /dev/sdb disk.img disk.map
# Start time:   2025-01-13 22:29:57
# Copying non-tried blocks... Pass 1 (forwards)
# current_pos  current_status  current_pass
0xB3040000     ?               1
#      pos        size  status
0x00000000  0x4D360000  +
0x4D360000  0x0A350000  *
0x576B0000  0x5B780000  +
0xB2E30000  0x00010000  -
0xB2E40000  0x00200000  /
0xB3040000  0x66750000  ?
]]

local function parse(text) return mapfile.parse(text, "t.map") end

describe("mapfile.parse", function()
  it("reads a three-field status line and every block status", function()
    local m = assert(parse(SAMPLE))
    assert.equal(0xB3040000, m.current_pos)
    assert.equal("?", m.current_status)
    assert.equal(1, m.pass)
    assert.equal(6, #m.blocks)
    local statuses = {}
    for i, b in ipairs(m.blocks) do statuses[i] = b.status end
    assert.same({ "+", "*", "+", "-", "/", "?" }, statuses)
    assert.equal(0xB3040000 + 0x66750000, m.size)
    assert.equal(0x4D360000 + 0x5B780000, m.rescued_bytes)
  end)

  it("reads the two-field status line of ddrescue <= 1.21", function()
    local m = assert(parse("# current_pos  current_status\n0xAC023CF400 -\n0 0x1000 +\n"))
    assert.equal(0xAC023CF400, m.current_pos)
    assert.equal("-", m.current_status)
    assert.is_nil(m.pass)
    assert.equal(4096, m.size)
  end)

  it("reads decimal and hex numbers, trailing comments, blanks and CRLF line ends", function()
    local m = assert(parse("0 +  # done\r\n0 512 +\r\n512 0x200 - # bad\n\t1024\t0X200\t+\n\n   \n"))
    assert.same({ pos = 0, size = 512, status = "+" }, m.blocks[1])
    assert.same({ pos = 512, size = 512, status = "-" }, m.blocks[2])
    assert.same({ pos = 1024, size = 512, status = "+" }, m.blocks[3])
    assert.equal(1536, m.size)
    assert.equal(1024, m.rescued_bytes)
  end)

  it("counts the area before the first block and after the last as non-tried", function()
    local m = assert(parse("0 +\n1024 1024 +\n2048 2048 -\n4096 1024 +\n"))
    assert.same({ pos = 0, size = 1024, status = "?", gap = true }, m.blocks[1])
    assert.equal("?", m:status_at(0))
    assert.equal("?", m:status_at(1023))
    assert.equal("+", m:status_at(1024))
    assert.equal("-", m:status_at(2048))
    assert.equal("+", m:status_at(4096))
    assert.equal("?", m:status_at(5120))   -- past the end
    assert.same({ { pos = 0, size = 1024, status = "?" }, { pos = 2048, size = 2048, status = "-" } },
                m:holes())
    assert.same({ { pos = 0, size = 1024, status = "?" }, { pos = 2048, size = 2048, status = "-" },
                  { pos = 5120, size = 880, status = "?" } }, m:holes(6000))
  end)

  it("merges adjacent blocks of one status", function()
    local m = assert(parse("0 +\n0 512 +\n512 512 +\n1024 512 -\n1536 512 -\n2048 1 +\n"))
    assert.same({ { pos = 0, size = 1024, status = "+" }, { pos = 1024, size = 1024, status = "-" },
                  { pos = 2048, size = 1, status = "+" } }, m.blocks)
  end)

  it("rejects every bad map of the shared list with its line number and reason", function()
    for _, c in ipairs(badmaps.cases) do
      local m, err, code = parse(c[1])
      assert.is_nil(m, c[1])
      assert.equal("EINVAL", code)
      local line, why = err:match("^t%.map: line (%d+): (.*)$")
      assert.equal(c[2], tonumber(line), err)
      assert.matches(c[3], why)
    end
  end)

  it("ntt.core.mapfile: the C parser's own answer, and misuse raises", function()
    local cmap = require "ntt.core.mapfile"
    local m = assert(cmap.parse("0x10 ? 3\n0x0 0x10 +\n0x10 0x10 ?\n"))
    assert.equal(16, m.current_pos)
    assert.equal("?", m.current_status)
    assert.equal(3, m.pass)
    assert.equal(32, m.size)
    assert.equal(16, m.rescued_bytes)
    local none, err, code = cmap.parse("0 +\n0 1 +\n5 1 +\n")
    assert.is_nil(none)
    assert.equal("line 3: block at 5 leaves a gap after the previous block ending at 1 (blocks must be contiguous)", err)
    assert.equal("EINVAL", code)
    assert.has_error(function() cmap.parse(12) end)
    assert.has_error(function() cmap.parse() end)
  end)

  it("reads numbers as ddrescue does: 0x-hex, 0-octal, decimal", function()
    local m = assert(require("ntt.core.mapfile").parse("01000 - 2\n0 01000 +\n01000 0x200 -\n1024 512 ?\n"))
    assert.equal(512, m.current_pos)
    assert.equal(1536, m.size)
    assert.equal(512, m.rescued_bytes)
    assert.equal(3, #m.blocks)
    assert.same({ 512, 512, "-" }, { m.blocks[2].pos, m.blocks[2].size, m.blocks[2].status })
  end)

  it("never accepts a mutated map that breaks the rules, and names a real line", function()
    for _, text in ipairs(badmaps.fuzz(7, 400)) do
      local m, err, code = parse(text)
      if m then
        local at, rescued = 0, 0
        for _, b in ipairs(m.blocks) do
          assert.equal(at, b.pos, text)
          assert.is_true(b.size > 0, text)
          assert.truthy(mapfile.STATUS[b.status], text)
          if b.status == "+" then rescued = rescued + b.size end
          at = b.pos + b.size
        end
        assert.equal(at, m.size, text)
        assert.equal(rescued, m.rescued_bytes, text)
      else
        assert.equal("EINVAL", code)
        local line = tonumber(err:match("^t%.map: line (%d+): "))
        local lines = select(2, text:gsub("\n", "")) + (text:sub(-1) == "\n" and 0 or 1)
        assert.is_true(line ~= nil and line >= 1 and line <= math.max(lines, 1), err)
      end
    end
  end)

  it("accepts an empty map", function()
    local m = assert(parse("0 ?\n0 0 ?\n"))
    assert.equal(0, m.size)
    assert.equal(0, #m.blocks)
    assert.is_true(m:boot_sector_bad())
    assert.equal("failed", m:grade())
  end)
end)

describe("a parsed map", function()
  it("gives the rescued percentage of the map or of a given total", function()
    local m = assert(parse("0 +\n0 900 +\n900 100 -\n"))
    assert.equal(90.0, m:rescued_pct())
    assert.equal(45.0, m:rescued_pct(2000))
    assert.equal(100.0, m:rescued_pct(450))
  end)

  it("grades health by the thresholds", function()
    local function map_of(rescued)   -- percent of 1000 bytes rescued
      local t = { "0 +\n" }
      if rescued > 0 then t[#t + 1] = ("0 %d +\n"):format(rescued * 10) end
      if rescued < 100 then t[#t + 1] = ("%d %d -\n"):format(rescued * 10, 1000 - rescued * 10) end
      return assert(parse(table.concat(t)))
    end
    assert.equal("ok", map_of(100):grade())
    assert.equal("incomplete", map_of(99):grade())
    assert.equal("incomplete", map_of(90):grade())
    assert.equal("corrupt", map_of(89):grade())
    assert.equal("corrupt", map_of(20):grade())
    assert.equal("failed", map_of(19):grade())
    assert.equal("failed", map_of(0):grade())
    assert.equal("ok", map_of(50):grade(nil, 500))
    assert.equal("incomplete", map_of(100):grade(nil, 1100))   -- image larger than the map
    assert.equal("corrupt", map_of(95):grade({ incomplete = 99, corrupt = 50 }))
    assert.equal("failed", map_of(45):grade({ incomplete = 99, corrupt = 50 }))
  end)

  it("says when the boot sector is not rescued", function()
    assert.is_false(assert(parse("0 +\n0 512 +\n512 512 -\n")):boot_sector_bad())
    assert.is_true(assert(parse("0 +\n0 511 +\n511 513 -\n")):boot_sector_bad())
    assert.is_true(assert(parse("0 +\n0 512 /\n512 512 +\n")):boot_sector_bad())
    assert.is_true(assert(parse("0 +\n512 512 +\n")):boot_sector_bad())       -- gap
    assert.is_true(assert(parse("0 +\n0 256 +\n")):boot_sector_bad())         -- map ends early
    assert.is_true(assert(parse("0 +\n0 2048 +\n2048 2048 -\n")):boot_sector_bad(4096))
  end)

  it("merges adjacent holes of different statuses", function()
    local m = assert(parse("0 +\n0 100 +\n100 10 -\n110 10 /\n120 10 *\n130 10 +\n140 10 ?\n"))
    assert.same({ { pos = 100, size = 30, status = "-/*" }, { pos = 140, size = 10, status = "?" } },
                m:holes())
  end)

  it("gives the non-rescued parts of byte ranges", function()
    local m = assert(parse("0 +\n0 1000 +\n1000 24 -\n1024 1000 +\n2024 100 /\n"))
    assert.same({}, m:overlap({ { pos = 0, size = 1000 } }))
    assert.same({ { pos = 1000, size = 24, status = "-" } }, m:overlap({ { pos = 900, size = 200 } }))
    assert.same({ { pos = 1010, size = 5, status = "-" } }, m:overlap({ { pos = 1010, size = 5 } }))
    assert.same({ { pos = 1000, size = 24, status = "-" }, { pos = 2024, size = 176, status = "/?" } },
                m:overlap({ { pos = 0, size = 2200 } }))
    assert.same({ { pos = 5000, size = 10, status = "?" }, { pos = 1020, size = 4, status = "-" } },
                m:overlap({ { pos = 5000, size = 10 }, { pos = 1020, size = 100 } }))
  end)

  it("reads a file and reports a missing one with errno", function()
    local dir = helper.tmpdir("map")
    helper.write(dir .. "/a.map", SAMPLE)
    local m = assert(mapfile.read(dir .. "/a.map"))
    assert.equal(6, #m.blocks)
    local none, err, code = mapfile.read(dir .. "/none.map")
    assert.is_nil(none)
    assert.equal("ENOENT", code)
    assert.matches("none%.map", err)
    helper.write(dir .. "/bad.map", "0 +\n0 512 +\n100 1 +\n")
    local _, berr = mapfile.read(dir .. "/bad.map")
    assert.equal(dir .. "/bad.map: line 3: block at 100 overlaps or precedes the previous block ending at 512", berr)
  end)

  it("parses a 100k-line map quickly", function()
    local t = { "0x0 +\n" }
    for i = 0, 99999 do
      t[#t + 1] = ("0x%08X 0x%08X %s\n"):format(i * 4096, 4096, i % 2 == 0 and "+" or "-")
    end
    local util = require "ntt.core.util"
    local t0 = util.monotonic()
    local m = assert(parse(table.concat(t)))
    local dt = util.monotonic() - t0
    assert.equal(100000, #m.blocks)
    assert.equal(50.0, m:rescued_pct())
    assert.equal("-", m:status_at(4096 * 99999 + 5))
    assert.equal(50000, #m:holes())
    assert.is_true(dt < 5, "100k lines took " .. dt .. " s")
  end)
end)
