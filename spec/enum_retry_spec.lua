-- spec/enum_retry_spec.lua: the places a walk could not read are recorded
-- with the load, and a rerun walks those again, and only those.
local helper = require "spec.support.helper"
local mediadb = require "spec.support.mediadb"
local util = require "ntt.core.util"

describe("enumerate retry", function()
  local url = helper.db_url()
  if not url then
    it("walks again what could not be read", function() pending("no test database") end)
    return
  end
  local db = require "ntt.db"
  local enumerate = require "ntt.enumerate"
  local retry = require "ntt.enumerate.retry"
  local failures = require "ntt.enumerate.failures"
  local load = require "ntt.core.load"
  local t = mediadb.open(url, "retry", 0x70000)
  local medium, rows = t.medium, t.rows
  before_each(t.connect)
  after_each(t.close)

  local function failure_rows(h)
    return assert(t.conn:exec([[SELECT fs_index, path, kind, err, retry, tries, resolved_at IS NOT NULL AS resolved
                                FROM enum_failure WHERE medium_hash = $1 ORDER BY path, kind]], h))
  end

  it("load.walk with start and only walks one place, paths relative to the root", function()
    local dir = helper.tmpdir("start")
    helper.sh { "mkdir", "-p", dir .. "/a/b/c", dir .. "/a/other" }
    helper.write(dir .. "/a/b/c/f", "f")
    helper.write(dir .. "/a/b/g", "g")
    helper.write(dir .. "/a/other/x", "x")
    local h = medium(dir)
    assert(t.conn:exec("CREATE TEMP TABLE t_inode (LIKE inode INCLUDING DEFAULTS)"))
    assert(t.conn:exec("CREATE TEMP TABLE t_path (LIKE path INCLUDING DEFAULTS)"))
    local st = assert(load.walk(t.conn, { root = dir, start = "a", only = "b", inode_table = "t_inode",
                                        path_table = "t_path", medium = h, fs_index = 3 }))
    local got = {}
    for _, r in ipairs(assert(t.conn:exec("SELECT path, fs_index, parent_ino FROM t_path ORDER BY path"))) do
      got[#got + 1] = r.path
      assert.equal(3, r.fs_index)
    end
    assert.same({ "a/b", "a/b/c", "a/b/c/f", "a/b/g" }, got)
    assert.equal(4, st.entries)
    -- a/b's row names a as its parent
    local a = assert(t.conn:exec("SELECT parent_ino FROM t_path WHERE path = 'a/b'"))[1].parent_ino
    assert.equal(tonumber((helper.sh { "stat", "-c", "%i", dir .. "/a" }).stdout), a)
    -- a start that cannot be opened is an error of the walk, not of the call
    st = assert(load.walk(t.conn, { root = dir, start = "nowhere", only = "x", inode_table = "t_inode",
                                  path_table = "t_path", medium = h, fs_index = 3 }))
    assert.equal(1, st.error_count)
    assert.equal("nowhere", st.errors[1].path)
    assert.equal("ENOENT", st.errors[1].err)
    -- only is one name
    assert.has_error(function() load.walk(t.conn, { root = dir, start = "a", only = "b/c", inode_table = "t_inode",
                                                   path_table = "t_path", medium = h, fs_index = 3 }) end)
  end)

  it("records a load's failures, then loads what became readable and resolves it, leaving the rest", function()
    local dir = helper.tmpdir("retry")
    helper.sh { "mkdir", "-p", dir .. "/ok", dir .. "/late" }
    helper.write(dir .. "/ok/one", "1")
    helper.write(dir .. "/top", "t")
    local h = medium(dir)
    local s = assert(enumerate.load(t.conn, h, { { fs_index = 0, root = dir } }))
    assert.equal(0, s.error_count)
    assert.equal(0, #failure_rows(h))
    -- as if the walk had met these (a damaged directory, a name refused,
    -- a cycle): what a load records
    assert(db.tx(t.conn, function()
      failures.record(t.conn, h, { errors = {
        { fs_index = 0, path = "late", err = "EBADMSG", msg = "getdents64: Bad message" },
        { fs_index = 0, path = "late/deeper", err = "EIO", msg = "open: Input/output error" },
        { fs_index = 0, path = "gone/x", err = "EUCLEAN", msg = "statx: Structure needs cleaning" },
        { fs_index = 0, path = "ok/loop", err = "ELOOP", msg = "directory is its own ancestor: not descended" },
        { fs_index = 7, path = "elsewhere", err = "EIO", msg = "open: Input/output error" } },
        duplicates = { { fs_index = 0, path = "ok/twice" } } })
      return true
    end))
    local before = rows(h, "SELECT p.path, i.ino, i.state::text AS state FROM PATH p JOIN INODE i USING (fs_index, ino) ORDER BY 1")
    assert(t.conn:exec(("UPDATE %s SET state = 'skipped', reason = 'kept' WHERE fs_type = 'f'"):format((db.partition_names(h)))))
    -- "late" is readable now, with files and a subdirectory
    helper.sh { "mkdir", "-p", dir .. "/late/deeper" }
    helper.write(dir .. "/late/new1", "n1")
    helper.write(dir .. "/late/deeper/new2", "n2")
    helper.write(dir .. "/ok/not-walked", "the rest is not walked again")
    local r = assert(retry.run(t.conn, h, { { fs_index = 0, root = dir } }))
    assert.equal(3, r.tried)                          -- p7 is not mounted; ELOOP is not retried
    local walked = {}
    for _, w in ipairs(r.walked) do walked[#walked + 1] = w.path end
    table.sort(walked)
    assert.same({ "gone/x", "late" }, walked)         -- late/deeper is below late
    assert.equal(2, r.files)
    assert.equal(2, r.resolved)                       -- late, late/deeper
    assert.equal(1, r.still)                          -- gone/x: its parent is missing
    local paths = {}
    for _, p in ipairs(rows(h, "SELECT p.path, i.state::text AS state FROM PATH p JOIN INODE i USING (fs_index, ino) ORDER BY 1")) do
      paths[p.path] = p.state
    end
    assert.equal("pending", paths["late/new1"])
    assert.equal("pending", paths["late/deeper/new2"])
    assert.equal("non_file", paths["late/deeper"])
    assert.is_nil(paths["ok/not-walked"])             -- only the failed places
    assert.equal("skipped", paths["ok/one"])          -- rows already there untouched
    assert.equal(#before + 3, rows(h, "SELECT count(*) AS n FROM PATH")[1].n)
    local f = {}
    for _, row in ipairs(failure_rows(h)) do f[row.fs_index .. ":" .. row.path .. ":" .. row.kind] = row end
    assert.is_true(f["0:late:error"].resolved)
    assert.is_true(f["0:late/deeper:error"].resolved)
    assert.is_false(f["0:ok/loop:error"].resolved)
    assert.is_false(f["0:ok/loop:error"].retry)
    assert.is_false(f["7:elsewhere:error"].resolved)  -- waits for its filesystem
    assert.is_false(f["0:ok/twice:duplicate"].retry)
    -- gone/x: walked from gone, which cannot be opened: recorded at gone, x stays
    assert.is_false(f["0:gone/x:error"].resolved)
    assert.equal("ENOENT", f["0:gone:error"].err)
    assert.is_true(f["0:gone:error"].retry)
    -- nothing left that a rerun could read: the next one walks gone only
    helper.sh { "mkdir", "-p", dir .. "/gone/x" }
    helper.write(dir .. "/gone/x/back", "b")
    r = assert(retry.run(t.conn, h, { { fs_index = 0, root = dir } }))
    assert.equal(2, r.tried)
    assert.same({ { fs_index = 0, path = "gone" } }, r.walked)
    assert.equal(2, r.resolved)
    assert.equal(0, r.still)
    assert.equal("pending", rows(h, "SELECT i.state::text AS state FROM PATH p JOIN INODE i USING (fs_index, ino) WHERE p.path = 'gone/x/back'")[1].state)
    -- and then nothing to do at all
    r = assert(retry.run(t.conn, h, { { fs_index = 0, root = dir } }))
    assert.equal(0, r.tried)
    local st = failures.state(t.conn, h)
    assert.equal(2, st.errors)                        -- the ELOOP note, p7
    assert.equal(1, st.duplicates)
  end)

  it("a file excluded until now that gains a path not excluded becomes pending", function()
    local dir = helper.tmpdir("relink")
    helper.sh { "mkdir", "-p", dir .. "/late" }
    helper.write(dir .. "/skip.me", "linked")
    local h = medium(dir)
    local ignore = { util.regex("\\.me$") }
    assert(enumerate.load(t.conn, h, { { fs_index = 0, root = dir } }, { ignore = ignore }))
    assert.equal("excluded", rows(h, "SELECT state::text AS state FROM INODE WHERE fs_type = 'f'")[1].state)
    assert(db.tx(t.conn, function()
      failures.record(t.conn, h, { errors = { { fs_index = 0, path = "late", err = "EIO", msg = "getdents64: Input/output error" } } })
      return true
    end))
    helper.sh { "ln", dir .. "/skip.me", dir .. "/late/kept" }
    local r = assert(retry.run(t.conn, h, { { fs_index = 0, root = dir } }, { ignore = ignore }))
    assert.equal(1, r.resolved)
    assert.equal(0, r.files)                           -- the inode was there already
    local st = rows(h, "SELECT i.state::text AS state, count(p.path) AS n FROM INODE i JOIN PATH p USING (fs_index, ino) WHERE i.fs_type = 'f' GROUP BY 1")
    assert.equal(1, #st)
    assert.equal("pending", st[1].state)
    assert.equal(2, st[1].n)
  end)
end)

describe("the end-of-run summary", function()
  it("counts each place a problem entry stands for", function()
    local summary = require "ntt.summary"
    local text = summary.format({ { ok = true, ctx = { counts = {}, problems = {
      { kind = "enum_errors", count = 3 }, { kind = "duplicate_paths", count = 2 }, { kind = "mount_failed" } } } } }, 1)
    assert.matches("medium problems recorded: 6\n", text)
  end)
end)
