-- spec/layout_spec.lua: `ntt inspect` (ntt.core.media.probe) and the mount
-- helper read a medium's layout with one probe (src/media/layout.c), so on
-- the same image they report the same partitions: fs_index, offset, size,
-- filesystem type, and the same partition table.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local cmedia = require "ntt.core.media"
local mh = require "spec.support.mounthelper"

local MiB = images.MiB

describe("one layout probe for inspect and the mount helper", function()
  -- for this file's specs only: later spec files see the defaults again
  local t, why = mh.setup("layout", teardown)
  if not t then it("runs", function() pending(why) end) return end
  local work = t.work

  -- { fs_index, offset, size, fstype } per entry, in fs_index order.
  local function rows(list)
    local out = {}
    for _, e in ipairs(list) do
      out[#out + 1] = { e.fs_index, e.offset, e.size, e.fstype or false }
    end
    table.sort(out, function(a, b) return a[1] < b[1] end)
    return out
  end

  -- Both views of img; the helper's through a real mount, undone at the end.
  local function both(img)
    local res = t.mounted(finally, t.new_hash(), img)
    local p = assert(cmedia.probe(img))
    return p, res
  end

  local function same(img, want_pttype, want)
    local p, res = both(img)
    assert.are.same(rows(p.partitions), rows(res.filesystems))
    assert.are.equal(want_pttype, p.pttype)
    assert.are.equal(want_pttype, res.pttype)
    assert.are.same(want, rows(p.partitions))
    return p, res
  end

  it("agree on an MBR disk with two partitions", function()
    local p1 = images.ext(work .. "/p1.fs", { size_mb = 4, files = { ["a"] = "1\n" } })
    local p2 = images.fat(work .. "/p2.fs", { kb = 2048, label = "TWO" })
    local img = images.mbr(work .. "/mbr.img", { size_mb = 12,
      parts = { { start_mb = 1, size_mb = 4, image = p1 }, { start_mb = 6, size_mb = 2, type = 0x0c, image = p2 } } })
    same(img, "dos", { { 1, 1 * MiB, 4 * MiB, "ext4" }, { 2, 6 * MiB, 2 * MiB, "vfat" } })
  end)

  it("agree on a GPT disk", function()
    local p1 = images.ext(work .. "/g1.fs", { size_mb = 4, files = { ["b"] = "2\n" } })
    local p2 = images.ext(work .. "/g2.fs", { size_mb = 3, type = "ext2", files = { ["c"] = "3\n" } })
    local img = images.gpt(work .. "/gpt.img", { size_mb = 12,
      parts = { { start_mb = 1, size_mb = 4, image = p1 }, { start_mb = 5, size_mb = 3, image = p2 } } })
    same(img, "gpt", { { 1, 1 * MiB, 4 * MiB, "ext4" }, { 2, 5 * MiB, 3 * MiB, "ext2" } })
  end)

  it("agree on a bare filesystem and on a Zip disk's FAT at 16384", function()
    local ext = images.ext(work .. "/bare.img", { size_mb = 6, files = { ["d"] = "4\n" } })
    same(ext, nil, { { 0, 0, 6 * MiB, "ext4" } })
    local fat = images.fat(work .. "/floppy.fs", { kb = 1440, label = "ZIP" })
    local zip = images.zip(work .. "/zip.img", fat)
    same(zip, nil, { { 0, 16384, 1440 * 1024, "vfat" } })
  end)

  it("agree on a partition that runs past the end of a truncated image", function()
    local p1 = images.ext(work .. "/t1.fs", { size_mb = 4, files = { ["e"] = "5\n" } })
    local img = images.mbr(work .. "/trunc.img", { size_mb = 12,
      parts = { { start_mb = 1, size_mb = 4, image = p1 }, { start_mb = 6, size_mb = 4, image = p1 } } })
    images.truncate(img, 8 * MiB)
    local p = same(img, "dos", { { 1, 1 * MiB, 4 * MiB, "ext4" }, { 2, 6 * MiB, 4 * MiB, "ext4" } })
    assert.is_false(p.partitions[1].truncated)
    assert.is_true(p.partitions[2].truncated)
  end)

  it("agree on all 40 partitions of a GPT disk", function()
    local img = images.gpt(work .. "/g40.img", { size_mb = 42, parts = images.tiny_parts(work, 40) })
    local want = {}
    for i = 1, 40 do want[i] = { i, i * MiB, MiB, "ext2" } end
    local _, res = same(img, "gpt", want)
    for _, fs in ipairs(res.filesystems) do assert.are.equal("mounted", fs.status) end
  end)

  it("agree on a GPT cut after partition 4: read from its primary header, the rest truncated", function()
    local img = images.gpt(work .. "/gcut.img", { size_mb = 10, parts = images.tiny_parts(work, 8) })
    images.truncate(img, 5 * MiB)
    local want = {}
    for i = 1, 8 do want[i] = { i, i * MiB, MiB, i <= 4 and "ext2" or false } end
    local p, res = same(img, "gpt", want)
    assert.is_true(p.gpt_primary)
    assert.is_true(res.gpt_primary)
    for i, fs in ipairs(res.filesystems) do
      assert.are.equal(i <= 4 and "mounted" or "truncated", fs.status)
      assert.are.equal(i > 4, p.partitions[i].truncated)
    end
  end)

  it("agree that an APM hybrid disc is its whole-disk ISO9660", function()
    local img = images.apm_iso(work .. "/hybrid.iso", { label = "HYB", files = { ["mac.txt"] = "hybrid\n" } })
    local p, res = both(img)
    assert.is_true(p.hybrid)
    assert.are.equal("apm", res.hybrid)
    assert.are.equal(1, #p.partitions)
    assert.are.same(rows(p.partitions), rows(res.filesystems))
    assert.are.equal("iso9660", p.partitions[1].fstype)
  end)

  it("agree that an image of no known format holds nothing", function()
    local img = work .. "/noise.img"
    helper.write(img, string.rep("\xa5\x5a\x3c", MiB // 3))
    local p, res = both(img)
    assert.are.same({}, p.partitions)
    assert.are.equal("none", res.layout)
    assert.are.equal(1, #res.filesystems)
    assert.are.equal("skipped", res.filesystems[1].status)
  end)
end)
