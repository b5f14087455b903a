-- spec/dfxml_spec.lua: the DFXML report against its judges -- the official
-- schema (xmllint) and fiwalk (sleuthkit) on the same image.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local mediaimg = require "spec.support.mediaimg"
local proc = require "ntt.core.proc"

local tag, policy, medium_of, run = runs.tag, runs.policy, runs.medium_of, runs.run
local SCHEMA = "/work/shared/vectors/dfxml-schema/dfxml.xsd"   -- where the official copy lives here

after_each(runs.unmount)

local function schema_path()
  for _, p in ipairs { os.getenv("NTT_DFXML_SCHEMA") or "", "spec/fixtures/dfxml/dfxml.xsd", SCHEMA } do
    if p ~= "" and io.open(p) then return p end
  end
end

local function validate(file)
  local r = assert(proc.run { argv = { "xmllint", "--noout", "--nonet", "--schema", schema_path(), file }, timeout = 120 })
  return r.code == 0, r.stderr
end

-- `ntt run` of img (policy pol, else the default's) with data root
-- dir/home: the path of the medium's DFXML report, valid by the schema.
local function valid_report(dir, img, pol)
  local home = dir .. "/home"
  local r = run(home, { pol or policy(dir), img })
  assert.equal(0, r.code, r.stderr .. r.stdout)
  local file = home .. "/report/" .. medium_of(img) .. ".dfxml"
  local valid, err = validate(file)
  assert.is_true(valid, err)
  return file
end

local function unescape(s)
  return (s:gsub("&lt;", "<"):gsub("&gt;", ">"):gsub("&quot;", '"'):gsub("&apos;", "'"):gsub("&amp;", "&"))
end

-- Allocated regular files of a DFXML text: name -> { size=, img_offset= }
-- (fiwalk writes attributes in single quotes, ntt in double).
local function regular_files(xml)
  local out = {}
  for obj in xml:gmatch("<fileobject[^>]*>(.-)</fileobject>") do
    local name = obj:match("<filename>(.-)</filename>")
    local kind = obj:match("<name_type>(.-)</name_type>")
    local alloc = obj:match("<alloc>(%d)</alloc>") or obj:match("<alloc_inode>(%d)</alloc_inode>")
    if name and kind == "r" and alloc == "1" and not name:find("^%$") then
      local run1 = obj:match("<byte_run ([^>]*)/>")
      out[unescape(name)] = { size = tonumber(obj:match("<filesize>(%d+)</filesize>")),
                              img_offset = run1 and tonumber(run1:match("img_offset=['\"](%d+)")) }
    end
  end
  return out
end

local function fiwalk(img, dir)
  local out = dir .. "/fiwalk.xml"
  local r = assert(proc.run { argv = { "fiwalk", "-X", out, img }, timeout = 120 })
  assert.equal(0, r.code, r.stderr)
  return helper.read(out)
end

-- The allocated regular files of the DFXML report file (returned) are
-- fiwalk's of img, five, with their sizes (and offsets in the image when
-- offsets).
local function same_files(file, img, dir, offsets)
  local ours, theirs = regular_files(helper.read(file)), regular_files(fiwalk(img, dir))
  local n = 0
  for name, t in pairs(theirs) do
    n = n + 1
    assert.truthy(ours[name], "ntt lacks " .. name)
    assert.equal(t.size, ours[name].size, name)
    if offsets then assert.equal(t.img_offset, ours[name].img_offset, name) end
  end
  for name in pairs(ours) do assert.truthy(theirs[name], "fiwalk lacks " .. name) end
  assert.equal(5, n)
  return ours
end

describe("DFXML", function()
  local ok, why = runs.can_run { fuse = true, tools = { "xmllint", "fiwalk", "mkfs.vfat" } }
  if ok and not schema_path() then ok, why = nil, "the DFXML schema is not here (NTT_DFXML_SCHEMA)" end
  if not ok then
    it("matches fiwalk's file list", function() pending(why) end)
    return
  end

  it("of an ext4 image validates and equals fiwalk's files, sizes and first byte runs", function()
    local dir = helper.tmpdir("dfxml-ext")
    local big = mediaimg.pattern(300 * 1024, 3)
    local img = images.ext(dir .. "/disk.img", { size_mb = 16, files = {
      ["a.txt"] = "alpha " .. tag, ["dir/b.bin"] = big, ["dir/sub/c & <d>.txt"] = "gamma " .. tag,
      ["empty"] = "", ["caf\xc3\xa9.txt"] = "accent " .. tag } })
    local file = valid_report(dir, img)
    local ours = same_files(file, img, dir, true)
    assert.is_true(ours["dir/b.bin"].img_offset > 0)
    -- the report is a file list, not the copy: the BLAKE3 of each copied file is there
    assert.matches('<hashdigest type="OTHER" ntt:algorithm="blake3">%x+</hashdigest>', helper.read(file))
  end)

  it("carries the SHA-256 the copy pass took (copy.digests) as a sha256 hashdigest, and validates", function()
    local dir = helper.tmpdir("dfxml-sha")
    local img = images.ext(dir .. "/disk.img", { size_mb = 8, files = {
      ["one.txt"] = "one " .. tag, ["two.bin"] = mediaimg.pattern(200 * 1024, 5) } })
    local file = valid_report(dir, img, policy(dir, '{ copy = { digests = { "sha256" } } }'))
    local xml = helper.read(file)
    helper.write(dir .. "/one.txt", "one " .. tag)
    local want = helper.sh { "sha256sum", dir .. "/one.txt" }.stdout:match("^(%x+)")
    local obj = xml:match("<fileobject[^>]*><filename>one%.txt</filename>(.-)</fileobject>")
    assert.truthy(obj, xml)
    assert.equal(want, obj:match('<hashdigest type="sha256">(%x+)</hashdigest>'))
    local n = 0
    for _ in xml:gmatch('<hashdigest type="sha256">') do n = n + 1 end
    assert.equal(2, n)
  end)

  it("of a FAT image validates and equals fiwalk's names and sizes", function()
    local dir = helper.tmpdir("dfxml-fat")
    local files = {}
    for i = 1, 5 do files[("FILE%02d.BIN"):format(i)] = (string.char(64 + i)):rep(1000 * i) .. tag end
    local img = images.fat(dir .. "/floppy.img", { kb = 1440, files = files })
    local file = valid_report(dir, img)
    same_files(file, img, dir)
  end)

  it("escapes names that are not valid UTF-8 or hold control bytes, and still validates", function()
    local dir = helper.tmpdir("dfxml-names")
    local img = images.ext(dir .. "/disk.img", { size_mb = 8, files = { ["plain.txt"] = "p " .. tag } })
    -- names mke2fs -d cannot take from a tree: written with debugfs
    helper.write(dir .. "/src", "odd " .. tag)
    for _, name in ipairs { "bad\xff\xfe.bin", "ctl\x01\x1f.bin", "back\\slash.bin" } do
      helper.sh { "debugfs", "-w", "-R", ("write %s %s"):format(dir .. "/src", name), img }
    end
    local file = valid_report(dir, img)
    local xml = helper.read(file)
    assert.matches("<filename>bad\\xff\\xfe%.bin</filename>", xml)
    assert.matches("<filename>ctl\\x01\\x1f%.bin</filename>", xml)
    assert.matches("<filename>back\\\\slash%.bin</filename>", xml)
    assert.is_nil(xml:find("\xff", 1, true))
    -- and the page shows them the same way
    local page = helper.read(dir .. "/home/report/" .. medium_of(img) .. ".html")
    assert.is_nil(page:find("\xff", 1, true))
    -- a DFXML that breaks the schema is caught (the check can fail)
    helper.write(dir .. "/bad.dfxml", (xml:gsub("<filesize>", "<filesize>x", 1)))
    assert.is_false((validate(dir .. "/bad.dfxml")))
  end)
end)
