-- spec/support/mounthelper.lua: what the ntt-mount-helper spec files share:
-- why they cannot run here, the helper's environment for one file, and
-- looking at mounts and loop devices from outside.
--
--   mh.skip_reason()   -> nil, or why the helper specs cannot run
--   mh.setup(tag, teardown) -> in a describe block: nil and skip_reason()
--                         when the specs cannot run, else mh.open(tag) for
--                         this block's specs only (t.restore handed to
--                         busted's teardown)
--   mh.open(tag)       -> t: t.HELPER, t.base (mount root), t.work (images),
--                         t.restore() (the environment as before), and
--                         t.new_hash(), t.raw(args [, {env=, user=}]) -> r, obj,
--                         t.mounts([prefix]), t.loops_of(image),
--                         t.check_options(prefix), t.fs(res, fs_index),
--                         t.read(path), t.read_as_nobody(path),
--                         t.kmsg_mark(), t.kmsg_since(tag),
--                         t.mounted(finally, hash, image [, opts]) -> the
--                         result of a mount.mount that must succeed, with an
--                         unmount (and a check that no loop device is left)
--                         handed to the test's finally (busted's, which
--                         exists only inside an it): it runs however the
--                         test ends
local helper = require "spec.support.helper"
local json = require "ntt.json"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local assert = require "luassert"

local M = {}

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end
M.exists = exists

function M.skip_reason()
  if not helper.is_root() then return "mount helper specs need root" end
  if not exists("/dev/loop-control") then return "no /dev/loop-control" end
  if not exists("/dev/fuse") then return "no /dev/fuse" end
  if not exists(helper.build .. "/ntt-mount-helper") then return "ntt-mount-helper not built" end
  return nil
end

-- One counter for the whole run: hashes never repeat across spec files.
local seq = 0

function M.open(tag)
  local t = {}
  t.HELPER = helper.sh({ "realpath", helper.build .. "/ntt-mount-helper" }).stdout:gsub("%s+$", "")
  t.base = helper.tmpdir(tag .. "-mnt")
  t.work = helper.tmpdir(tag .. "-img")
  local saved = { NTT_MOUNT_ROOT = os.getenv("NTT_MOUNT_ROOT"), NTT_MOUNT_HELPER = os.getenv("NTT_MOUNT_HELPER") }
  util.setenv("NTT_MOUNT_ROOT", t.base)
  util.setenv("NTT_MOUNT_HELPER", t.HELPER)
  function t.restore()
    for k, v in pairs(saved) do util.setenv(k, v) end
  end

  function t.new_hash()
    seq = seq + 1
    return ("%016x%04x"):format(util.pid(), seq)
  end

  function t.raw(args, opts)
    opts = opts or {}
    local argv = { t.HELPER }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local r = assert(proc.run { argv = argv, timeout = 120, env = opts.env, user = opts.user })
    local obj = json.decode(r.stdout:match("^%s*(.-)%s*$"))
    return r, obj
  end

  -- Mounts under base (findmnt -J), optionally only below prefix.
  function t.mounts(prefix)
    local r = helper.sh { "findmnt", "-J", "-l", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS" }
    local out = {}
    for _, m in ipairs(json.decode(r.stdout).filesystems) do
      if m.target:sub(1, #(prefix or t.base)) == (prefix or t.base) then out[#out + 1] = m end
    end
    return out
  end

  function t.loops_of(path)
    local out = {}
    local r = helper.sh { "losetup", "-J", "-l", "-O", "NAME,BACK-FILE" }
    local l = r.stdout ~= "" and json.decode(r.stdout) or { loopdevices = {} }
    for _, d in ipairs(l.loopdevices or {}) do
      local b = (d["back-file"] or ""):gsub(" %(deleted%)$", "")
      if b == path then out[#out + 1] = d.name end
    end
    return out
  end

  function t.check_options(prefix)
    local ms = t.mounts(prefix)
    assert.is_true(#ms > 0, "nothing mounted under " .. prefix)
    for _, m in ipairs(ms) do
      for _, o in ipairs { "ro", "nosuid", "nodev", "noexec" } do
        assert.truthy(("," .. m.options .. ","):find("," .. o .. ",", 1, true), m.target .. ": " .. m.options)
      end
    end
  end

  function t.fs(res, index)
    for _, e in ipairs(res.filesystems) do
      if e.fs_index == index then return e end
    end
    error("no fs_index " .. index .. " in " .. json.encode(res))
  end

  function t.read(path)
    local f, err = io.open(path, "rb")
    if not f then return nil, err end
    local s, rerr = f:read("a")
    f:close()
    return s, rerr
  end

  -- What an unprivileged reader (ntt without root) gets from path.
  helper.sh { "chmod", "0755", t.base }
  function t.read_as_nobody(path)
    local r = assert(proc.run { argv = { "cat", path }, user = "nobody", timeout = 30 })
    return r.code == 0 and r.stdout or nil, r.stderr
  end

  function t.kmsg_mark()
    local mark = ("ntt-spec-mark-%d-%d"):format(util.pid(), seq)
    helper.write("/dev/kmsg", mark .. "\n")
    return mark
  end

  function t.kmsg_since(mark)
    local out = helper.sh({ "dmesg" }).stdout
    local at = out:find(mark, 1, true)
    return at and out:sub(at) or ""
  end

  function t.mounted(finally, hash, image, opts)
    local mount = require "ntt.mount"
    finally(function()
      mount.unmount(hash, image)
      assert.are.same({}, t.loops_of(image), "loops left for " .. image)
    end)
    local res, err = mount.mount(hash, image, opts)
    assert.is_table(res, err)
    return res
  end
  return t
end

function M.setup(tag, teardown)
  local why = M.skip_reason()
  if why then return nil, why end
  local t = M.open(tag)
  teardown(t.restore)
  return t
end

return M
