-- spec/mapfile_helper_spec.lua: the mount helper reads mapfiles with the
-- parser ntt.mapfile uses (src/media/mapfile_parse.c): every bad map of
-- spec/support/badmaps.lua, and a few hundred mutated maps, get the same
-- verdict, line and reason from both entry points; and a partial image
-- whose honest view cannot be set up is refused, never mounted raw.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local mh = require "spec.support.mounthelper"
local badmaps = require "spec.support.badmaps"
local mapfile = require "ntt.mapfile"
local proc = require "ntt.core.proc"
local json = require "ntt.json"

local MiB = images.MiB

describe("ntt-mount-helper and ntt.mapfile", function()
  local t, why = mh.setup("mhmap", teardown)
  if not t then it("runs", function() pending(why) end) return end
  local work, raw, new_hash, mounts, loops_of = t.work, t.raw, t.new_hash, t.mounts, t.loops_of
  local img = work .. "/blank.img"
  helper.write(img, ("\0"):rep(64 * 1024))
  local real = helper.sh({ "realpath", work }).stdout:gsub("%s+$", "")

  -- The helper's verdict on one map text: nil when it accepted the map,
  -- else "line N: why" (the message after "mapfile PATH: ").
  local function helper_verdict(text)
    local map = work .. "/m.map"
    helper.write(map, text)
    local r, obj = raw { "mount", new_hash(), img, "--map", map }
    if r.code ~= 2 then return nil, r end
    assert.is_table(obj, r.stdout .. r.stderr)
    local prefix = ("mapfile %s/m.map: "):format(real)
    assert.equal(prefix, obj.error:sub(1, #prefix), obj.error)
    return obj.error:sub(#prefix + 1), r
  end

  it("rejects every bad map of the shared list with the line and reason ntt.mapfile gives", function()
    for _, c in ipairs(badmaps.cases) do
      local _, lerr = mapfile.parse(c[1], "x")
      local herr = helper_verdict(c[1])
      assert.is_string(herr, "the helper accepted " .. ("%q"):format(c[1]))
      assert.equal(lerr:gsub("^x: ", ""), herr)
      assert.equal(c[2], tonumber(herr:match("^line (%d+): ")), herr)
      assert.matches(c[3], herr:gsub("^line %d+: ", ""))
    end
  end)

  it("gives mutated maps the same verdict as ntt.mapfile, line for line", function()
    local accepted, rejected = 0, 0
    for _, text in ipairs(badmaps.fuzz(11, 120)) do
      local m, lerr = mapfile.parse(text, "x")
      local herr, r = helper_verdict(text)
      if m then
        accepted = accepted + 1
        assert.is_nil(herr, ("%q"):format(text))
        assert.equal(1, r.code, r.stdout .. r.stderr)        -- accepted; a blank image mounts nothing
      else
        rejected = rejected + 1
        assert.equal(lerr:gsub("^x: ", ""), herr, ("%q"):format(text))
      end
    end
    assert.is_true(accepted > 5 and rejected > 50, accepted .. " accepted, " .. rejected .. " rejected")
    assert.same({}, loops_of(img))
  end)

  -- Runs the helper where /dev/fuse is /dev/null: the honest view cannot start.
  local function without_fuse(args)
    local argv = { "unshare", "-m", "--propagation", "private", "sh", "-c",
                   'mount --bind /dev/null /dev/fuse && exec "$0" "$@"', t.HELPER }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local r = assert(proc.run { argv = argv, timeout = 120 })
    return r, json.decode(r.stdout:match("^%s*(.-)%s*$"))
  end

  it("refuses a partial image whose honest view cannot be set up, and mounts nothing raw", function()
    local ext = images.ext(work .. "/holey.img", { size_mb = 8, files = { ["a.txt"] = "a\n" } })
    local map = images.mapfile(work .. "/holey.map", { { 0, 4 * MiB, "+" }, { 4 * MiB, MiB, "-" },
                                                       { 5 * MiB, 3 * MiB, "+" } })
    local h = new_hash()
    local r, obj = without_fuse { "mount", h, ext, "--map", map }
    assert.equal(5, r.code, r.stdout .. r.stderr)
    assert.matches("mapfile has unrescued areas", obj.error)
    assert.matches("refusing to mount the image without the honest view", obj.error)
    assert.same({}, mounts(t.base .. "/" .. h))
    assert.same({}, loops_of(ext))
    -- an image cut short, without a map: the same
    local short = images.ext(work .. "/short.img", { size_mb = 8, files = { ["b.txt"] = "b\n" } })
    images.truncate(short, 6 * MiB)
    h = new_hash()
    r, obj = without_fuse { "mount", h, short }
    assert.equal(5, r.code, r.stdout .. r.stderr)
    assert.matches("image file shorter than the medium", obj.error)
    assert.same({}, mounts(t.base .. "/" .. h))
    assert.same({}, loops_of(short))
    -- with the view available the same image mounts (through it)
    local res = t.mounted(finally, new_hash(), ext, { map = map })
    assert.is_table(res.view)
    assert.equal("mounted", t.fs(res, 0).status)
  end)
end)
