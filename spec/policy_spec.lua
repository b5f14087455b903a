-- spec/policy_spec.lua: policy loading, validation, sandbox and inheritance.
local helper = require "spec.support.helper"
local proc = require "ntt.core.proc"
local policy = require "ntt.policy"
local ntt = require "ntt"

local function file(dir, name, text)
  local p = dir .. "/" .. name
  helper.write(p, text)
  return p
end

describe("policies", function()
  local dir
  before_each(function() dir = helper.tmpdir("policy") end)

  it("loads the default policy, embedded and from the source tree", function()
    local p = assert(policy.load("default"))
    assert.equal("default", p.name)
    assert.equal(10, p.retry.checkpoint)
    assert.equal(50, p.retry.max)
    assert.equal("batch", p.copy.durability)
    local q = assert(policy.load("policies/default.lua"))
    assert.same(p.stages, q.stages)
  end)

  it("names file:line and the nearest key for a misspelt key", function()
    local path = file(dir, "site.lua", table.concat({
      'local ntt = require "ntt"',
      'return ntt.policy.extend("default", {',
      '  retry = { max = 5 },',
      '  copy = {',
      '    batch = 10,',
      '    thredas = 2,',
      '  },',
      '})',
    }, "\n"))
    local p, err = policy.load(path)
    assert.is_nil(p)
    assert.equal(path .. ":6: unknown option 'thredas' in copy (did you mean 'threads'?)", err)
  end)

  it("names the line of a wrong type or a bad enum value", function()
    local path = file(dir, "t.lua", 'local ntt = require "ntt"\nreturn ntt.policy {\n  name = "t",\n  copy = { durability = "fsyn" },\n}\n')
    local _, err = policy.load(path)
    assert.matches(":4: copy.durability must be one of fsync, batch, none %(got 'fsyn'%) %(did you mean 'fsync'%?%)", err)
    path = file(dir, "u.lua", 'return {\n  retry = {\n    max = "many" },\n}\n')
    _, err = policy.load(path)
    assert.equal(path .. ":3: retry.max must be an integer (got string)", err)
  end)

  it("checks mount.reader and copy.deleted: a reader per filesystem type, record or recover", function()
    local p = assert(policy.load("default"))
    assert.same({ ["*"] = "tsk" }, p.mount.reader)
    assert.equal("record", p.copy.deleted)
    local path = file(dir, "r.lua", 'local ntt = require "ntt"\nreturn ntt.policy.extend("default", {\n  mount = { reader = { vfat = "fusefat" } },\n})\n')
    local _, err, code = policy.load(path)
    assert.equal("EINVAL", code)
    assert.matches(":3: mount.reader.*vfat: reader must be \"tsk\", \"fuse\" or \"none\"", err)
    path = file(dir, "s.lua", 'local ntt = require "ntt"\nreturn ntt.policy.extend("default", {\n  mount = { reader = { ["VFAT"] = "tsk" } },\n})\n')
    _, err = policy.load(path)
    assert.matches("mount.reader.*key VFAT must be a filesystem type", err)
    path = file(dir, "d.lua", 'local ntt = require "ntt"\nreturn ntt.policy.extend("default", {\n  copy = { deleted = "keep" },\n})\n')
    _, err = policy.load(path)
    assert.matches("copy.deleted must be one of record, recover", err)
    path = file(dir, "ok.lua", 'local ntt = require "ntt"\nreturn ntt.policy.extend("default", {\n  mount = { reader = { iso9660 = "fuse", ["*"] = "none" } },\n  copy = { deleted = "recover" },\n})\n')
    assert(policy.load(path))
  end)

  it("compiles ignore patterns at load: a bad one names the policy's file:line", function()
    local path = file(dir, "ig.lua", table.concat({
      'local ntt = require "ntt"',
      'return ntt.policy.extend("default", {',
      '  enumerate = {',
      '    threads = 2,',
      '    ignore = { "^tmp/", "(unclosed" },',
      '  },',
      '})',
    }, "\n"))
    local p, err = policy.load(path)
    assert.is_nil(p)
    assert.matches("^" .. path:gsub("%p", "%%%0") .. ":5: enumerate%.ignore%[2%] is not a valid pattern: "
                   .. "bad regular expression '%(unclosed'", err)
    local _, err2 = policy.load(file(dir, "ig2.lua", 'return { enumerate = { ignore = { 7 } } }'))
    assert.matches(":1: enumerate%.ignore%[1%] must be a string %(got number%)", err2)
    local p3 = assert(policy.load(file(dir, "ig3.lua", 'return { enumerate = { ignore = { "^tmp/", "[.]bak$" } } }')))
    -- enumerate gets the patterns compiled at load, not their text
    local rx = policy.ignore_of(p3)
    assert.equal(2, #rx)
    assert.equal("ntt.Regex (^tmp/)", tostring(rx[1]))
    assert.equal("[.]bak$", rx[2]:source())
    assert.is_true(rx[2]:match("d/x.bak"))
    assert.is_false(rx[2]:match("d/xbak"))
    assert.are.equal(rx[1], policy.ignore_of(p3)[1])   -- the same object: compiled once
  end)

  it("util.regex compiles once, reports a bad pattern, and closes idempotently", function()
    local util = require "ntt.core.util"
    local rx = assert(util.regex("^a(b|c)$"))
    assert.is_true(rx:match("ab"))
    assert.is_false(rx:match("ad"))
    rx:close(); rx:close()
    assert.equal("ntt.Regex (closed)", tostring(rx))
    assert.has_error(function() rx:match("ab") end, "regex: closed")
    local none, msg, code = util.regex("a[")
    assert.is_nil(none)
    assert.matches("^bad regular expression 'a%['", msg)
    assert.equal("EINVAL", code)
  end)

  it("rejects unknown top-level keys, bad stages and bad rules", function()
    local _, err = policy.load(file(dir, "a.lua", 'return { stagse = {} }'))
    assert.matches("unknown option 'stagse' in the policy %(did you mean 'stages'%?%)", err)
    _, err = policy.load(file(dir, "b.lua", 'return { stages = { "identify", "copyy" } }'))
    assert.matches("stages%[2%] is not a stage: 'copyy' %(did you mean 'copy'%?%)", err)
    _, err = policy.load(file(dir, "c.lua", 'local ntt = require "ntt"\nreturn ntt.policy { diagnose = { { ntt.always, "skip" } } }'))
    assert.matches("diagnose%[1%] needs an action second", err)
  end)

  it("runs policies sandboxed: accidental globals raise with file:line", function()
    local path = file(dir, "g.lua", 'local ntt = require "ntt"\ncount = 1\nreturn ntt.policy {}\n')
    local _, err = policy.load(path)
    assert.equal(path .. ":2: assignment to global 'count' in policy " .. path .. " (use 'local')", err)
    path = file(dir, "h.lua", 'local x = undefined_thing\nreturn {}\n')
    _, err = policy.load(path)
    assert.matches("h.lua:1: undefined global 'undefined_thing'", err)
    _, err = policy.load(file(dir, "i.lua", 'return io.open("/etc/passwd")'))
    assert.matches("undefined global 'io'", err)
  end)

  it("inherits the default and changes only what it names", function()
    local path = file(dir, "site.lua", [[
local ntt = require "ntt"
return ntt.policy.extend("default", {
  name = "site",
  retry = { checkpoint = 5, max = 5 },
  enumerate = { ignore = { "%.cache/" } },
})]])
    local p = assert(policy.load(path))
    local d = assert(policy.load("default"))
    assert.equal("site", p.name)
    assert.equal(5, p.retry.max)
    assert.equal(5, p.retry.checkpoint)
    assert.same(d.retry.backoff, p.retry.backoff)      -- sections merge key by key
    assert.equal(d.copy.batch, p.copy.batch)
    assert.same({ "%.cache/" }, p.enumerate.ignore)    -- lists replace
    assert.equal(d.enumerate.stall_timeout, p.enumerate.stall_timeout)
    assert.equal(10, d.retry.checkpoint)               -- the base is not modified
  end)

  it("supports append, prepend and remove in inheritance", function()
    local path = file(dir, "site.lua", [[
local ntt = require "ntt"
return ntt.policy.extend("default", {
  diagnose = ntt.policy.prepend { { ntt.has "detected_permission_error", ntt.SKIP "PERMISSION" } },
  kernel_patterns = ntt.policy.append { { pattern = "HFS%+", finding = "dmesg:hfs_error" } },
  hooks = ntt.policy.remove,
  progress = { interval = ntt.policy.remove },
})]])
    local p = assert(policy.load(path))
    local d = assert(policy.load("default"))
    assert.equal(#d.diagnose + 1, #p.diagnose)
    assert.equal("PERMISSION", p.diagnose[1][2].reason)
    assert.equal("dmesg:hfs_error", p.kernel_patterns[#p.kernel_patterns].finding)
    assert.is_nil(p.progress.interval)
    assert.equal(d.progress.bar, p.progress.bar)
  end)

  it("extends a sibling policy file by name, and chains", function()
    file(dir, "base.lua", 'local ntt = require "ntt"\nreturn ntt.policy.extend("default", { copy = { batch = 7 } })')
    local path = file(dir, "leaf.lua", 'local ntt = require "ntt"\nreturn ntt.policy.extend("base", { retry = { max = 3, checkpoint = 3 } })')
    local p = assert(policy.load(path))
    assert.equal(7, p.copy.batch)
    assert.equal(3, p.retry.max)
  end)

  it("reports an error inside a base policy with the base's file:line", function()
    file(dir, "base.lua", 'return {\n  copy = { batch = true },\n}')
    local _, err = policy.load(file(dir, "leaf.lua", 'local ntt = require "ntt"\nreturn ntt.policy.extend("base", {})'))
    assert.matches("cannot extend 'base': .*base.lua:2: copy.batch must be an integer", err)
  end)

  it("decides diagnose rules first-match-wins and counts hits", function()
    local d = assert(policy.load("default"))
    local rules = require "ntt.rules"
    local hits = {}
    local a, i = rules.decide(d.diagnose, { "detected_io_error", "dmesg:io_error" }, hits)
    assert.equal("skip", a.kind); assert.equal("IO_ERROR_CONFIRMED", a.reason); assert.equal(4, i)
    a = rules.decide(d.diagnose, { "detected_io_error" }, hits)
    assert.equal("continue", a.kind)
    a = rules.decide(d.diagnose, { "dmesg:beyond_eof" }, hits)
    assert.equal("DIAGNOSTIC_SKIP:BEYOND_EOF", a.reason)
    a = rules.decide(d.diagnose, { "mount_check:missing" }, hits)
    assert.equal("remount", a.kind)
    -- a directory medium's I/O error, confirmed by repetition
    a, i = rules.decide(d.diagnose, { "detected_io_error", "repeat:io_error" }, hits)
    assert.equal("IO_ERROR_CONFIRMED", a.reason); assert.equal(5, i)
    -- the kernel's FAT driver
    a, i = rules.decide(d.diagnose, { "detected_io_error", "dmesg:fat_error" }, hits)
    assert.equal("FAT_ERROR_SKIP", a.reason); assert.equal(6, i)
    -- a lost mount is remounted whatever the kernel said of its reads
    a = rules.decide(d.diagnose, { "detected_io_error", "dmesg:io_error", "mount_check:inaccessible" }, hits)
    assert.equal("remount", a.kind)
    a = rules.decide(d.diagnose, { "detected_io_error", "mount_check:directory" }, hits)
    assert.equal("continue", a.kind)
    -- a file the honest view serves whole is tried again, not skipped
    a, i = rules.decide(d.diagnose, { "detected_io_error", "dmesg:io_error", "view:readable" }, hits)
    assert.equal("continue", a.kind); assert.equal(3, i)
    assert.same({ [1] = 2, [2] = 1, [3] = 1, [4] = 1, [5] = 1, [6] = 1, [7] = 2 }, hits)
  end)
end)

describe("ntt run with a bad policy", function()
  it("fails before any side effect, naming file:line and the key", function()
    local dir = helper.tmpdir("run")
    local home = dir .. "/home"
    local path = dir .. "/site.lua"
    helper.write(path, 'local ntt = require "ntt"\nreturn ntt.policy.extend("default", {\n  copy = { thredas = 2 },\n})\n')
    local r = assert(proc.run { argv = { helper.ntt, "run", path, dir }, env = { NTT_HOME = home, NTT_DB_URL = false }, timeout = 60 })
    assert.equal(2, r.code)
    assert.truthy(r.stderr:find(path .. ":3: unknown option 'thredas' in copy (did you mean 'threads'?)", 1, true), r.stderr)
    -- nothing was created: no data root, no database, no log
    assert.is_nil(io.open(home, "r"))
  end)

  it("rejects a missing policy file clearly", function()
    local r = assert(proc.run { argv = { helper.ntt, "run", "/nonexistent/p.lua", "/tmp" }, timeout = 30 })
    assert.equal(2, r.code)
    assert.truthy(r.stderr:find("/nonexistent/p.lua: No such file or directory", 1, true), r.stderr)
  end)
end)

it("exposes the policy DSL through the facade", function()
  assert.is_function(ntt.policy.extend)
  assert.equal("skip", ntt.SKIP("X").kind)
  assert.is_true(ntt.has("a")({ "a" }))
end)

describe("the example policies", function()
  it("all load and validate", function()
    local r = helper.sh { "find", "examples", "-name", "*.lua", "!", "-name", "demo.lua" }
    local n = 0
    for path in r.stdout:gmatch("[^\n]+") do
      local p, err = policy.load(path)
      assert.truthy(p, err)
      n = n + 1
    end
    assert.is_true(n >= 2)
  end)
end)
