-- spec/options_spec.lua: every C function that takes an options table
-- rejects a key it does not know, naming the nearest known one, so a typo
-- never silently falls back to a default (docs/errors.md).
local helper = require "spec.support.helper"
local pg = require "ntt.core.pg"

-- One entry per function: its name in the message, and a call passing the
-- misspelt key (the call must raise before doing anything).
local function cases(dir)
  local proc = require "ntt.core.proc"
  local media = require "ntt.core.media"
  local walk = require "ntt.core.walk"
  return {
    { "proc.run", "timeout", function() return proc.run { argv = { "true" }, timeuot = 5 } end },
    { "proc.spawn", "stdout", function() return proc.spawn { argv = { "true" }, sdtout = "null" } end },
    { "media.scan_uniform", "block", function() return media.scan_uniform(dir, { blokc = 4096 }) end },
    { "media.probe", "offset", function() return media.probe(dir, { ofset = 0 }) end },
    { "walk", "threads", function() return walk.open(dir, { thraeds = 2 }) end },
    { "walk", "stall_timeout", function() return walk.count(dir, { stall_timeuot = 1 }) end },
  }
end

local function rejects(fn_name, near, call)
  local ok, err = pcall(call)
  assert.is_false(ok, fn_name .. " accepted an unknown option")
  assert.matches(fn_name .. ": unknown option '[^']+' %(did you mean '" .. near .. "'%?%)", tostring(err))
end

describe("options tables", function()
  local dir = helper.tmpdir("opts")
  for _, c in ipairs(cases(dir)) do
    it(("%s rejects an unknown key (near '%s') with a did-you-mean"):format(c[1], c[2]), function()
      rejects(c[1], c[2], c[3])
    end)
  end

  it("a key far from every known one is rejected without a suggestion", function()
    local proc = require "ntt.core.proc"
    local ok, err = pcall(proc.run, { argv = { "true" }, zzzzzzzz = 1 })
    assert.is_false(ok)
    assert.matches("proc.run: unknown option 'zzzzzzzz'$", tostring(err))
  end)

  it("known keys still work", function()
    local proc = require "ntt.core.proc"
    local r = assert(proc.run { argv = { "sh", "-c", "cat" }, input = "x", timeout = 5, stderr = "pipe" })
    assert.equal("x", r.stdout)
  end)

  it("load.walk rejects an unknown key (near 'stall_timeout') with a did-you-mean", function()
    local url = helper.db_url()
    if not url then return pending("no test database") end
    local conn = assert(pg.connect(url))
    finally(function() conn:close() end)
    local load = require "ntt.core.load"
    rejects("load.walk", "stall_timeout", function()
      return load.walk(conn, { root = dir, inode_table = "x", path_table = "y", medium = "m",
                               fs_index = 0, stall_timout = 1 })
    end)
  end)
end)
