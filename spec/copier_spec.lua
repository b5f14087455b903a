-- spec/copier_spec.lua: the contracts around the copier -- one list of
-- inode states, the copier's data access (ntt.copier.rows), the run's rule
-- hits (ntt.runs), and the problem hook.
local helper = require "spec.support.helper"
local pg = require "ntt.core.pg"

local newhash = require("spec.support.mediadb").newhash

describe("ntt.states", function()
  local S = require "ntt.states"

  it("names every state once, from the loader's list, and refuses a typo", function()
    local load = require "ntt.core.load"
    assert.same(load.STATES, S.LIST)
    for _, s in ipairs(S.LIST) do assert.equal(s, S[s:upper()]) end
    assert.equal("every path excluded by policy", S.REASONS.excluded)
    assert.equal("directory", S.REASONS.directory)
    assert.has_error(function() return S.PENDNG end, "ntt.states: no state named 'PENDNG'")
    assert.has_error(function() return S.REASONS.nope end)
    assert.is_true(S.failed(S.FAILED_PERMANENT) and S.failed(S.FAILED_RETRYABLE))
    assert.is_false(S.failed(S.SKIPPED))
  end)

  it("equals the labels of the database's enum inode_state, in order", function()
    local url = helper.db_url()
    if not url then return pending("no test database") end
    local conn = assert(pg.connect(url))
    assert(require("ntt.db").migrate(conn))
    local r = assert(conn:exec("SELECT unnest(enum_range(NULL::inode_state))::text AS s"))
    conn:close()
    local labels = {}
    for i, row in ipairs(r) do labels[i] = row.s end
    assert.same(labels, S.LIST)
  end)
end)

describe("copier data access and runs", function()
  local db = require "ntt.db"
  local rows_mod = require "ntt.copier.rows"
  local S = require "ntt.states"
  local url = helper.db_url()
  local conn, seq = nil, 0
  -- Each test: a migrated database, or pending without one.
  local function connected()
    if not url then pending("no test database"); return false end
    conn = assert(pg.connect(url))
    assert(db.migrate(conn))
    return true
  end
  after_each(function() if conn then conn:close(); conn = nil end end)

  -- A medium with partitions and n pending files (ino 1..n, fs_index 0).
  local function medium(n)
    seq = seq + 1
    local h = newhash(seq)
    assert(conn:exec("INSERT INTO medium (medium_hash, medium_human, kind, image_path) VALUES ($1, 'spec', 'directory', '/x')", h))
    local it, pt = assert(db.ensure_partitions(conn, h))
    for i = 1, n do
      assert(conn:exec(("INSERT INTO %s (medium_hash, fs_index, ino, size, dir_key) VALUES ($1, 0, $2, 1, 1)")
                       :format(conn:escape_identifier(it)), h, i))
      assert(conn:exec(("INSERT INTO %s (medium_hash, fs_index, path, ino, parent_ino) VALUES ($1, 0, $2, $3, 1)")
                       :format(conn:escape_identifier(pt)), h, "f" .. i, i))
    end
    return h
  end

  it("claims, counts attempts, writes results and releases, each returning its value", function()
    if not connected() then return end
    local h = medium(3)
    local r = rows_mod.open(conn, h)
    assert.same({ pending = 3, total = 3 }, r:counts())
    local claimed = assert(r:claim(2, "me", 60))
    assert.equal(2, #claimed)
    local paths = assert(r:paths(claimed))
    assert.equal("f1", paths[rows_mod.key(0, 1)])
    local attempts = assert(r:count_attempts(claimed, { { err = "EIO" }, { err = "EIO" } }, 10))
    assert.equal(1, attempts[rows_mod.key(0, 2)])
    assert.is_true(r:reset_attempts({ claimed[1] }))
    assert.is_true(r:write({ { fs_index = 0, ino = 1, state = S.SKIPPED, reason = "R" },
                             { fs_index = 0, ino = 2, state = S.PENDING, release = true } }, "me"))
    assert.equal(2, r:pending())
    assert.equal(1, r:finished())
    assert(r:claim(5, "other:1:", 60))
    assert.is_true(r:release_prefix("other:"))
    assert.equal(2, #assert(r:claim(5, "me", 60)))
    assert.is_true(r:release("me"))
    assert.is_true(r:copy_done())
  end)

  it("writes a skip's reason into claimed_by under an expired lease, and copied = the copier is done", function()
    if not connected() then return end
    local h = medium(3)
    local r = rows_mod.open(conn, h)
    local it = conn:escape_identifier((db.partition_names(h)))
    local function row(ino)
      return conn:exec(("SELECT state::text AS state, copied, claimed_by, lease_until = '-infinity' AS expired FROM %s WHERE ino = $1")
                       :format(it), ino)[1]
    end
    assert.is_false(row(1).copied)                                   -- pending: still work
    assert.equal(3, #assert(r:claim(3, "me", 60)))
    assert.is_true(r:write({ { fs_index = 0, ino = 1, state = S.SKIPPED, reason = "DIAGNOSTIC_SKIP:BEYOND_EOF" },
                             { fs_index = 0, ino = 2, state = S.FAILED_RETRYABLE, reason = "EIO" },
                             { fs_index = 0, ino = 3, state = S.PENDING, release = true } }, "me"))
    assert.same({ state = "skipped", copied = true, claimed_by = "DIAGNOSTIC_SKIP:BEYOND_EOF", expired = true }, row(1))
    assert.same({ state = "failed_retryable", copied = false }, row(2))   -- still work: no claim, not done
    assert.same({ state = "pending", copied = false }, row(3))
    -- copied is computed, never assigned
    local ok, _, code = conn:exec(("UPDATE %s SET copied = true WHERE ino = 3"):format(it))
    assert.is_nil(ok); assert.equal("EDB", code)
    -- a skipped file set back to pending by hand is claimable at once
    assert(conn:exec(("UPDATE %s SET state = 'pending' WHERE ino = 1"):format(it)))
    local again = assert(r:claim(5, "next", 60))
    assert.equal(2, #again)
  end)

  it("returns nil, msg, SQLSTATE when a statement fails (no raise)", function()
    if not connected() then return end
    local r = rows_mod.open(conn, newhash(999))   -- no partitions
    for _, call in ipairs {
      function() return r:pending() end,
      function() return r:claim(1, "me", 60) end,
      function() return r:write({ { fs_index = 0, ino = 1, state = S.COPIED } }, "me") end,
      function() return r:paths({ { fs_index = 0, ino = 1 } }) end,
    } do
      local v, msg, code, state = call()
      assert.is_nil(v)
      assert.matches("does not exist", msg)
      assert.equal("EDB", code)
      assert.equal("42P01", state)
    end
  end)

  it("sums a run's rule hits over media and workers", function()
    if not connected() then return end
    local runs = require "ntt.runs"
    local id = assert(runs.start(conn, "spec.lua"))
    assert.is_true(runs.add_rule_hits(conn, id, { ["1: a -> skip"] = 2 }))
    assert.is_true(runs.add_rule_hits(conn, id, { ["1: a -> skip"] = 3, ["2: b -> continue"] = 1 }))
    assert.is_true(runs.finish(conn, id, 1))
    local row = assert(runs.get(conn, id))
    assert.same({ ["1: a -> skip"] = 5, ["2: b -> continue"] = 1 }, row.rule_hits)
    assert.equal(1, row.exit_code)
  end)

  it("tells the watcher each problem recorded, and a failing hook only logs", function()
    if not connected() then return end
    local problems = require "ntt.problems"
    local policy = require "ntt.policy"
    local h = medium(0)
    local heard = {}
    local logged = {}
    local log = { error = function(_, event, fields) logged[#logged + 1] = { event, fields } end }
    local p = { hooks = {
      on_problem = function(hash, kind, detail)
        heard[#heard + 1] = { hash, kind, detail }
        if kind == "boom" then error("hook broke") end
      end } }
    local prev = problems.watch(function(...) policy.call_hook(p, log, "on_problem", ...) end)
    assert.is_true(problems.note(conn, h, "erased_disk", { byte = 246 }))
    assert.is_true(problems.note(conn, h, "erased_disk", { byte = 0 }))   -- kept: not recorded again
    assert.is_true(problems.event(conn, h, { ino = 7, action = "skipped" }))
    assert.is_true(problems.set(conn, h, "boom", true))
    problems.watch(prev)
    assert.same({ { h, "erased_disk", { byte = 246 } }, { h, "diagnostic_event", { ino = 7, action = "skipped" } },
                  { h, "boom", true } }, heard)
    assert.equal(1, #logged)
    assert.equal("hook_failed", logged[1][1])
    assert.matches("hook broke", logged[1][2].error)
    assert.same({ ino = 7, action = "skipped" }, assert(problems.get(conn, h)).diagnostic_events[1])
  end)
end)
