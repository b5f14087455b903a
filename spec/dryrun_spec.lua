-- spec/dryrun_spec.lua: `ntt run --dry-run` writes nothing and tells what a
-- real run then does; `--limit N` copies N files and leaves the rest for the
-- next run.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local mediaimg = require "spec.support.mediaimg"
local json = require "ntt.json"
local proc = require "ntt.core.proc"

local tag, policy, medium_of, run, db = runs.tag, runs.policy, runs.medium_of, runs.run, runs.db

after_each(runs.unmount)

-- Everything a run could have written: every table's rows, the server's
-- counts of inserted, updated and deleted rows per table, and every file
-- under home.
local function snapshot(home, conn)
  local out = {}
  assert(conn:exec("SELECT pg_stat_clear_snapshot()"))
  for _, t in ipairs(assert(conn:exec([[
      SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1]]))) do
    local r = assert(conn:exec(("SELECT count(*) AS n FROM %s"):format(conn:escape_identifier(t.relname))))
    out[#out + 1] = ("rows %s %d"):format(t.relname, r[1].n)
  end
  for _, st in ipairs(assert(conn:exec([[
      SELECT relname, n_tup_ins AS i, n_tup_upd AS u, n_tup_del AS d FROM pg_stat_user_tables
       WHERE n_tup_ins + n_tup_upd + n_tup_del > 0 ORDER BY relname]]))) do
    out[#out + 1] = ("stats %s ins %d upd %d del %d"):format(st.relname, st.i, st.u, st.d)
  end
  local f = assert(proc.run { argv = { "find", home, "-path", home .. "/pg", "-prune", "-o", "-printf", "%P %s %T@\n" } })
  local files = {}
  for l in f.stdout:gmatch("[^\n]+") do files[#files + 1] = l end
  table.sort(files)
  out[#out + 1] = table.concat(files, "\n")
  return table.concat(out, "\n")
end

-- A snapshot once the server's counts have settled.  A backend sends its
-- counts when it exits, which is after its client has gone, and an idle one
-- at most a second after its transaction: so first every other backend must
-- be gone, then the counts must hold still for two seconds.
local function settled(home, conn)
  for _ = 1, 60 do
    local r = assert(conn:exec([[
      SELECT count(*) AS n FROM pg_stat_activity
       WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()]]))
    if r[1].n == 0 then break end
    require("ntt.core.util").sleep(0.25)
  end
  local last, still = snapshot(home, conn), 0
  for _ = 1, 40 do
    require("ntt.core.util").sleep(0.5)
    local now = snapshot(home, conn)
    if now == last then
      still = still + 1
      if still == 4 then return now end
    else
      still = 0
    end
    last = now
  end
  return last
end

local states = runs.states

describe("ntt run --dry-run", function()
  local ok, why = runs.can_run { fuse = true, tools = { "mkfs.vfat" } }
  if not ok then
    it("writes nothing", function() pending(why) end)
    return
  end

  it("on a partial two-partition image writes nothing, and its numbers are what the real run does", function()
    local dir = helper.tmpdir("dryrun")
    helper.sh { "chmod", "0755", dir }          -- the cluster's account reaches home/pg
    local img = mediaimg.partial_disk(dir, tag)
    local home = dir .. "/home"
    -- its own cluster under home: no other spec's process can write there
    local function prun(argv)
      return assert(proc.run { argv = { helper.ntt, "run", table.unpack(argv) },
                               env = { NTT_HOME = home, NTT_DB_URL = false }, timeout = 300 })
    end
    local cluster = require("ntt.cluster").new { root = home .. "/pg" }
    local conn
    finally(function()
      if conn then conn:close() end
      cluster:stop()
    end)
    -- a first medium, so the store, the logs and the database are not empty
    local other = images.ext(dir .. "/other.img", { size_mb = 8, files = { ["o.txt"] = "other " .. tag } })
    local first = prun { policy(dir), other }
    assert.equal(0, first.code, first.stderr)
    conn = assert(require("ntt.core.pg").connect(cluster:url()))
    local pol = policy(dir, '{ enumerate = { ignore = { "^sub/" } } }')
    local before = settled(home, conn)          -- the server's counts of the first run are in
    local r = prun { "--dry-run", "--json", pol, img }
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local plans = json.decode(r.stdout)
    assert.equal(before, settled(home, conn))
    assert.is_nil(proc.run { argv = { "findmnt", "-rn", "-o", "TARGET" } }.stdout:find(plans[1].hash, 1, true))
    local p = plans[1]
    assert.equal(medium_of(img), p.hash)
    assert.is_false(p.known)
    assert.equal(2, p.damaged)
    assert.equal(1, p.excluded_files)                   -- sub/deep.txt
    assert.equal(2, #p.filesystems)
    -- the text form says the same
    local t = prun { "--dry-run", pol, img }
    assert.equal(0, t.code, t.stderr)
    assert.matches("damaged per the map 2 files", t.stdout)
    assert.matches("nothing was written", t.stdout)

    -- now for real: the plan's numbers are the run's
    r = prun { pol, img }
    assert.equal(1, r.code, r.stderr .. r.stdout)
    local h = p.hash
    local it, pt = require("ntt.db").partition_names(h)
    local st, total = {}, 0
    for _, row in ipairs(assert(conn:exec(("SELECT state::text AS s, count(*) AS n FROM %s GROUP BY 1"):format(it)))) do
      st[row.s] = row.n
      total = total + row.n
    end
    assert.equal(p.inodes, total)
    assert.equal(p.entries, assert(conn:exec(("SELECT count(*) AS n FROM %s"):format(pt)))[1].n)
    assert.equal(p.damaged, st.damaged)
    assert.equal(p.excluded_files, st.excluded)
    assert.equal(p.files, (st.copied or 0) + (st.damaged or 0) + (st.skipped or 0) + (st.failed_permanent or 0)
                          + (st.failed_retryable or 0))
    assert.equal(p.beyond_eof, (st.skipped or 0) + (st.failed_permanent or 0))
    assert.is_true(p.beyond_eof > 0)

    -- a known medium: the plan says which stages are done
    r = prun { "--dry-run", "--json", pol, img }
    assert.equal(0, r.code, r.stderr)
    local again = json.decode(r.stdout)[1]
    assert.is_true(again.known)
    local done = {}
    for _, s in ipairs(again.stages) do done[s.name] = s.done end
    assert.is_true(done.identify)
    assert.is_true(done.enumerate)
  end)

  it("refuses --json without --dry-run, and a bad --limit", function()
    local dir = helper.tmpdir("dryrun-usage")
    assert.equal(64, runs.ntt(dir, { "run", "--json", "x.lua", "y" }).code)
    assert.equal(64, runs.ntt(dir, { "run", "--limit", "0", "x.lua", "y" }).code)
    assert.equal(64, runs.ntt(dir, { "run", "--limit", "ten", "x.lua", "y" }).code)
  end)
end)

describe("ntt run --limit", function()
  local ok, why = runs.can_run()
  if not ok then
    it("copies at most N files", function() pending(why) end)
    return
  end

  it("copies 10 files, then a plain run the rest, each once", function()
    local dir = helper.tmpdir("limit")
    local files = {}
    for i = 1, 30 do files[("f%02d.txt"):format(i)] = ("file %d %s"):format(i, tag) end
    local img = images.ext(dir .. "/disk.img", { size_mb = 8, files = files })
    local home = dir .. "/home"
    local r = run(home, { "--limit", "10", "--workers", "3", policy(dir), img })
    assert.equal(1, r.code, r.stderr .. r.stdout)          -- files left pending
    local h = medium_of(img)
    local st = states(h)
    assert.equal(10, st.copied)
    assert.equal(20, st.pending)
    local m = assert(db():exec("SELECT copy_done FROM medium WHERE medium_hash = $1", h))[1]
    assert.is_nil(m.copy_done)
    local it = require("ntt.db").partition_names(h)
    local first = {}
    for _, row in ipairs(assert(db():exec(("SELECT ino, processed_at::text AS at FROM %s WHERE state = 'copied'"):format(it)))) do
      first[row.ino] = row.at
    end
    r = run(home, { policy(dir), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    st = states(h)
    assert.equal(30, st.copied)
    -- the first ten were not copied again
    for _, row in ipairs(assert(db():exec(("SELECT ino, processed_at::text AS at FROM %s WHERE state = 'copied'"):format(it)))) do
      if first[row.ino] then assert.equal(first[row.ino], row.at) end
    end
    assert.is_not_nil(assert(db():exec("SELECT copy_done FROM medium WHERE medium_hash = $1", h))[1].copy_done)
  end)
end)
