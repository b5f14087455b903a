-- spec/concurrent_runs_spec.lua: two `ntt run`s of one image started
-- together.  The second waits for the first's load of the medium instead
-- of failing at its lock; both copy, their claims sharing the files; batches
-- that hold the same contents are recorded without a deadlock (blobs in one
-- order); their reports and damaged-file lists do not collide.  Both exit 0,
-- every file copied once.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local pg = require "ntt.core.pg"
local rows = require "ntt.copier.rows"

local read = helper.try_read

describe("two runs of one image at once", function()
  local ok, why = runs.can_run()
  if not ok then
    it("run", function() pending(why) end)
    return
  end
  after_each(runs.unmount)

  -- n files in dirs directories whose contents repeat every `kinds` files:
  -- every batch holds blobs the other run's batches hold too
  local function shared_files(tag, n, dirs, kinds)
    local files = {}
    for i = 1, n do
      local k = (i * 7919) % kinds
      files[("d%02d/f%04d"):format(i % dirs, i)] = ("%s content %d\n"):format(tag, k):rep(40)
    end
    return files
  end

  -- the two runs a and b (stderr in dir/a, dir/b) end, each with exit 0
  local function both_exit_0(dir, a, b)
    for _, x in ipairs { { a, "a" }, { b, "b" } } do
      local how, code = x[1]:wait(240)
      local err = read(dir .. "/" .. x[2])
      assert.equal("exit", how, err)
      assert.equal(0, code, err)
    end
  end

  it("the second waits for the first's load, both copy, both exit 0", function()
    local dir = helper.tmpdir("conc-load")
    local img = images.ext(dir .. "/load.img", { size_mb = 16, files = shared_files("load " .. runs.tag, 400, 8, 23) })
    local pol = runs.policy(dir, "{ copy = { batch = 10, threads = 2, durability = 'none' } }")
    local h = runs.medium_of(img)
    local home = dir .. "/home"
    -- this spec holds the medium's load lock: a run that gets there must wait
    local hold = assert(pg.connect(helper.db_url()))
    finally(function() hold:close() end)
    assert(hold:exec("SELECT pg_advisory_lock(hashtextextended($1, 0))", "ntt load " .. h))
    local a = runs.start(finally, { "run", pol, img }, runs.env_of(dir, home), dir .. "/a")
    local b = runs.start(finally, { "run", pol, img }, runs.env_of(dir, home), dir .. "/b")
    assert.truthy(runs.wait_for(function()
      local n = 0
      for _, e in ipairs(io.open(home .. "/log/ops.jsonl") and runs.events(home, "enumerate_wait") or {}) do
        if e.medium == h then n = n + 1 end
      end
      return n == 2
    end), "both runs wait for the lock: " .. read(dir .. "/a") .. read(dir .. "/b"))
    assert.is_nil(a:wait(0), "a run waiting for the load has not ended: " .. read(dir .. "/a"))
    assert(hold:exec("SELECT pg_advisory_unlock(hashtextextended($1, 0))", "ntt load " .. h))
    both_exit_0(dir, a, b)
    assert.equal(400, runs.copied(runs.db(), h))
    -- one of them loaded, the other found it loaded
    assert.equal(1, #runs.events(home, "enumerated"))
    assert.equal(2, #runs.events(home, "enumerate_waited"))
  end)

  it("batches sharing contents, recorded by two runs at once: no deadlock, every file once", function()
    local dir = helper.tmpdir("conc-copy")
    local img = images.ext(dir .. "/copy.img", { size_mb = 48, files = shared_files("copy " .. runs.tag, 3000, 30, 41) })
    local pol = runs.policy(dir, "{ copy = { batch = 25, threads = 1, durability = 'batch' } }")
    local h = runs.medium_of(img)
    local home = dir .. "/home"
    -- loaded first, so that both start copying at once
    local enum = runs.policy(dir, '{ stages = { "identify", "inspect", "mount", "enumerate", "unmount" } }', "enum.lua")
    local r = assert(require("ntt.core.proc").run { argv = { helper.ntt, "run", enum, img },
                                                    env = runs.env_of(dir, home), timeout = 240 })
    assert.equal(1, r.code, r.stderr)   -- (files left to copy)
    local a = runs.start(finally, { "run", pol, img }, runs.env_of(dir, home), dir .. "/a")
    local b = runs.start(finally, { "run", pol, img }, runs.env_of(dir, home), dir .. "/b")
    both_exit_0(dir, a, b)
    assert.equal(3000, runs.copied(runs.db(), h))
    local by = {}
    for _, e in ipairs(runs.events(home, "copy_batch")) do by[e.pid] = (by[e.pid] or 0) + e.files end
    local total = 0
    for _, n in pairs(by) do total = total + n end
    assert.equal(3000, total)   -- each file recorded by one run
    io.stderr:write(("\n[two runs] files per run: %s\n"):format(require("ntt.json").encode(by)))
    assert.equal(41, runs.check_store(home .. "/store"))
    for _, f in ipairs { "report/" .. h .. ".html", "report/" .. h .. ".json" } do
      assert.truthy(io.open(home .. "/" .. f), f)
    end
    assert.equal("", helper.sh({ "find", home .. "/report", home .. "/tree", "-name", "*.tmp" }).stdout)
  end)

  it("the blobs of a batch go in in one order: two writers of the same new blobs wait, never deadlock", function()
    local a = assert(pg.connect(helper.db_url()))
    local b = assert(pg.connect(helper.db_url()))
    finally(function() a:close() b:close() end)
    local x = ("%016x"):format(require("ntt.core.util").pid()) .. ("0"):rep(47) .. "1"
    local y = x:sub(1, 63) .. "2"                                        -- x < y
    finally(function() runs.db():exec("DELETE FROM blob WHERE blobid IN ($1, $2)", x, y) end)
    for _, c in ipairs { a, b } do assert(c:exec("PREPARE ins(text[], bigint[], text[]) AS " .. rows.BLOBS)) end
    local function lit(ids) return ("ARRAY['%s']::text[], ARRAY[%s]::bigint[], ARRAY[%s]::text[]"):format(
      table.concat(ids, "','"), ("1,"):rep(#ids):sub(1, -2), ("NULL,"):rep(#ids):sub(1, -2)) end
    assert(a:exec("BEGIN"))
    assert(a:exec("EXECUTE ins(" .. lit { x } .. ")"))                  -- a holds x
    assert(b:send("BEGIN; EXECUTE ins(" .. lit { y, x } .. ")"))        -- b: y and x, listed y first
    require("ntt.core.util").sleep(0.3)                                  -- b waits for x (and holds y unless sorted)
    local ok, err, _, state = a:exec("EXECUTE ins(" .. lit { y } .. ")")
    assert.is_truthy(ok, tostring(err) .. " " .. tostring(state))
    assert(a:exec("COMMIT"))
    local bok, berr = b:wait()
    assert.is_truthy(bok, berr)
    assert(b:exec("COMMIT"))
    assert.equal(2, assert(runs.db():exec("SELECT count(*) AS n FROM blob WHERE blobid IN ($1, $2)", x, y))[1].n)
  end)
end)
