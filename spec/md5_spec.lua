-- spec/md5_spec.lua: ntt.md5, which names the partitions of a long medium
-- hash (db.partition_names) as md5sum once did, without a process.
local helper = require "spec.support.helper"
local md5 = require "ntt.md5"
local db = require "ntt.db"

describe("ntt.md5", function()
  it("matches RFC 1321's test suite", function()
    assert.equal("d41d8cd98f00b204e9800998ecf8427e", md5.hex(""))
    assert.equal("0cc175b9c0f1b6a831c399e269772661", md5.hex("a"))
    assert.equal("900150983cd24fb0d6963f7d28e17f72", md5.hex("abc"))
    assert.equal("f96b697d7cb7938d525a2f31aaf161d0", md5.hex("message digest"))
    assert.equal("c3fcd3d76192e4007dfb496cca67e13b", md5.hex("abcdefghijklmnopqrstuvwxyz"))
    assert.equal("57edf4a22be3c955ac49da2e2107b67a", md5.hex(("1234567890"):rep(8)))
    assert.has_error(function() md5.hex(nil) end)
  end)

  it("agrees with md5sum around the padding boundaries", function()
    local r = helper.sh({ "md5sum", "--version" }, { may_fail = true })
    if r.code ~= 0 then return pending("no md5sum") end
    for _, n in ipairs { 55, 56, 57, 63, 64, 65, 119, 120, 128 } do
      local s = ("%x"):format(n * 7919):rep(64):sub(1, n)
      local want = helper.sh({ "md5sum" }, { input = s }).stdout:match("^(%x+)")
      assert.equal(want, md5.hex(s), "length " .. n)
    end
  end)

  it("names a long hash's partitions by the md5 of the whole hash", function()
    local h = ("0123456789abcdef"):rep(4)
    assert.same({ "inode_h_" .. md5.hex(h), "path_h_" .. md5.hex(h) }, { db.partition_names(h) })
    assert.equal("inode_h_fe3a1ff59f3b89b2ad3d33f08984874b", (db.partition_names(h)))
  end)
end)
