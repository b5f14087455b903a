-- spec/ceiling_spec.lua: the copy threads stay under the policy's ceiling on
-- a 9p-like source (spec/fixtures/slowfs.c: one request at a time, each
-- open and read delayed), the controller's moves are logged, and an
-- unreadable file there -- a directory medium, no kernel to confirm the
-- error -- is decided within 2 s.
local helper = require "spec.support.helper"
local runs = require "spec.support.runs"
local util = require "ntt.core.util"
local json = require "ntt.json"
local slowfs = require "spec.support.slowfs"

-- Mounts the fixture at dir/src with env; returns the mount point and the
-- stats file (the most files it had open at once).
local function mount(dir, env)
  local mnt, stats = dir .. "/src", dir .. "/stats"
  env.SLOWFS_STATS = stats
  slowfs.mount(finally, mnt, env, true)
  return mnt, stats
end

local function most_open(stats)
  return tonumber(helper.read(stats):match("^(%d+)"))
end

-- seconds since the epoch of an ISO timestamp (same day is enough here)
local function secs(ts)
  local D, h, m, s = ts:match("%d+-%d+-(%d+)T(%d+):(%d+):([%d.]+)Z")
  return ((tonumber(D) * 24 + tonumber(h)) * 60 + tonumber(m)) * 60 + tonumber(s)
end

local events = runs.events

-- A policy of batches of batch files, the thread controller on and logging
-- (debug), at most ceiling threads on the fixture's filesystem, 8 elsewhere.
local function ceiling_policy(dir, batch, ceiling)
  return runs.policy(dir, ([[{ copy = { batch = %d, adapt = true,
      threads = function(fs) if fs.fstype == "fuse.slowfs" then return %d end return 8 end },
      log = { level = "debug" } }]]):format(batch, ceiling))
end

describe("copy threads on a 9p-like source", function()
  local ok, why = runs.can_run { fuse = true }
  if ok then
    local b, err = slowfs.bin()
    if not b then ok, why = false, err end
  end
  if not ok then
    it("stays under the policy's ceiling", function() pending(why) end)
    return
  end

  it("never copies with more than the policy's 1 thread, and decides an unreadable file within 2 s", function()
    local dir = helper.tmpdir("ceil1")
    local mnt, stats = mount(dir, { SLOWFS_DIRS = "12", SLOWFS_FILES = "3", SLOWFS_BAD = "1",
                                    SLOWFS_LATENCY_MS = "10" })
    -- batches of several directories (one thread each, up to the count):
    -- a controller that climbed past 1 would have two files open at once
    local pol = ceiling_policy(dir, 9, 1)
    local home = dir .. "/home"
    local r = runs.run(home, { pol, mnt })
    assert.equal(1, r.code, r.stderr .. r.stdout)      -- finished, one file skipped
    assert.matches("copied:%s+36 ", r.stdout)
    assert.equal(1, most_open(stats))
    for _, e in ipairs(events(home, "copy_batch")) do assert.equal(1, e.threads) end
    for _, e in ipairs(events(home, "copy_threads")) do assert.is_true(e.to <= 1, json.encode(e)) end
    -- the unreadable file: confirmed by repetition (retry.confirm: 5 alike), skipped then
    local h = runs.medium_of(mnt)
    local rows = assert(runs.db():exec(("SELECT ino, state::text AS state, reason, attempts, errors::text AS errors"
      .. " FROM inode_p_%s WHERE state = 'skipped'"):format(h)))
    assert.equal(1, #rows)
    assert.equal("IO_ERROR_CONFIRMED", rows[1].reason)
    assert.equal(5, rows[1].attempts)
    local pr = json.decode(assert(runs.db():exec("SELECT problems::text AS p FROM medium WHERE medium_hash = $1",
                                                 h))[1].p)
    local ev = pr.diagnostic_events[1]
    assert.equal("skipped", ev.action)
    assert.matches("repeat:io_error", table.concat(ev.checks, ","))
    local took = secs(ev.timestamp) - secs(json.decode(rows[1].errors)[1].at)
    assert.is_true(took <= 2.0, ("decided after %.2f s"):format(took))
  end)

  it("moves the threads below the ceiling on errors and logs each move", function()
    local dir = helper.tmpdir("ceil2")
    -- 4 of 24 files unreadable: more than 10 % of a batch fails
    local mnt, stats = mount(dir, { SLOWFS_DIRS = "10", SLOWFS_FILES = "2", SLOWFS_BAD = "4",
                                    SLOWFS_LATENCY_MS = "2" })
    local pol = ceiling_policy(dir, 24, 2)
    local home = dir .. "/home"
    local t0 = util.monotonic()
    local r = runs.run(home, { pol, mnt })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    assert.is_true(util.monotonic() - t0 < 30)
    assert.is_true(most_open(stats) <= 2)
    local moves = events(home, "copy_threads")
    assert.is_true(#moves >= 1, "no move logged")
    assert.equal("debug", moves[1].level)
    assert.same({ 2, 1, "errors", 2 }, { moves[1].from, moves[1].to, moves[1].reason, moves[1].ceiling })
    for _, e in ipairs(moves) do assert.is_true(e.to <= 2, json.encode(e)) end
  end)
end)
