-- spec/verify_core_spec.lua: ntt.core.verify.files -- many files hashed at
-- once give what hash.file gives each; a big file tree-hashed on every
-- thread through a mapping (a read error in it is EIO); a rate slows the
-- reading; a file's failure is its own.
local helper = require "spec.support.helper"
local verify = require "ntt.core.verify"
local hash = require "ntt.core.hash"
local util = require "ntt.core.util"
local fs = require "ntt.core.fs"
local slowfs = require "spec.support.slowfs"

describe("ntt.core.verify.files", function()
  it("hashes many files side by side, each as hash.file does, and a missing one fails alone", function()
    local dir = helper.tmpdir("vcore")
    local paths = {}
    for i = 1, 40 do
      paths[i] = ("%s/f%02d"):format(dir, i)
      helper.write(paths[i], ("file %d "):format(i):rep(i * 997))
    end
    helper.write(dir .. "/empty", "")
    paths[#paths + 1] = dir .. "/empty"
    paths[#paths + 1] = dir .. "/missing"
    local res = assert(verify.files(paths, { threads = 3 }))
    assert.equal(#paths, #res)
    for i = 1, #paths - 1 do
      local hex, size = hash.file(paths[i])
      assert.same({ blake3 = hex, size = size }, res[i])
    end
    assert.equal("ENOENT", res[#res].err)
    assert.matches("missing", res[#res].msg)
    assert.same({}, verify.files({}))
  end)

  it("tree-hashes a big file on every thread, and reads it plainly under a rate", function()
    local dir = helper.tmpdir("vcorebig")
    local big = dir .. "/big"
    local f = assert(io.open(big, "wb"))
    local block = ("0123456789abcdef"):rep(65536)   -- 1 MiB
    for i = 1, 65 do f:write(block:sub(i) .. block:sub(1, i - 1)) end
    f:write("tail")
    f:close()
    local want, size = hash.file(big, nil, "read")
    local res = assert(verify.files({ big }, { threads = 2 }))
    assert.same({ blake3 = want, size = size }, res[1])
    -- 4 MiB at 16 MiB/s: a quarter of a second at least
    local small = dir .. "/small"
    helper.write(small, block:rep(4))
    local t0 = util.monotonic()
    res = assert(verify.files({ small }, { rate = 16 * 1048576 }))
    assert.is_true(util.monotonic() - t0 >= 0.2)
    assert.equal(hash.file(small), res[1].blake3)
  end)

  it("a big file whose reads fail is EIO through its mapping, and the next files hash", function()
    local bin, why = slowfs.bin()
    if not bin then return pending(why) end
    local mnt = helper.tmpdir("vcorebus") .. "/m"
    slowfs.mount(finally, mnt, { SLOWFS_DIRS = "1", SLOWFS_FILES = "1", SLOWFS_BAD = "1",
                                 SLOWFS_BAD_MIB = "80", SLOWFS_LATENCY_MS = "0" })
    local bad = mnt .. "/bad/e00.bin"
    assert.equal(80 * 1048576, fs.stat(bad).size)
    local good = helper.tmpdir("vcorebus2") .. "/big"
    local f = assert(io.open(good, "wb"))
    local block = ("0123456789abcdef"):rep(65536)
    for i = 1, 70 do f:write(block:sub(i) .. block:sub(1, i - 1)) end
    f:close()
    local res = assert(verify.files({ bad, good }, { threads = 2 }))
    assert.equal("EIO", res[1].err)
    assert.equal(hash.file(good, nil, "read"), res[2].blake3)
    res = assert(verify.files({ good }, { threads = 2 }))
    assert.equal(hash.file(good, nil, "read"), res[1].blake3)
  end)

  it("raises on an unknown option", function()
    assert.has_error(function() verify.files({}, { thread = 2 }) end)
  end)
end)
