-- spec/own_data_spec.lua: a folder given as a medium that holds ntt's own
-- data root (its database, store, logs) has that part left out -- recorded
-- excluded, logged -- and only the user's files copied: ntt never copies
-- its live database or its store into itself.
local helper = require "spec.support.helper"
local runs = require "spec.support.runs"
local proc = require "ntt.core.proc"

describe("a tree that holds ntt's data root", function()
  local ok, why = runs.can_run()
  if not ok then
    it("runs", function() pending(why) end)
    return
  end

  it("copies the user's files and leaves ntt's own out, recorded as excluded", function()
    local dir = helper.tmpdir("owndata")
    helper.sh { "chmod", "0755", dir }   -- (the private cluster runs as the postgres account)
    local tree = dir .. "/inbox"
    helper.sh { "mkdir", "-p", tree .. "/letters" }
    helper.write(tree .. "/letters/one.txt", "one " .. runs.tag)
    helper.write(tree .. "/two.txt", "two " .. runs.tag)
    local home = tree .. "/ntt.data"   -- a name with a regex metacharacter
    local env = runs.env_of(dir, home)
    env.NTT_DB_URL = false             -- a cluster of its own, inside the tree
    local function ntt(argv)
      local full = { helper.ntt }
      for _, a in ipairs(argv) do full[#full + 1] = a end
      return assert(proc.run { argv = full, env = env, timeout = 300 })
    end
    finally(function() ntt { "db", "stop" } end)
    local r = ntt { "run", runs.policy(dir), "--tree", tree }
    assert.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find("holds ntt's own data at", 1, true), r.stderr)
    local st = require("ntt.json").decode(ntt({ "status", "--json" }).stdout)
    local m = st[1]
    assert.equal(2, m.files.copied, require("ntt.json").encode(m))
    assert.is_true((m.files.excluded or 0) > 10, "the database and store are there, excluded")
    -- a second run: nothing new to copy, the same exclusions, exit 0
    r = ntt { "run", runs.policy(dir), "--tree", tree }
    assert.equal(0, r.code, r.stderr)
  end)
end)
