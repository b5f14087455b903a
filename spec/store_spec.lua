-- spec/store_spec.lua: the content-addressed store (ntt.core.store).
local helper = require "spec.support.helper"
local hash = require "ntt.core.hash"
local store = require "ntt.core.store"
local util = require "ntt.core.util"

local EMPTY = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"

describe("ntt.core.store", function()
  it("creates its layout and maps blob ids to by-hash/AA/BB paths", function()
    local dir = helper.tmpdir("store")
    local st = assert(store.open(dir .. "/s"))
    assert.equal(dir .. "/s", st:root())
    assert.equal(dir .. "/s/by-hash/af/13/" .. EMPTY, st:path(EMPTY))
    assert.matches("ntt.Store", tostring(st))
    assert.is_nil(st:has(EMPTY))
    assert.has_error(function() st:path("AF13") end)
    assert.has_error(function() st:has(EMPTY:upper()) end)
    st:close()
    st:close()
    assert.matches("closed", tostring(st))
    assert.has_error(function() st:root() end)
  end)

  it("puts data once: the name is its hash, a second put is deduplicated", function()
    local dir = helper.tmpdir("store")
    local st = assert(store.open(dir .. "/s"))
    local blob, new = st:put("hello\n")
    assert.equal(hash.sum("hello\n"), blob)
    assert.is_true(new)
    local blob2, new2 = st:put("hello\n")
    assert.equal(blob, blob2)
    assert.is_false(new2)
    assert.equal(6, st:has(blob))
    assert.equal("hello\n", helper.read(st:path(blob)))
    assert.equal(EMPTY, (st:put("")))
    assert.equal(0, st:has(EMPTY))
    -- A blob already in place is never replaced.
    assert.equal(blob, (st:put("hello\n")))
    assert.equal("hello\n", helper.read(st:path(blob)))
  end)

  it("remakes a blob directory that went away behind its back", function()
    local dir = helper.tmpdir("store")
    local st = assert(store.open(dir .. "/s"))
    local blob = st:put("first")
    helper.sh { "rm", "-rf", dir .. "/s/by-hash/" .. blob:sub(1, 2) }
    local again, new = st:put("first")
    assert.equal(blob, again)
    assert.is_true(new)
    assert.equal("first", helper.read(st:path(blob)))
  end)

  it("fails to open where it cannot create, with nil, msg, errname", function()
    local dir = helper.tmpdir("store")
    helper.write(dir .. "/file", "x")
    local st, msg, ename = store.open(dir .. "/file/sub")
    assert.is_nil(st)
    assert.matches("file/sub", msg)
    assert.equal("ENOTDIR", ename)
  end)

  it("a put that fails leaves no temp and no blob behind (ENOSPC)", function()
    if not helper.is_root() then return pending("needs root to mount a small store") end
    local dir = helper.tmpdir("storefull")
    helper.sh { "mkdir", "-p", dir .. "/m" }
    local r = helper.sh({ "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir .. "/m" }, { may_fail = true })
    if r.code ~= 0 then return pending("cannot mount: " .. r.stderr) end
    local ok, err = pcall(function()
      local st = assert(store.open(dir .. "/m/s"))
      local big = string.rep("x", 2 * 1048576)
      local blob, msg, ename = st:put(big)
      assert.is_nil(blob)
      assert.equal("ENOSPC", ename)
      assert.matches("^store %x+: ", msg)
      assert.is_nil(st:has(hash.sum(big)))
      assert.equal("", helper.sh({ "find", dir .. "/m/s/tmp", "-mindepth", "1" }).stdout)
      -- the store goes on working once there is room
      assert.equal(hash.sum("small"), (st:put("small")))
      st:close()
    end)
    helper.sh({ "umount", dir .. "/m" }, { may_fail = true })
    assert(ok, err)
  end)

  it("cleans only old entries of tmp", function()
    local dir = helper.tmpdir("store")
    local st = assert(store.open(dir .. "/s"))
    local blob = st:put("keep me")
    helper.write(dir .. "/s/tmp/old.tmp", "stale")
    helper.write(dir .. "/s/tmp/new.tmp", "fresh")
    helper.sh { "touch", "-d", "2 hours ago", dir .. "/s/tmp/old.tmp" }
    assert.equal(1, st:clean_tmp(3600))
    assert.is_nil(io.open(dir .. "/s/tmp/old.tmp"))
    assert.equal("fresh", helper.read(dir .. "/s/tmp/new.tmp"))
    assert.equal(1, st:clean_tmp(0))
    assert.equal(7, st:has(blob))
  end)

  it("names temps uniquely across processes", function()
    -- Two processes putting many blobs at once into one store never collide.
    local dir = helper.tmpdir("store")
    local script = dir .. "/put.lua"
    helper.write(script, ([[
      local st = assert(require("ntt.core.store").open(%q))
      for i = 1, 300 do assert(st:put(arg[1] .. i)) end
    ]]):format(dir .. "/s"))
    local proc = require "ntt.core.proc"
    local a = assert(proc.spawn { argv = { helper.ntt, script, "a" } })
    local b = assert(proc.spawn { argv = { helper.ntt, script, "b" } })
    assert.same({ "exit", 0 }, { a:wait(60) })
    assert.same({ "exit", 0 }, { b:wait(60) })
    local r = helper.sh { "find", dir .. "/s/by-hash", "-type", "f" }
    assert.equal(600, select(2, r.stdout:gsub("\n", "")))
    assert.is_truthy(util.pid())
  end)
end)
