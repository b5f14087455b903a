-- spec/identify_spec.lua: the medium hash (DESIGN §4) and `ntt identify`.
local helper = require "spec.support.helper"
local media = require "ntt.media"
local proc = require "ntt.core.proc"

local MIB = 1048576
local has_hash = pcall(require, "ntt.core.hash")

local function need_hash()
  if not has_hash then pending("ntt.core.hash not available") end
  return has_hash
end

-- The expected hash, computed independently with b3sum.
local function b3(data)
  local r = assert(proc.run { argv = { "b3sum", "--no-names" }, input = data })
  assert(r.code == 0, r.stderr)
  return r.stdout:sub(1, 32)
end

local function bytes(n, seed)
  local t, x = {}, seed
  for i = 1, n do x = (x * 1103515245 + 12345) % 2147483648; t[i] = string.char((x >> 16) % 256) end
  return table.concat(t)
end

local function big(n, seed)   -- n bytes, not uniform, quick to build
  local block = bytes(4096, seed)
  return (block:rep(n // 4096 + 1)):sub(1, n - 1) .. string.char(seed % 256)
end

local function ntt(args, env)
  local argv = { helper.ntt }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return assert(proc.run { argv = argv, env = env, timeout = 60 })
end

describe("media.identify", function()
  local dir
  setup(function() dir = helper.tmpdir("ident") end)

  it("names an image by BLAKE3 of its whole content (32 hex), samples SIZE|MODEL|SERIAL| + first + last MiB", function()
    if not need_hash() then return end
    local data = big(3 * MIB + 17, 5)
    helper.write(dir .. "/disk.img", data)
    local id = assert(media.identify(dir .. "/disk.img"))
    assert.matches("^[0-9a-f]+$", id.hash)
    assert.equal(32, #id.hash)
    assert.equal(b3(data), id.hash)
    assert.is_true(id.hashed)
    assert.equal(b3(("SIZE:%d|MODEL:unknown|SERIAL:unknown|"):format(#data) .. data:sub(1, MIB)
                    .. data:sub(-MIB)), id.sampled_hash)
    assert.equal("image", id.kind)
    assert.equal("disk", id.human)
    assert.equal(#data, id.size)
    assert.equal("unknown", id.model)
    assert.equal("unknown", id.serial)
    assert.equal(dir .. "/disk.img", id.image_path)
    assert.is_nil(id.map_path)
  end)

  it("samples a small image's whole content twice, like head + tail", function()
    if not need_hash() then return end
    local data = bytes(5000, 9)
    helper.write(dir .. "/small.img", data)
    local id = assert(media.identify(dir .. "/small.img"))
    assert.equal(b3(data), id.hash)
    assert.equal(b3("SIZE:5000|MODEL:unknown|SERIAL:unknown|" .. data .. data), id.sampled_hash)
  end)

  it("gives the same content under another name the same hash, other content another", function()
    if not need_hash() then return end
    local data = big(2 * MIB, 3)
    helper.write(dir .. "/a.img", data)
    helper.write(dir .. "/b.raw", data)
    helper.write(dir .. "/c.img", data:sub(1, -2) .. "\255")
    local a, b, c = media.identify(dir .. "/a.img"), media.identify(dir .. "/b.raw"), media.identify(dir .. "/c.img")
    assert.equal(a.hash, b.hash)
    assert.not_equal(a.hash, c.hash)
    assert.equal("b", b.human)
  end)

  it("keeps the stem of a hash-named image as its hash", function()
    for _, h in ipairs { "0123456789abcdef", "488de202f73bd976de4e7048f4e1f39a", string.rep("ab", 32) } do
      helper.write(dir .. "/" .. h .. ".img", "some bytes")
      local id = assert(media.identify(dir .. "/" .. h .. ".img"))
      assert.equal(h, id.hash)
      assert.equal(h, id.human)
    end
  end)

  it("hashes an image whose stem is upper case, too short or too long hex", function()
    if not need_hash() then return end
    for _, name in ipairs { "0123456789ABCDEF", "0123456789abcde", string.rep("a", 65) } do
      helper.write(dir .. "/" .. name .. ".img", "some bytes")
      local id = assert(media.identify(dir .. "/" .. name .. ".img"))
      assert.not_equal(name, id.hash)
      assert.equal(32, #id.hash)
    end
  end)

  it("refuses an empty image with a clear error, so two empty images never share a hash", function()
    helper.write(dir .. "/x.img", "")
    helper.write(dir .. "/y.img", "")
    local id, err, code = media.identify(dir .. "/x.img")
    assert.is_nil(id)
    assert.equal("EINVAL", code)
    assert.equal(dir .. "/x.img: empty image (0 bytes): nothing to identify", err)
    local id2, err2 = media.identify(dir .. "/y.img")
    assert.is_nil(id2)
    assert.matches("y%.img: empty image", err2)
    local none, _, ncode = media.identify(dir .. "/missing.img")
    assert.is_nil(none)
    assert.equal("ENOENT", ncode)
  end)

  it("hashes a directory medium from its canonical path", function()
    if not need_hash() then return end
    local d = dir .. "/roms"
    helper.sh { "mkdir", "-p", d }
    helper.sh { "ln", "-s", d, dir .. "/link" }
    local id = assert(media.identify(d))
    assert.equal("directory", id.kind)
    assert.equal("roms", id.human)
    assert.equal(d, id.image_path)
    assert.equal(b3("DIR:" .. d), id.hash)
    assert.equal(id.hash, assert(media.identify(dir .. "/link")).hash)
    assert.equal(id.hash, assert(media.identify(d .. "/../roms/")).hash)
  end)

  it("finds the mapfile beside the image as <stem>.map or <image>.map", function()
    local h1, h2 = "00112233445566778899aabbccddeeff", "ffeeddccbbaa99887766554433221100"
    helper.write(dir .. "/" .. h1 .. ".img", "x")
    helper.write(dir .. "/" .. h1 .. ".map", "0 +\n0 1 +\n")
    helper.write(dir .. "/" .. h2 .. ".img", "x")
    helper.write(dir .. "/" .. h2 .. ".img.map", "0 +\n0 1 +\n")
    assert.equal(dir .. "/" .. h1 .. ".map", assert(media.identify(dir .. "/" .. h1 .. ".img")).map_path)
    assert.equal(dir .. "/" .. h2 .. ".img.map", assert(media.identify(dir .. "/" .. h2 .. ".img")).map_path)
    local h3 = "0123456789abcdef0123"
    helper.write(dir .. "/" .. h3 .. ".img", "x")
    assert.is_nil(assert(media.identify(dir .. "/" .. h3 .. ".img")).map_path)
  end)

  it("identifies a loop device by the sampled hash of the image behind it (no model or serial)", function()
    if not need_hash() then return end
    if not helper.is_root() then return pending("needs root for losetup") end
    local data = big(3 * MIB, 21)
    helper.write(dir .. "/dev.img", data)
    local loop = helper.sh({ "losetup", "-r", "-f", "--show", dir .. "/dev.img" }).stdout:gsub("%s+$", "")
    finally(function() helper.sh({ "losetup", "-d", loop }, { may_fail = true }) end)
    local id = assert(media.identify(loop))
    assert.equal("device", id.kind)
    assert.equal(#data, id.size)
    assert.equal(512, id.logical_sector)
    assert.equal(assert(media.identify(dir .. "/dev.img")).sampled_hash, id.hash)
    assert.equal(id.hash, id.sampled_hash)
    local facts = assert(require("ntt.core.media").device_facts(loop))
    assert.equal(#data, facts.size)
    local _, _, code = require("ntt.core.media").device_facts(dir .. "/dev.img")
    assert.equal("ENOTBLK", code)
  end)
end)

describe("ntt identify", function()
  local dir
  setup(function() dir = helper.tmpdir("identcli") end)

  it("prints the hash and the facts of each target", function()
    local h = "0123456789abcdef0123456789abcdef"
    helper.write(dir .. "/" .. h .. ".img", "bytes")
    helper.write(dir .. "/" .. h .. ".map", "0 +\n0 5 +\n")
    local r = ntt { "identify", dir .. "/" .. h .. ".img" }
    assert.equal(0, r.code, r.stderr)
    assert.matches("^" .. h .. "  " .. dir:gsub("%p", "%%%0") .. "/" .. h .. "%.img\n", r.stdout)
    assert.matches("\n  kind +image\n", r.stdout)
    assert.matches("\n  size +5 %(5 B%)\n", r.stdout)
    assert.matches("\n  mapfile +" .. dir:gsub("%p", "%%%0") .. "/" .. h .. "%.map\n", r.stdout)
  end)

  it("prints JSON with --json and fails with status 1 on an empty image", function()
    local json = require "ntt.json"
    local h = "fedcba9876543210"
    helper.write(dir .. "/" .. h .. ".img", "bytes")
    helper.write(dir .. "/empty.img", "")
    local r = ntt { "identify", "--json", dir .. "/" .. h .. ".img", dir .. "/empty.img" }
    assert.equal(1, r.code)
    assert.matches("empty%.img: empty image %(0 bytes%): nothing to identify", r.stderr)
    local lines = {}
    for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = assert(json.decode(l)) end
    assert.equal(2, #lines)
    assert.equal(h, lines[1].hash)
    assert.equal("image", lines[1].kind)
    assert.equal(5, lines[1].size)
    assert.equal("EINVAL", lines[2].errname)
    assert.is_nil(lines[2].hash)
  end)

  it("hashes with the real BLAKE3 from the command line", function()
    if not need_hash() then return end
    local data = bytes(3000, 4)
    helper.write(dir .. "/floppy.img", data)
    local r = ntt { "identify", dir .. "/floppy.img" }
    assert.equal(0, r.code, r.stderr)
    assert.equal(b3(data), r.stdout:sub(1, 32))
  end)

  it("rejects no targets and unknown options with a usage status", function()
    assert.equal(64, ntt({ "identify" }).code)
    assert.equal(64, ntt({ "identify", "--bogus", "x" }).code)
  end)
end)

describe("ntt inspect", function()
  it("prints the map summary, erased state and filesystems", function()
    local dir = helper.tmpdir("inspectcli")
    local h = "abcdefabcdefabcdef"
    helper.write(dir .. "/" .. h .. ".img", string.rep("\xf6", 1474560))
    helper.write(dir .. "/" .. h .. ".map", "0 +\n0 0x100000 +\n0x100000 0x68000 -\n")
    local r = ntt { "inspect", dir .. "/" .. h .. ".img" }
    assert.equal(0, r.code, r.stderr)
    assert.matches("rescued +71%.11%%, health corrupt, 1 hole\n", r.stdout)
    assert.matches("hole +0x0000100000 +425984 bytes +%-\n", r.stdout)
    assert.matches("erased +yes, every byte is 0xf6\n", r.stdout)
    assert.matches("problem +erased_disk", r.stdout)
    local j = ntt { "inspect", "--json", dir .. "/" .. h .. ".img" }
    local o = assert(require("ntt.json").decode(j.stdout))
    assert.equal(246, o.erased.byte)
    assert.equal("corrupt", o.health)
    assert.equal(h, o.medium.hash)
  end)
end)
