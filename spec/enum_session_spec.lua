-- spec/enum_session_spec.lua: a load or retry of a medium reports a
-- database failure as nil, msg, "EDB" with the partial summary (SQLSTATE in
-- summary.sqlstate), holds the medium's lock only while it runs, and lets a
-- raised error through after cleaning up.
local helper = require "spec.support.helper"
local util = require "ntt.core.util"
local pg = require "ntt.core.pg"

local function newhash(n)
  return ("%08x%08x%016x"):format(util.pid(), 0x75000 + n, math.floor(util.now() * 1e6))
end

describe("enumerate session", function()
  local url = helper.db_url()
  if not url then
    it("returns database failures", function() pending("no test database") end)
    return
  end
  local db = require "ntt.db"
  local session = require "ntt.enumerate.session"
  local failures = require "ntt.enumerate.failures"
  local retry = require "ntt.enumerate.retry"
  local enumerate = require "ntt.enumerate"
  local conn, other
  local seq = 0
  before_each(function()
    conn = assert(pg.connect(url))
    other = assert(pg.connect(url))
    assert(db.migrate(conn))
  end)
  after_each(function() conn:close(); other:close() end)

  local function medium(root)
    seq = seq + 1
    local h = newhash(seq)
    assert(conn:exec("INSERT INTO medium (medium_hash, medium_human, kind, image_path) VALUES ($1, $2, 'directory', $3)",
                     h, "session " .. seq, root))
    return h
  end

  -- whether another connection can take the medium's lock now (and gives it back)
  local function lock_free(h)
    local key = "ntt load " .. h
    local r = assert(other:exec("SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS ok", key))
    if r[1].ok then assert(other:exec("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)) end
    return r[1].ok
  end

  -- conn inside a transaction that an error has aborted: every statement fails with 25P02
  local function abort(c)
    assert(c:begin())
    assert(not c:exec("SELECT no_such_column FROM medium"))
  end

  it("passes a failure of fn on with the partial summary and the SQLSTATE", function()
    local h = newhash(900)
    local summary = { n = 1 }
    local s, err, code, partial = session.run(conn, h, summary, function()
      return conn:exec("SELECT 1/0")
    end)
    assert.is_nil(s)
    assert.equals("EDB", code)
    assert.matches("division by zero", err)
    assert.equals(summary, partial)
    assert.equals("22012", partial.sqlstate)
    assert.is_nil(partial.seconds)
    assert.is_true(lock_free(h))
  end)

  it("refuses with EBUSY while another holds the lock, without running fn", function()
    local h = newhash(901)
    local key = "ntt load " .. h
    assert(other:exec("SELECT pg_advisory_lock(hashtextextended($1, 0))", key))
    local ran = false
    local s, err, code, partial = session.run(conn, h, {}, function() ran = true; return true end)
    assert.is_nil(s)
    assert.equals("EBUSY", code)
    assert.matches("being loaded by another process", err)
    assert.is_table(partial)
    assert.is_false(ran)
    assert(other:exec("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key))
    local ok = assert(session.run(conn, h, {}, function() return true end))
    assert.is_number(ok.seconds)
  end)

  it("raises a raised error again, the lock released", function()
    local h = newhash(902)
    assert.has_error(function()
      session.run(conn, h, {}, function() error("a bug", 0) end)
    end, "a bug")
    assert.is_true(lock_free(h))
  end)

  it("failures.* return nil, msg, EDB, SQLSTATE instead of raising", function()
    local h = newhash(903)
    abort(conn)
    for name, call in pairs({
      open = function() return failures.open(conn, h) end,
      state = function() return failures.state(conn, h) end,
      record = function() return failures.record(conn, h, { errors = {}, duplicates = {} }) end,
      settle = function() return failures.settle(conn, h, { { fs_index = 0, path = "x" } }, {}) end,
    }) do
      local r, err, code, state = call()
      assert.is_nil(r, name)
      assert.is_string(err, name)
      assert.equals("EDB", code, name)
      assert.equals("25P02", state, name)
    end
    assert(conn:rollback())
  end)

  it("retry.run returns a database failure with its summary", function()
    local h = newhash(904)
    abort(conn)
    local s, err, code, partial = retry.run(conn, h, { { fs_index = 0, root = "/" } })
    assert.is_nil(s)
    assert.is_string(err)
    assert.equals("EDB", code)
    assert.equals(0, partial.tried)
    assert.equals("25P02", partial.sqlstate)
    assert(conn:rollback())
  end)

  it("a raised error in a load rolls back, drops nothing it should keep, and frees the lock", function()
    local dir = helper.tmpdir("session")
    local h = medium(dir)
    assert(db.ensure_partitions(conn, h))
    assert.has_error(function()
      enumerate.load(conn, h, { { fs_index = 0, root = {} } })
    end)
    assert.equals("idle", select(2, conn:status()))
    assert.is_true(lock_free(h))
    local _, pname = db.partition_names(h)
    local staging = (pname:gsub("^path_p_", "path_s_"))
    assert.is_false(assert(conn:exec("SELECT to_regclass($1) IS NOT NULL AS present", staging))[1].present)
    -- nothing half-done in the way: a proper load now succeeds
    local s = assert(enumerate.load(conn, h, { { fs_index = 0, root = dir } }))
    assert.equals(0, s.files)
  end)
end)
