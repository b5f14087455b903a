-- spec/store_fault_spec.lua: the store's faults stop the run, not the files
-- (a real ext4 store on a loop device filling up, then grown); the low-space
-- check before each claim.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local util = require "ntt.core.util"
local json = require "ntt.json"
local runs = require "spec.support.runs"

local MiB = images.MiB or 1024 * 1024
local run, db = runs.run, runs.db

local function states(h)
  local out = {}
  for _, r in ipairs(assert(db():exec(("SELECT state::text AS state, count(*) AS n, sum(attempts) AS attempts FROM inode_p_%s WHERE fs_type = 'f' GROUP BY 1")
                                      :format(h)))) do
    out[r.state] = { n = r.n, attempts = r.attempts }
  end
  return out
end

local problems, check_store = runs.problems, runs.check_store

local function log_events(home, file)
  local out = {}
  local f = io.open(home .. "/log/" .. file, "rb")
  if not f then return out end
  for line in f:lines() do
    local e = json.decode(line)
    out[#out + 1] = e
  end
  f:close()
  return out
end

describe("a store fault", function()
  local ok, why = runs.can_run()
  if not ok then
    it("stops the run cleanly", function() pending(why) end)
    return
  end
  after_each(runs.unmount)

  it("stops the run when the store fills up, blames no file, and a rerun after growing it copies every file", function()
    local dir = helper.tmpdir("storefull")
    local home = dir .. "/home"
    local store = home .. "/store"
    helper.sh { "mkdir", "-p", store }
    -- the store: a 30 MB ext4 on a loop device
    local simg = dir .. "/store.img"
    images.truncate(simg, 30 * MiB)
    helper.sh { "mkfs.ext4", "-q", "-F", simg }
    helper.sh { "mount", "-o", "loop", simg, store }
    finally(function() helper.sh({ "umount", "-l", store }, { may_fail = true }) end)
    -- the medium: 90 files of 1 MiB, each its own content, in a ~100 MB image
    local files, n = {}, 90
    for i = 1, n do
      local head = ("%s storefull %03d "):format(runs.tag, i)
      files[("d%d/f%03d"):format(i % 3, i)] = (head:rep(MiB // #head + 1)):sub(1, MiB)
    end
    local img = images.ext(dir .. "/full.img", { size_mb = 110, files = files })
    -- no free space kept: the store truly runs full (ENOSPC from the kernel)
    local pol = runs.policy(dir, "{ copy = { batch = 20 }, store = { min_free_bytes = 0, min_free_fraction = 0 } }")
    local t0 = util.monotonic()
    local r = run(home, { pol, img })
    local stop_seconds = util.monotonic() - t0
    assert.equal(2, r.code, r.stderr .. r.stdout)
    -- one clear message: the store, what happened, the free space it needs
    assert.matches("store " .. store:gsub("%p", "%%%0") .. ": No space left on device %(ENOSPC%)", r.stderr)
    assert.matches("free at least [%d%.]+ [KMG]?i?B there", r.stderr)
    assert.matches("nothing was counted against the medium", r.stderr)
    local h = runs.medium_of(img)
    local st = states(h)
    -- copied what fit, the rest pending: no attempt counted, nothing failed
    assert.is_nil(st.failed_retryable)
    assert.is_nil(st.failed_permanent)
    assert.is_nil(st.skipped)
    assert.truthy(st.pending and st.pending.n > 0, json.encode(st))
    assert.equal(n, (st.pending and st.pending.n or 0) + (st.copied and st.copied.n or 0))
    assert.equal(0, st.pending.attempts)
    -- the summary counts what the database holds
    assert.matches("copied:%s+" .. (st.copied and st.copied.n or 0) .. " ", r.stdout)
    -- no problem on the medium, no diagnosis
    local p = problems(h)
    assert.is_nil(p.high_error_rate, json.encode(p))
    assert.is_nil(p.diagnostic_events, json.encode(p))
    assert.matches("medium problems recorded: 0\n", r.stdout)
    assert.matches("diagnostic events: 0 ", r.stdout)
    -- nothing left under the store's temp names, and what is stored is sound
    assert.equal("", helper.sh({ "find", store .. "/tmp", "-type", "f" }).stdout)
    check_store(store)
    -- the stop is logged with the numbers
    local fault
    for _, e in ipairs(log_events(home, "ops.jsonl")) do if e.event == "store_fault" then fault = e end end
    assert.truthy(fault)
    assert.equal("ENOSPC", fault.err)
    assert.equal(st.pending.n, fault.pending)
    assert.is_true(fault.need > 0)
    -- with worker processes too: each stops, none is blamed, one message
    r = run(home, { "--workers", "3", pol, img })
    assert.equal(2, r.code, r.stderr .. r.stdout)
    assert.matches("No space left on device %(ENOSPC%)", r.stderr)
    assert.is_nil(r.stderr:find("copy worker", 1, true), r.stderr)
    local stw = states(h)
    assert.equal(0, stw.pending.attempts)
    assert.is_nil(stw.failed_retryable)
    assert.is_nil(problems(h).diagnostic_events)
    -- a read-only store stops it the same way
    helper.sh { "mount", "-o", "remount,ro", store }
    r = run(home, { pol, img })
    assert.equal(2, r.code, r.stderr .. r.stdout)
    assert.matches("store " .. store:gsub("%p", "%%%0") .. ": Read%-only file system %(EROFS%)", r.stderr)
    assert.matches("make it writable", r.stderr)
    local st2 = states(h)
    assert.equal(stw.pending.n, st2.pending.n)
    assert.equal(0, st2.pending.attempts)
    assert.is_nil(problems(h).diagnostic_events)
    -- grow the store (offline), run again: every file copied
    helper.sh { "umount", store }
    images.grow_ext(simg, 200 * MiB)
    helper.sh { "mount", "-o", "loop", simg, store }
    t0 = util.monotonic()
    r = run(home, { pol, img })
    local rerun_seconds = util.monotonic() - t0
    assert.equal(0, r.code, r.stderr .. r.stdout)
    st = states(h)
    assert.equal(n, st.copied and st.copied.n, json.encode(st))
    assert.equal(0, st.copied.attempts)
    assert.equal(n, check_store(store))
    io.stderr:write(("\n[store_fault] clean stop of a full store: %.2f s; rerun after growing it: %.2f s\n")
                    :format(stop_seconds, rerun_seconds))
  end)

  it("the low-space check stops before a batch is claimed", function()
    local dir = helper.tmpdir("storelow")
    local home = dir .. "/home"
    local tree = dir .. "/tree"
    helper.sh { "mkdir", "-p", tree }
    images.files(tree, { ["a.txt"] = "low a " .. runs.tag, ["b/c.txt"] = "low c " .. runs.tag })
    -- keep (nearly) the whole filesystem free: never met
    local pol = runs.policy(dir, "{ store = { min_free_bytes = 1 << 50, min_free_fraction = 0.99 } }")
    local r = run(home, { pol, "--tree", tree })
    assert.equal(2, r.code, r.stderr .. r.stdout)
    assert.matches("store .*: only [%d%.]+ [KMGT]?i?B free, below the [%d%.]+ [KMGT]?i?B it keeps free", r.stderr)
    local h = runs.medium_of(tree)
    local st = states(h)
    assert.equal(2, st.pending and st.pending.n, json.encode(st))
    assert.equal(0, st.pending.attempts)
    assert.is_nil(st.copied)
    -- the policy checks its numbers at load
    local bad = runs.policy(dir, "{ store = { min_free_fraction = 1.5 } }")
    r = run(home, { bad, "--tree", tree })
    assert.equal(2, r.code)
    assert.matches("store%.min_free_fraction must be at least 0 and below 1", r.stderr)
    bad = runs.policy(dir, "{ store = { min_free_bytes = -1 } }")
    r = run(home, { bad, "--tree", tree })
    assert.equal(2, r.code)
    assert.matches("store%.min_free_bytes must be 0 or more", r.stderr)
  end)
end)
