-- spec/retry_failed_spec.lua: a failed_retryable file is tried again by the
-- next run; `ntt recover` lists (--dry-run) or resets chosen files; every
-- file lost is a line in errors.jsonl; the summary counts problems and
-- diagnostic events as the database holds them.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local json = require "ntt.json"
local runs = require "spec.support.runs"

local run, db = runs.run, runs.db

local function rows(h)
  local out = {}
  for _, r in ipairs(assert(db():exec(([[SELECT p.path, i.state::text AS state, i.attempts, i.reason, i.blobid
                                           FROM path_p_%s p JOIN inode_p_%s i USING (fs_index, ino)
                                          WHERE i.fs_type = 'f']]):format(h, h)))) do
    out[r.path] = r
  end
  return out
end

local function set_state(h, path, state, attempts)
  assert(db():exec(([[UPDATE inode_p_%s i SET state = $2::inode_state, attempts = $3, reason = 'made so by the spec'
                        FROM path_p_%s p WHERE p.fs_index = i.fs_index AND p.ino = i.ino AND p.path = $1]]):format(h, h),
                   path, state, attempts))
end

local function events(home, file, name)
  local out = {}
  local f = io.open(home .. "/log/" .. file, "rb")
  if not f then return out end
  for line in f:lines() do
    local e = json.decode(line)
    if e.event == name then out[#out + 1] = e end
  end
  f:close()
  return out
end

local function stored(h)
  local r = assert(db():exec("SELECT problems::text AS p FROM medium WHERE medium_hash = $1", h))
  return json.decode(r[1].p or "{}") or {}
end

describe("the end-of-run summary", function()
  it("counts problems and events as the database holds them, and the files retried", function()
    local summary = require "ntt.summary"
    local text, t = summary.format({
      { ok = true, ctx = { counts = { retried = 3 }, problems = {},
                           recorded = { problems = 2, kinds = { high_error_rate = 1, enum_errors = 1 },
                                        events = 45, since = 40 } } },
      { ok = true, ctx = { counts = {}, problems = { { kind = "mount_failed" } } } },
    }, 1)
    assert.matches("medium problems recorded: 3\n", text)
    assert.matches("  by kind:    enum_errors 1, high_error_rate 1, mount_failed 1\n", text)
    assert.matches("diagnostic events: 45 %(40 by this run%)\n", text)
    assert.matches("retried:      3 ", text)
    assert.equal(3, t.retried)
    assert.equal(45, t.events)
  end)
end)

describe("retryable files", function()
  local ok, why = runs.can_run()
  if not ok then
    it("are tried again", function() pending(why) end)
    return
  end

  it("are tried again by the next run, each failure a line in errors.jsonl, the summary counting what is stored", function()
    local dir = helper.tmpdir("retryf")
    local home, tree = dir .. "/home", dir .. "/tree"
    helper.sh { "mkdir", "-p", tree }
    local t = runs.tag
    local files = { ["a.txt"] = "retry a " .. t, ["b.txt"] = "retry b " .. t,
                    ["sub/c.txt"] = "retry c " .. t, ["sub/d.txt"] = "retry d " .. t }
    images.files(tree, files)
    -- enumerate only, then lose one file before the copy
    local r = runs.enumerate_only(dir, home, tree)
    assert.equal(1, r.code, r.stderr .. r.stdout)   -- files left pending
    os.remove(tree .. "/sub/c.txt")
    local pol = runs.policy(dir, [[{
  retry = { checkpoint = 2, max = 3, backoff = { base = 0.001, factor = 1, cap = 0.001 } },
  diagnose = { { ntt.always, ntt.CONTINUE } },
}]], "copy.lua")
    r = run(home, { pol, "--tree", tree })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    local h = runs.medium_of(tree)
    local st = rows(h)
    assert.equal("failed_retryable", st["sub/c.txt"].state)
    assert.equal(3, st["sub/c.txt"].attempts)
    assert.equal("copied", st["a.txt"].state)
    assert.matches("failed:%s+1\n", r.stdout)
    -- the failure is a line of errors.jsonl, with its path
    local lost = events(home, "errors.jsonl", "file_failed")
    assert.equal(1, #lost)
    assert.equal("sub/c.txt", lost[1].path)
    assert.equal("failed_retryable", lost[1].state)
    assert.equal(h, lost[1].medium)
    -- the summary says what medium.problems holds
    local p = stored(h)
    local n_events = #(p.diagnostic_events or {})
    assert.is_true(n_events >= 2, json.encode(p))
    assert.matches(("diagnostic events: %d %%(%d by this run%%)\n"):format(n_events, n_events), r.stdout)
    local n_problems = 0
    for k in pairs(p) do if k ~= "diagnostic_events" and k ~= "events_dropped" then n_problems = n_problems + 1 end end
    assert.matches(("medium problems recorded: %d\n"):format(n_problems), r.stdout)
    -- the file is back: the next run tries it again, with its attempts reset
    images.files(tree, { ["sub/c.txt"] = files["sub/c.txt"] })
    r = run(home, { pol, "--tree", tree })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("retried:%s+1 ", r.stdout)
    assert.matches("copied:%s+1 ", r.stdout)
    st = rows(h)
    assert.equal("copied", st["sub/c.txt"].state)
    assert.equal(0, st["sub/c.txt"].attempts)
    assert.equal(require("ntt.core.hash").sum(files["sub/c.txt"]), st["sub/c.txt"].blobid)
    assert.matches(("diagnostic events: %d %%(0 by this run%%)\n"):format(n_events), r.stdout)
    -- by policy, not: copy.retry_failed = false leaves them failed
    set_state(h, "a.txt", "failed_retryable", 50)
    local keep = runs.policy(dir, "{ copy = { retry_failed = false } }")
    r = run(home, { keep, "--tree", tree })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    assert.matches("retried:%s+0\n", r.stdout)
    assert.equal("failed_retryable", rows(h)["a.txt"].state)
    assert.equal(50, rows(h)["a.txt"].attempts)
  end)

  it("a skip and a problem recorded are lines of errors.jsonl too", function()
    local dir = helper.tmpdir("skipline")
    local home, tree = dir .. "/home", dir .. "/tree"
    helper.sh { "mkdir", "-p", tree }
    images.files(tree, { ["x.txt"] = "skip x " .. runs.tag, ["y.txt"] = "skip y " .. runs.tag })
    local r = runs.enumerate_only(dir, home, tree)
    assert.equal(1, r.code, r.stderr .. r.stdout)
    os.remove(tree .. "/x.txt")
    local pol = runs.policy(dir, [[{
  retry = { checkpoint = 1, max = 5, backoff = { base = 0.001, factor = 1, cap = 0.001 } },
  diagnose = { { ntt.has "detected_missing_file", ntt.SKIP "GONE" }, { ntt.always, ntt.CONTINUE } },
}]], "skip.lua")
    r = run(home, { pol, "--tree", tree })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    assert.matches("skipped:%s+1 %(GONE 1%)", r.stdout)
    local skips = events(home, "errors.jsonl", "file_skipped")
    assert.equal(1, #skips)
    assert.equal("x.txt", skips[1].path)
    assert.equal("GONE", skips[1].reason)
    assert.is_nil(r.stderr:find("x.txt: skipped", 1, true))   -- per file on stderr only with -v
    -- a problem recorded on the medium: one line, once
    local h = runs.medium_of(tree)
    local log = require "ntt.log"
    local l = assert(log.open { dir = home .. "/log", err = { write = function() end } })
    local before = log.default()
    log.set_default(l)
    local problems = require "ntt.problems"
    local ok1, e1 = problems.note(db(), h, "spec_problem", { why = "a test" })
    local ok2, e2 = problems.note(db(), h, "spec_problem", { why = "a test" })
    log.set_default(before)
    l:close()
    assert.is_true(ok1, e1)
    assert.is_true(ok2, e2)
    local recorded = events(home, "errors.jsonl", "problem_recorded")
    assert.equal(1, #recorded)
    assert.equal("spec_problem", recorded[1].problem)
    assert.equal(h, recorded[1].medium)
    local c = assert(problems.count(db(), h))
    assert.equal(1, c.kinds.spec_problem)
  end)

  it("ntt recover lists with --dry-run and resets without it, one log line each", function()
    local dir = helper.tmpdir("recover")
    local home, tree = dir .. "/home", dir .. "/tree"
    helper.sh { "mkdir", "-p", tree }
    local t = runs.tag
    images.files(tree, { ["a.txt"] = "recover a " .. t, ["b.txt"] = "recover b " .. t, ["c.txt"] = "recover c " .. t })
    local pol = runs.policy(dir)
    local r = run(home, { pol, "--tree", tree })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local h = runs.medium_of(tree)
    set_state(h, "a.txt", "failed_retryable", 50)
    set_state(h, "b.txt", "failed_permanent", 50)
    -- --dry-run: listed, nothing changes
    r = runs.ntt(home, { "recover", "--dry-run", "--state", "failed_permanent", h:sub(1, 12) })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches(h .. "  p0  ino %d+  failed_permanent %-> pending %(dry run%): b%.txt  %(made so by the spec%)\n", r.stdout)
    assert.is_nil(r.stdout:find("a.txt", 1, true))
    assert.matches("1 file would be made pending on 1 medium\n", r.stdout)
    local st = rows(h)
    assert.equal("failed_permanent", st["b.txt"].state)
    assert.equal(50, st["b.txt"].attempts)
    assert.equal("failed_retryable", st["a.txt"].state)
    assert.equal(1, #events(home, "ops.jsonl", "file_recoverable"))
    -- the default state is failed_retryable; every medium when none is named
    r = runs.ntt(home, { "recover", "--dry-run" })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("failed_retryable %-> pending %(dry run%): a%.txt", r.stdout)
    assert.is_nil(r.stdout:find("b.txt", 1, true))
    -- for real: both, pending with attempts reset, a log line each
    r = runs.ntt(home, { "recover", "--state", "failed_retryable", "--state", "failed_permanent", h })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("2 files made pending on 1 medium\n", r.stdout)
    st = rows(h)
    for _, f in ipairs { "a.txt", "b.txt" } do
      assert.equal("pending", st[f].state)
      assert.equal(0, st[f].attempts)
      assert.is_nil(st[f].reason)
    end
    assert.equal("copied", st["c.txt"].state)
    local logged = events(home, "ops.jsonl", "file_recovered")
    assert.equal(2, #logged)
    -- the next run copies them
    r = run(home, { pol, "--tree", tree })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    st = rows(h)
    assert.equal("copied", st["a.txt"].state)
    assert.equal("copied", st["b.txt"].state)
    -- misuse
    r = runs.ntt(home, { "recover", "--state", "copied" })
    assert.equal(64, r.code)
    r = runs.ntt(home, { "recover", "no-such-medium-here" })
    assert.equal(2, r.code)
    assert.matches("no medium named", r.stderr)
  end)
end)
