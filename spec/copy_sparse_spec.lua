-- spec/copy_sparse_spec.lua: zeros stay holes in the store.  The copy
-- engine leaves a whole buffer of zeros unwritten (a hole of the blob's
-- temp, its length set at the end), so a sparse file -- a VM disk in a
-- folder given as a medium, an erased area -- takes the store only what it
-- holds; the blob's content and BLAKE3 are the file's, byte for byte.
local helper = require "spec.support.helper"
local copy = require "ntt.core.copy"
local store = require "ntt.core.store"
local fs = require "ntt.core.fs"

local MiB = 1048576

local function b3(path) return (helper.sh { "b3sum", "--no-names", path }.stdout:match("%x+")) end

local poke = helper.poke

describe("copy of a sparse file", function()
  for _, durability in ipairs { "batch", "fsync", "none" } do
    it("stores 512 MiB of mostly holes as a blob of the same content, not 512 MiB (" .. durability .. ")", function()
      local dir = helper.tmpdir("sparse")
      local src = dir .. "/disk.vmdk"
      helper.sh { "truncate", "-s", tostring(512 * MiB), src }
      poke(src, 0, "head of the disk")
      poke(src, 300 * MiB + 12345, ("data in the middle "):rep(1000))   -- across a block boundary
      poke(src, 512 * MiB - 5, "tail!")                                -- the last byte is data
      local ends_in_hole = dir .. "/hole-at-end.bin"
      helper.sh { "truncate", "-s", tostring(8 * MiB + 3), ends_in_hole }
      poke(ends_in_hole, 3 * MiB, "x")
      local st = assert(store.open(dir .. "/store"))
      finally(function() st:close() end)
      local res = copy.batch(st, { { root = dir, path = "disk.vmdk", size = 512 * MiB, id = 1 },
                                   { root = dir, path = "hole-at-end.bin", size = 8 * MiB + 3, id = 2 } },
                             { threads = 2, durability = durability })
      for i, want in ipairs { src, ends_in_hole } do
        local r = res[i]
        assert.is_true(r.ok, r.msg)
        assert.equal(b3(want), r.blob)
        local blob = st:path(r.blob)
        local bst = assert(fs.stat(blob))
        assert.equal(assert(fs.stat(want)).size, bst.size)
        assert.equal(r.blob, b3(blob))
        assert.equal("", helper.sh({ "cmp", want, blob }, { may_fail = true }).stdout)
      end
      -- what the big blob takes on disk: its few data blocks, not 512 MiB
      local used = tonumber(helper.sh { "stat", "-c", "%b", st:path(res[1].blob) }.stdout) * 512
      assert.is_true(used < 16 * MiB, ("the blob takes %d bytes"):format(used))
    end)
  end
end)
