-- spec/lookup_spec.lua: `ntt find`, `ntt blob`, `ntt problems` on a store of
-- two media (directory media: no mount), text and --json; `ntt status` on a
-- fresh data root starts nothing.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local json = require "ntt.json"
local runs = require "spec.support.runs"
local hash = require "ntt.core.hash"

describe("lookups", function()
  local ok, why = runs.can_run()
  if not ok then
    it("answer from the database", function() pending(why) end)
    return
  end

  local dir, home, h1, h2, shared
  local t = runs.tag:gsub("%-", "_")
  setup(function()
    dir = helper.tmpdir("lookup")
    home = dir .. "/home"
    shared = "the same bytes on two media " .. t
    helper.sh { "mkdir", "-p", dir .. "/one", dir .. "/two" }
    images.files(dir .. "/one", { ["docs/report_" .. t .. ".txt"] = shared, ["docs/only_" .. t .. ".txt"] = "one " .. t,
                                  ["odd\nname_" .. t .. ".bin"] = "odd " .. t })
    images.files(dir .. "/two", { ["copy/report_" .. t .. ".txt"] = shared, ["copy/other_" .. t .. ".dat"] = "two " .. t })
    local pol = runs.policy(dir)
    for _, tree in ipairs { "one", "two" } do
      local r = runs.run(home, { pol, "--tree", dir .. "/" .. tree })
      assert.equal(0, r.code, r.stderr .. r.stdout)
    end
    h1, h2 = runs.medium_of(dir .. "/one"), runs.medium_of(dir .. "/two")
    -- a problem recorded on the second medium only
    assert(runs.db():exec([[UPDATE medium SET problems = problems || '{"made_by_spec": {"n": 1}}'::jsonb
                             WHERE medium_hash = $1]], h2))
  end)

  local function ntt(...) return runs.ntt(home, { ... }, 60) end

  it("ntt find: a glob on names across media, a glob on whole paths, a regex, one medium", function()
    local r = ntt("find", "report_" .. t .. ".*")
    assert.equal(0, r.code, r.stderr)
    local lines = {}
    for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
    table.sort(lines)
    local blob = hash.sum(shared)
    local want = { ("%s  p0 /copy/report_%s.txt  copied  %s"):format(h2, t, blob),
                   ("%s  p0 /docs/report_%s.txt  copied  %s"):format(h1, t, blob) }
    table.sort(want)
    assert.same(want, lines)
    r = ntt("find", "--json", "docs/*" .. t .. "*")
    local list = assert(json.decode(r.stdout), r.stderr .. r.stdout)
    assert.equal(2, #list)
    for _, e in ipairs(list) do assert.equal(h1, e.medium); assert.equal("copied", e.state) end
    r = ntt("find", "--regex", "--json", "(other|only)_" .. t .. "\\.(dat|txt)$")
    list = assert(json.decode(r.stdout))
    assert.equal(2, #list)
    r = ntt("find", "--medium", h2, "--json", "*_" .. t .. ".txt")
    list = assert(json.decode(r.stdout))
    assert.equal(1, #list)
    assert.equal("copy/report_" .. t .. ".txt", list[1].path)
    assert.equal(blob, list[1].blob)
    -- a name with a control byte is escaped for the terminal, exact in JSON
    r = ntt("find", "odd*" .. t .. ".bin")
    assert.matches("/odd\\x0aname_" .. t .. ".bin", r.stdout, 1, true)
    list = assert(json.decode(ntt("find", "--json", "odd*" .. t .. ".bin").stdout))
    assert.equal("odd\nname_" .. t .. ".bin", list[1].path)
    -- nothing found: exit 1, an empty array
    r = ntt("find", "--json", "nothing_" .. t)
    assert.equal(1, r.code)
    assert.equal("[]\n", r.stdout)
    assert.equal(64, ntt("find").code)
    assert.equal(2, ntt("find", "--regex", "(").code)
  end)

  it("ntt blob: every medium and path holding it, and its file in the store", function()
    local blob = hash.sum(shared)
    local r = ntt("blob", "--json", blob)
    assert.equal(0, r.code, r.stderr)
    local b = assert(json.decode(r.stdout))
    assert.equal(#shared, b.size)
    assert.is_true(b.exists)
    assert.equal(home .. "/store/by-hash/" .. blob:sub(1, 2) .. "/" .. blob:sub(3, 4) .. "/" .. blob, b.store_path)
    assert.equal(shared, helper.read(b.store_path))
    local held = {}
    for _, x in ipairs(b.holders) do held[#held + 1] = x.medium .. " " .. x.path .. " " .. x.state end
    table.sort(held)
    local want = { h1 .. " docs/report_" .. t .. ".txt copied", h2 .. " copy/report_" .. t .. ".txt copied" }
    table.sort(want)
    assert.same(want, held)
    r = ntt("blob", blob)
    assert.matches("held by 2 paths", r.stdout)
    assert.matches("present, " .. #shared .. " bytes", r.stdout)
    -- unknown: exit 1; not a hash: usage
    r = ntt("blob", "--json", hash.sum("never stored " .. t))
    assert.equal(1, r.code)
    assert.is_false(json.decode(r.stdout).known)
    assert.equal(2, ntt("blob", "xyz").code)   -- not a blob hash
  end)

  it("ntt problems: one medium or every one", function()
    local r = ntt("problems", "--json", h2)
    assert.equal(1, r.code, r.stderr)
    local list = assert(json.decode(r.stdout))
    assert.equal(1, #list)
    assert.equal("made_by_spec", list[1].problem)
    assert.equal(1, list[1].detail.n)
    r = ntt("problems", h1)
    assert.equal(0, r.code, r.stderr)
    assert.equal("no problems recorded\n", r.stdout)
    r = ntt("problems", "--json", h1)
    assert.equal("[]\n", r.stdout)
    r = ntt("problems")
    assert.matches(h2 .. "  made_by_spec%s+{\"n\":1}", r.stdout)
    assert.equal(2, ntt("problems", "no-such-medium-" .. t).code)
  end)
end)

describe("ntt status on a fresh data root", function()
  it("answers without a database and starts none", function()
    local home = helper.tmpdir("fresh") .. "/home"
    local proc = require "ntt.core.proc"
    local r = assert(proc.run { argv = { helper.ntt, "status" }, env = { NTT_HOME = home, NTT_DB_URL = "" },
                                timeout = 60 })
    assert.equal(0, r.code, r.stderr)
    assert.matches("no database yet", r.stdout)
    assert.is_nil(io.open(home .. "/pg/data/PG_VERSION"))
  end)

  it("starts a stopped private cluster only to answer, and stops it again", function()
    local ok, why = runs.can_run()
    if not ok then pending(why); return end
    local proc = require "ntt.core.proc"
    local dir = helper.tmpdir("stopped")
    proc.run { argv = { "chmod", "0755", dir }, timeout = 10 }
    local env = { NTT_HOME = dir .. "/home", NTT_DB_URL = "" }
    local function ntt(...) return assert(proc.run { argv = { helper.ntt, ... }, env = env, timeout = 120 }) end
    local r = ntt("db", "init")
    assert.equal(0, r.code, r.stderr .. r.stdout)
    finally(function() ntt("db", "stop") end)
    assert.equal(0, ntt("db", "stop").code)
    r = ntt("status")
    assert.equal(0, r.code, r.stderr)
    assert.equal("no media yet\n", r.stdout)
    assert.matches("stopped", ntt("db", "status").stdout)
    r = ntt("problems", "--json")
    assert.equal("[]\n", r.stdout)
    assert.matches("stopped", ntt("db", "status").stdout)
  end)
end)
