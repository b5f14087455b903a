-- spec/export_core_spec.lua: ntt.core.export (blobs out as real files,
-- re-hashed on the way) and the BagIt name rule of ntt.bagit, without a
-- database.
local helper = require "spec.support.helper"
local export = require "ntt.core.export"
local bagit = require "ntt.bagit"
local fs = require "ntt.core.fs"
local hash = require "ntt.core.hash"

local function blob(dir, data)
  local p = dir .. "/blob-" .. hash.sum(data):sub(1, 12)
  helper.write(p, data)
  return p, hash.sum(data)
end

describe("ntt.core.export", function()
  it("writes files, directories and symlinks beneath root with modes and mtimes", function()
    local dir = helper.tmpdir("excore")
    local out = dir .. "/out"
    assert(fs.mkdirp(out))
    local src, b3 = blob(dir, "hello\n")
    local res = assert(export.write(out, {
      { path = "d", type = "d" },
      { path = "d/f", type = "f", src = src, blake3 = b3, size = 6, mode = tonumber("4755", 8), mtime_ns = 1000000000123 },
      { path = "d/l", type = "l", target = "f", mtime_ns = 2000000000000 },
    }, { sha256 = true }))
    assert.is_true(res[1])
    assert.equal(6, res[2].size)
    assert.equal(export.sha256("hello\n"), res[2].sha256)
    assert.equal("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03", res[2].sha256)
    assert.is_true(res[3])
    local st = fs.stat(out .. "/d/f")
    assert.equal(tonumber("755", 8), st.mode)               -- no setuid
    assert.equal(1000000000123, st.mtime_ns)
    assert.equal(2000000000000, fs.stat(out .. "/d/l", true).mtime_ns)
    assert(export.finish(out, { { path = "d", mode = tonumber("750", 8), mtime_ns = 3000000000000 } }))
    st = fs.stat(out .. "/d")
    assert.equal(tonumber("750", 8), st.mode)
    assert.equal(3000000000000, st.mtime_ns)
  end)

  it("does not write a blob that does not match, nor replace, nor leave root", function()
    local dir = helper.tmpdir("excore-bad")
    local out = dir .. "/out"
    assert(fs.mkdirp(out))
    local src, b3 = blob(dir, "content\n")
    helper.write(src, "c0ntent\n")                            -- rotted after it was named
    helper.write(out .. "/there", "x")
    local res = assert(export.write(out, {
      { path = "f", type = "f", src = src, blake3 = b3, size = 8 },
      { path = "there", type = "f", src = src, blake3 = b3, size = 8 },
      { path = "../escape", type = "d" },
      { path = "missing/f", type = "f", src = src, blake3 = b3, size = 8 },
    }))
    assert.equal("EBADMSG", res[1].err)
    assert.is_nil(fs.stat(out .. "/f"))
    assert.equal("EEXIST", res[2].err)
    assert.equal("x", helper.read(out .. "/there"))
    assert.equal("EXDEV", res[3].err)
    assert.is_nil(fs.stat(dir .. "/escape"))
    assert.equal("ENOENT", res[4].err)
  end)

  it("raises on misuse", function()
    assert.has_error(function() export.write("/tmp", {}, { sha265 = true }) end)
    assert.has_error(function() export.write("/tmp", { { path = "x", type = "q" } }) end)
    assert.has_error(function() export.write("/tmp", { { path = "/abs", type = "d" } }) end)
    local r, err, code = export.write("/nonexistent-" .. os.time(), {})
    assert.is_nil(r)
    assert.equal("ENOENT", code, err)
  end)
end)

describe("ntt.bagit names", function()
  it("keeps UTF-8 names and escapes the others reversibly", function()
    assert.same({ "café.txt", false }, { bagit.name("café.txt") })
    assert.same({ "a=b", false }, { bagit.name("a=b") })
    assert.same({ "caf=E9.txt", true }, { bagit.name("caf\xe9.txt") })
    assert.same({ "caf=E9=3D=01é", true }, { bagit.name("caf\xe9=\1é") })
    assert.same({ "=C3", true }, { bagit.name("\xc3") })           -- a sequence cut short
    local function undo(s) return (s:gsub("=(%x%x)", function(h) return string.char(tonumber(h, 16)) end)) end
    for _, n in ipairs { "caf\xe9.txt", "x=\xff=y", "\xed\xa0\x80", "tab\there" } do
      assert.equal(n, undo((bagit.name(n))))
    end
    assert.equal("data/100%25 %0D%0A", bagit.manifest_path("data/100% \r\n"))
  end)
end)
