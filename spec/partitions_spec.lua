-- spec/partitions_spec.lua: every partition, every time.  The layout probe
-- keeps every entry of a table (no fixed cap), reads a GPT cut short from its
-- primary header, reports a looping MBR extended chain; `ntt run` mounts and
-- copies every partition and says which ones it could not.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local cmedia = require "ntt.core.media"
local media = require "ntt.media"
local hash = require "ntt.core.hash"

local MiB = images.MiB

local function kinds(problems)
  local out = {}
  for _, pr in ipairs(problems) do out[pr.kind] = (out[pr.kind] or 0) + 1 end
  return out
end

describe("the layout probe", function()
  local dir
  setup(function() dir = helper.tmpdir("parts") end)

  it("keeps all 40 partitions of a GPT disk, each with its filesystem", function()
    local img = images.gpt(dir .. "/g40.img", { size_mb = 42, parts = images.tiny_parts(dir, 40) })
    local p = assert(cmedia.probe(img))
    assert.equal("gpt", p.pttype)
    assert.is_nil(p.gpt_primary)
    assert.equal(40, #p.partitions)
    for i, part in ipairs(p.partitions) do
      assert.same({ i, i * MiB, MiB, "ext2", false }, { part.fs_index, part.offset, part.size, part.fstype, part.truncated })
    end
  end)

  it("has no cap: 150 partitions of a 256-entry GPT", function()
    local parts = {}
    for i = 1, 150 do parts[i] = { start_mb = i, size_mb = 1 } end
    local img = images.gpt(dir .. "/g150.img", { size_mb = 152, parts = parts, entries = 256 })
    local p = assert(cmedia.probe(img))
    assert.equal(150, #p.partitions)
    assert.same({ 150, 150 * MiB, "part150" }, { p.partitions[150].fs_index, p.partitions[150].offset,
                                                 p.partitions[150].name })
  end)

  it("reads a GPT cut short from its primary header: partitions inside kept, the rest truncated", function()
    local img = images.gpt(dir .. "/cut.img", { size_mb = 10, parts = images.tiny_parts(dir, 8) })
    local whole = assert(cmedia.probe(img))
    images.truncate(img, 5 * MiB)                   -- right after partition 4
    local p = assert(cmedia.probe(img))
    assert.equal("gpt", p.pttype)
    assert.is_true(p.gpt_primary)
    assert.equal(whole.ptuuid, p.ptuuid)
    assert.equal(8, #p.partitions)
    for i, part in ipairs(p.partitions) do
      -- the same entries libblkid read from the whole image
      local w = whole.partitions[i]
      assert.same({ w.fs_index, w.offset, w.size, w.type, w.partuuid, w.name },
                  { part.fs_index, part.offset, part.size, part.type, part.partuuid, part.name })
      assert.equal(i > 4, part.truncated)
      assert.equal(i <= 4 and "ext2" or nil, part.fstype)
    end
    local r = media.inspect { kind = "image", image_path = img, size = 5 * MiB }
    local k = kinds(r.problems)
    assert.equal(4, k.partition_truncated)
    assert.equal(1, k.gpt_backup_missing)
  end)

  it("does not take a primary GPT whose CRC is wrong", function()
    local img = images.gpt(dir .. "/bad.img", { size_mb = 10, parts = images.tiny_parts(dir, 2) })
    images.truncate(img, 5 * MiB)
    local f = assert(io.open(img, "r+b"))
    f:seek("set", 1024 + 56)                        -- a byte of entry 1's name
    f:write("X")
    f:close()
    local p = assert(cmedia.probe(img))
    assert.is_nil(p.pttype)
    assert.same({}, p.partitions)
  end)

  it("keeps every logical partition of a long MBR extended chain", function()
    local logical = {}
    for i = 1, 60 do logical[i] = { start_mb = 2 * i + 2, size_mb = 1 } end
    local img = images.mbr(dir .. "/ebr60.img", { size_mb = 124, parts = { { start_mb = 1, size_mb = 2 } },
                                                   logical = logical })
    local p = assert(cmedia.probe(img))
    assert.is_nil(p.ebr_loop)
    assert.equal(62, #p.partitions)                 -- a primary, the container, 60 logical
    local last = p.partitions[62]
    assert.same({ 64, 122 * MiB, MiB }, { last.fs_index, last.offset, last.size })
  end)

  it("reports an MBR extended chain that loops, keeping each logical partition once", function()
    local img = images.mbr(dir .. "/ebr.img", { size_mb = 12, parts = { { start_mb = 1, size_mb = 2 } },
      logical = { { start_mb = 4, size_mb = 1 }, { start_mb = 6, size_mb = 1 }, { start_mb = 8, size_mb = 1 } } })
    assert.is_nil(assert(cmedia.probe(img)).ebr_loop)
    -- the last EBR (at 7 MiB) links back to the second (5 MiB; the container starts at 3 MiB)
    local f = assert(io.open(img, "r+b"))
    f:seek("set", 7 * MiB + 446 + 16)
    f:write(string.pack("<BBBBBBBBI4I4", 0, 0xfe, 0xff, 0xff, 5, 0xfe, 0xff, 0xff, 2 * 2048, 2 * 2048))
    f:close()
    local p = assert(cmedia.probe(img))
    assert.is_true(p.ebr_loop)
    local idx = {}
    for _, part in ipairs(p.partitions) do idx[#idx + 1] = part.fs_index end
    assert.same({ 1, 2, 5, 6, 7 }, idx)
    local r = media.inspect { kind = "image", image_path = img, size = 12 * MiB }
    assert.equal(1, kinds(r.problems).partition_chain_loop)
  end)
end)

describe("ntt run on many partitions", function()
  local ok, why = runs.can_run { fuse = true }
  if not ok then
    it("mounts and copies every partition", function() pending(why) end)
    return
  end

  local db = runs.db

  local function run(home, argv) return runs.run(home, argv, 600) end

  -- fs_index -> blob id of each copied pN.txt
  local function copied(h)
    local rows = assert(db():exec(("SELECT p.fs_index, p.path, i.blobid FROM path_p_%s p JOIN inode_p_%s i "
      .. "USING (fs_index, ino) WHERE i.state = 'copied'"):format(h, h)))
    local out = {}
    for _, row in ipairs(rows) do
      if row.path == ("p%d.txt"):format(row.fs_index) then out[row.fs_index] = row.blobid end
    end
    return out
  end

  local function fs_rows(h)
    local out = {}
    for _, row in ipairs(assert(db():exec("SELECT fs_index, mount_status FROM filesystem WHERE medium_hash = $1", h))) do
      out[row.fs_index] = row.mount_status
    end
    return out
  end

  -- The tag in the unused sectors after the GPT entry array: the medium's
  -- sampled hash (first and last MiB) then differs from one run to the next.
  local function stamp(img, tag)
    local f = assert(io.open(img, "r+b"))
    f:seek("set", 64 * 1024)
    f:write(tag)
    f:close()
    return img
  end

  after_each(runs.unmount)

  it("mounts and copies all 40 partitions of a GPT disk", function()
    local dir = helper.tmpdir("parts40")
    local tag = runs.tag .. "-40"
    local img = stamp(images.gpt(dir .. "/g40.img", { size_mb = 42, parts = images.tiny_parts(dir, 40, tag) }), tag)
    local r = run(dir .. "/home", { runs.policy(dir), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local h = runs.medium_of(img)
    local got, rows = copied(h), fs_rows(h)
    for i = 1, 40 do
      assert.equal(hash.sum(("partition %d %s\n"):format(i, tag)), got[i], "partition " .. i)
      assert.matches("^mounted", rows[i])
    end
    local l = helper.sh { "losetup", "-a" }
    assert.is_nil(l.stdout:find(img, 1, true))
  end)

  it("copies partitions 1-4 of a GPT cut after partition 4 and records the rest as truncated", function()
    local dir = helper.tmpdir("partscut")
    local tag = runs.tag .. "-cut"
    local img = stamp(images.gpt(dir .. "/cut.img", { size_mb = 10, parts = images.tiny_parts(dir, 8, tag) }), tag)
    images.truncate(img, 5 * MiB)
    local r = run(dir .. "/home", { runs.policy(dir), img })
    assert.is_true(r.code ~= 0, "exit code " .. r.code)
    local h = runs.medium_of(img)
    local got, rows = copied(h), fs_rows(h)
    for i = 1, 4 do
      assert.equal(hash.sum(("partition %d %s\n"):format(i, tag)), got[i], "partition " .. i)
    end
    for i = 5, 8 do
      assert.is_nil(got[i])
      assert.matches("^truncated", rows[i])
    end
    local pr = assert(db():exec("SELECT problems::text AS p FROM medium WHERE medium_hash = $1", h))[1].p
    assert.matches('"partition_truncated"', pr)
    assert.matches('"gpt_backup_missing"', pr)
  end)
end)
