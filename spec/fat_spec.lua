-- spec/fat_spec.lua: ntt.core.fat finds a FAT file's clusters in its image
-- (FAT12, FAT16, FAT32; long and 8.3 names; subdirectories; at an offset),
-- and says why when it cannot.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local fat = require "ntt.core.fat"

-- The file's bytes as its extents place them in the image.
local function read_back(img, base, x, size)
  local f = assert(io.open(img, "rb"))
  local parts = {}
  for _, e in ipairs(x) do
    f:seek("set", base + e.physical)
    parts[#parts + 1] = f:read(e.length)
  end
  f:close()
  return table.concat(parts):sub(1, size)
end

local have = require("spec.support.mediaimg").have

describe("ntt.core.fat", function()
  if not (have("mkfs.vfat") and have("mcopy") and have("mmd")) then
    it("maps FAT files", function() pending("dosfstools and mtools are not installed") end)
    return
  end

  local function build(dir, sizearg, fatbits)
    local img = dir .. "/fat" .. fatbits .. ".img"
    helper.sh { "mkfs.vfat", "-C", "-F", tostring(fatbits), img, tostring(sizearg) }
    local src = helper.tmpdir("fatsrc")
    local files = {
      ["A.BIN"] = ("a"):rep(70000),
      ["Long Name Ünïcode.txt"] = "long name " .. fatbits,
      ["SUB/Deeper/x.dat"] = ("x"):rep(5000) .. "end",
      ["EMPTY"] = "",
    }
    helper.sh { "mmd", "-i", img, "::/SUB", "::/SUB/Deeper" }
    -- fragment A.BIN: a file written before it and deleted after
    helper.write(src .. "/gap", ("g"):rep(3000))
    helper.sh { "mcopy", "-i", img, src .. "/gap", "::/GAP" }
    for name, content in pairs(files) do
      local local_name = src .. "/" .. name:gsub("/", "_")
      helper.write(local_name, content)
      helper.sh { "mcopy", "-i", img, local_name, "::/" .. name }
    end
    helper.sh { "mdel", "-i", img, "::/GAP" }
    return img, files
  end

  for _, c in ipairs { { 1440, 12 }, { 20 * 1024, 16 }, { 40 * 1024, 32 } } do
    it(("finds every file's bytes on FAT%d"):format(c[2]), function()
      local dir = helper.tmpdir("fat")
      local img, files = build(dir, c[1], c[2])
      for name, content in pairs(files) do
        local x, size = fat.extents(img, 0, name)
        assert.truthy(x, size)
        assert.equal(#content, size)
        assert.equal(content, read_back(img, 0, x, size), name)
        for _, e in ipairs(x) do assert.equal(0, e.flags) end
      end
      -- 8.3 names in any case; a long name exactly
      assert.truthy(fat.extents(img, 0, "sub/deeper/X.DAT"))
      assert.truthy(fat.extents(img, 0, "/A.BIN"))
      -- at an offset (a Zip disk's 16 KiB, a partition)
      local zip = images.zip(dir .. "/zip.img", img)
      local x, size = assert(fat.extents(zip, 16384, "A.BIN"))
      assert.equal(files["A.BIN"], read_back(zip, 16384, x, size))
    end)
  end

  it("says why it cannot map a path", function()
    local dir = helper.tmpdir("fatbad")
    local img = build(dir, 1440, 12)
    assert.same({ nil, "nope: No such file or directory", "ENOENT" }, { fat.extents(img, 0, "nope") })
    assert.equal("ENOENT", select(3, fat.extents(img, 0, "Long Name Unicode.txt")))
    assert.equal("EISDIR", select(3, fat.extents(img, 0, "SUB")))
    assert.equal("ENOTDIR", select(3, fat.extents(img, 0, "A.BIN/x")))
    assert.equal("EINVAL", select(3, fat.extents(img, 512, "A.BIN")))
    local small = dir .. "/small"
    helper.write(small, "tiny")
    assert.equal("EINVAL", select(3, fat.extents(small, 0, "A.BIN")))
    assert.equal("ENOENT", select(3, fat.extents(dir .. "/missing.img", 0, "A.BIN")))
    -- a chain that loops: A.BIN's first cluster points at itself
    local f = assert(io.open(img, "r+b"))
    local bs = f:read(512)
    local bps, spc, rsvd, nfats = string.unpack("<I2I1I2I1", bs, 12)
    local roots, fatsz = string.unpack("<I2", bs, 18), string.unpack("<I2", bs, 23)
    local data = (rsvd + nfats * fatsz) * bps + roots * 32
    local x = assert(fat.extents(img, 0, "A.BIN"))
    local c = (x[1].physical - data) // (bps * spc) + 2
    local off = rsvd * bps + c + c // 2
    f:seek("set", off)
    local v = string.unpack("<I2", f:read(2))
    v = (c % 2 == 1) and ((v & 0x000f) | (c << 4)) or ((v & 0xf000) | c)
    f:seek("set", off)
    f:write(string.pack("<I2", v))
    f:close()
    assert.equal("EUCLEAN", select(3, fat.extents(img, 0, "A.BIN")))
    assert.has_error(function() fat.extents(img, -1, "A.BIN") end)
    assert.has_error(function() fat.extents(img) end)
  end)

  it("answers for a few hundred damaged images without crashing", function()
    local dir = helper.tmpdir("fatfuzz")
    local img, files = build(dir, 1440, 12)
    local clean = helper.read(img)
    local head = #clean > 24576 and 24576 or #clean     -- boot sector, FATs, root, first clusters
    local codes = { ENOENT = true, ENOTDIR = true, EISDIR = true, EINVAL = true, EUCLEAN = true, EIO = true }
    local names = {}
    for name in pairs(files) do names[#names + 1] = name end
    table.sort(names)
    math.randomseed(1414)
    local bad = dir .. "/bad.img"
    for _ = 1, 300 do
      local bytes = { clean:byte(1, head) }
      for _ = 1, math.random(1, 24) do bytes[math.random(1, head)] = math.random(0, 255) end
      local parts = {}
      for i = 1, head, 4096 do parts[#parts + 1] = string.char(table.unpack(bytes, i, math.min(head, i + 4095))) end
      helper.write(bad, table.concat(parts) .. clean:sub(head + 1))
      for _, name in ipairs(names) do
        local x, size, code = fat.extents(bad, 0, name)
        if x then
          assert.is_true(math.type(size) == "integer" and size >= 0)
          for _, e in ipairs(x) do assert.is_true(e.physical >= 0 and e.length > 0) end
        else
          assert.is_string(size)
          assert.is_true(codes[code] == true, tostring(code))
        end
      end
    end
  end)
end)
