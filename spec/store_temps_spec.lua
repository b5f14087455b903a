-- spec/store_temps_spec.lua: the temps a killed copy leaves in the store's
-- tmp/ are swept by the next copier of this host (ntt.copier.temps); those
-- of live processes and of other hosts stay.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local store = require "ntt.core.store"
local temps = require "ntt.copier.temps"


local function host() return ((util.hostname() or "host"):sub(1, 63):gsub("[^%w_%-]", "_")) end

local function exists(p) return require("ntt.core.fs").stat(p, true) ~= nil end

describe("store temps", function()
  it("sweeps this host's temps of processes that are gone, and only those", function()
    local root = helper.tmpdir("temps") .. "/store"
    local st = assert(store.open(root))
    st:close()
    local dead = helper.gone_pid()
    local names = {
      dead = ("%s.%d.7.00ff00ff00ff00ff.tmp"):format(host(), dead),
      dead2 = ("%s.%d.8.0123456789abcdef.tmp"):format(host(), dead),
      live = ("%s.%d.1.00ff00ff00ff00ff.tmp"):format(host(), 1),               -- init: alive
      mine = ("%s.%d.1.00ff00ff00ff00ff.tmp"):format(host(), util.pid()),
      other_host = ("elsewhere-example.%d.1.00ff00ff00ff00ff.tmp"):format(dead),
      not_a_temp = "notes.txt",
    }
    for _, n in pairs(names) do helper.write(root .. "/tmp/" .. n, ("x"):rep(100)) end
    local r = assert(temps.sweep(root))
    assert.same({ files = 2, bytes = 200 }, r)
    for k, n in pairs(names) do
      assert.equal(k ~= "dead" and k ~= "dead2", exists(root .. "/tmp/" .. n), k)
    end
    assert.same({ files = 0, bytes = 0 }, assert(temps.sweep(helper.tmpdir("temps-none") .. "/nostore")))
  end)

  local ok, why = runs.can_run()
  if not ok then
    it("after a killed run", function() pending(why) end)
    return
  end
  after_each(runs.unmount)

  it("a run killed while it copies leaves temps; the next run sweeps them and copies everything", function()
    local dir = helper.tmpdir("temps-run")
    local files = {}
    for i = 1, 60 do files[("f%02d.bin"):format(i)] = ("%s %d "):format(runs.tag, i):rep(60000) end
    local img = images.ext(dir .. "/t.img", { size_mb = 160, files = files })
    local pol = runs.policy(dir, "{ copy = { batch = 60, threads = 2, durability = 'batch' } }")
    local home = dir .. "/home"
    local env = runs.env_of(dir, home)
    local h = runs.medium_of(img)
    -- the batch's temps are all written before its syncfs: stop the run there
    local a = runs.start(finally, { "run", pol, img }, env, dir .. "/a")
    local saw = runs.wait_for(function()
      local n = 0
      for _ in pairs(require("ntt.core.fs").readdir(home .. "/store/tmp") or {}) do n = n + 1 end
      return n >= 5
    end)
    a:kill(9)
    a:wait(10)
    local left = #(require("ntt.core.fs").readdir(home .. "/store/tmp") or {})
    if not saw or left == 0 then pending("the run finished its batch before it could be killed") return end
    local r = assert(proc.run { argv = { helper.ntt, "run", pol, img }, env = env, timeout = 240 })
    assert.equal(0, r.code, r.stderr)
    assert.same({}, require("ntt.core.fs").readdir(home .. "/store/tmp"))
    local ev = runs.events(home, "store_temps_swept")
    assert.equal(1, #ev)
    assert.equal(left, ev[1].files)
    assert.equal(60, runs.copied(runs.db(), h))
    io.stderr:write(("\n[temps] a killed run left %d temps; swept by the next\n"):format(left))
  end)
end)
