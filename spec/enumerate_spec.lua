-- spec/enumerate_spec.lua: every directory entry into PostgreSQL, byte-exact.
local helper = require "spec.support.helper"
local mediadb = require "spec.support.mediadb"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local pg = require "ntt.core.pg"
local json = require "ntt.json"

local tag = ("%d%d"):format(util.pid(), math.floor(util.now() * 1000) % 1000000)

describe("enumerate", function()
  local url = helper.db_url()
  if not url then
    it("loads entries", function() pending("no test database") end)
    return
  end
  local db = require "ntt.db"
  local enumerate = require "ntt.enumerate"
  local t = mediadb.open(url, "spec")
  local medium, rows = t.medium, t.rows
  before_each(t.connect)
  after_each(t.close)

  local ODD = {
    "new\nline", "car\rriage", "trailing cr\r", "fs\28sep", "back\\nslash", "back\\rslash",
    "hash#tag", "quote'\"s", "\xff\xfe invalid utf-8", ("n"):rep(255),
  }

  it("round-trips odd names byte-exact: readdir -> bytea -> open", function()
    local dir = helper.tmpdir("enum")
    for i, name in ipairs(ODD) do helper.write(dir .. "/" .. name, "content " .. i) end
    -- a deep path, longer than PATH_MAX
    local deep = dir
    local rel = {}
    for d = 1, 40 do
      local seg = ("d%02d_"):format(d) .. ("x"):rep(100)
      rel[#rel + 1] = seg
    end
    local mk = { "perl", "-e", 'chdir shift or die; for (@ARGV) { mkdir $_ or die; chdir $_ or die } open F, ">leaf" or die; print F "deep\\n"', dir }
    for _, seg in ipairs(rel) do mk[#mk + 1] = seg end
    local ok = proc.run { argv = mk }
    assert.equal(0, ok.code, ok.stderr)
    local h = medium(dir)
    local s = assert(enumerate.load(t.conn, h, { { fs_index = 0, root = dir } }, { threads = 4 }))
    assert.equal(#ODD + 40 + 1 + 1, s.entries)          -- files, dirs, leaf, the root
    local got = {}
    for _, r in ipairs(rows(h, "SELECT path, ino FROM PATH")) do got[r.path] = r.ino end
    for i, name in ipairs(ODD) do
      assert.truthy(got[name], ("name %d missing: %q"):format(i, name))
      assert.equal("content " .. i, helper.read(dir .. "/" .. name))   -- the stored bytes open the file
    end
    local leaf = table.concat(rel, "/") .. "/leaf"
    assert.truthy(got[leaf])
    assert.is_true(#leaf > 4096)
    -- opening the deep path from the DB bytes, relative and step by step
    local r = proc.run { argv = { "perl", "-e", 'chdir shift or die; my @p = split m{/}, shift; my $f = pop @p; for (@p) { chdir $_ or die } open F, "<", $f or die; print <F>', dir, leaf } }
    assert.equal("deep\n", r.stdout)
  end)

  it("keeps hardlinks as one inode with all paths, records symlinks without following them", function()
    local dir = helper.tmpdir("links")
    helper.write(dir .. "/a", "shared " .. tag)
    helper.sh { "mkdir", dir .. "/sub" }
    helper.sh { "ln", dir .. "/a", dir .. "/sub/b" }
    helper.sh { "ln", "-s", "../a", dir .. "/sub/link" }
    helper.sh { "ln", "-s", "/etc", dir .. "/escape" }
    local h = medium(dir)
    assert(enumerate.load(t.conn, h, { { fs_index = 0, root = dir } }))
    local p = rows(h, "SELECT p.path, i.ino, i.nlink, i.state::text AS state, i.fs_type, i.link_target FROM PATH p JOIN INODE i USING (fs_index, ino) ORDER BY p.path")
    local by = {}
    for _, r in ipairs(p) do by[r.path] = r end
    assert.equal(by.a.ino, by["sub/b"].ino)
    assert.equal(2, by.a.nlink)
    assert.equal("pending", by.a.state)
    assert.equal("l", by["sub/link"].fs_type)
    assert.equal("../a", by["sub/link"].link_target)
    assert.equal("non_file", by["sub/link"].state)
    assert.equal("/etc", by.escape.link_target)
    for path in pairs(by) do assert.is_nil(path:find("^escape/")) end   -- not followed
    local n = rows(h, "SELECT count(*) AS n FROM INODE WHERE fs_type = 'f'")[1].n
    assert.equal(1, n)
  end)

  it("refuses to load a medium again unless told to replace, and then replaces atomically", function()
    local dir = helper.tmpdir("reload")
    helper.write(dir .. "/one", "1")
    local h = medium(dir)
    assert(enumerate.load(t.conn, h, { { fs_index = 0, root = dir } }))
    helper.write(dir .. "/two", "2")
    local s, err, code = enumerate.load(t.conn, h, { { fs_index = 0, root = dir } })
    assert.is_nil(s)
    assert.equal("EEXIST", code)
    assert.matches("already has 2 entries: refusing to load it again %(use %-%-replace", err)
    assert.equal(2, rows(h, "SELECT count(*) AS n FROM PATH")[1].n)       -- untouched
    -- a replace that fails midway keeps the old rows
    s, err = enumerate.load(t.conn, h, { { fs_index = 0, root = dir .. "/missing" } }, { replace = true })
    assert.is_nil(s)
    assert.equal(2, rows(h, "SELECT count(*) AS n FROM PATH")[1].n)
    s = assert(enumerate.load(t.conn, h, { { fs_index = 0, root = dir } }, { replace = true }))
    assert.equal(2, s.replaced)
    assert.equal(3, rows(h, "SELECT count(*) AS n FROM PATH")[1].n)
    -- the new rows are the medium's partitions, with their keys, and no
    -- staging table is left behind
    local i, p = db.partition_names(h)
    local parts = assert(t.conn:exec([[
      SELECT c.relname AS name, p.relname AS parent FROM pg_inherits x
        JOIN pg_class c ON c.oid = x.inhrelid JOIN pg_class p ON p.oid = x.inhparent
       WHERE c.relname IN ($1, $2) ORDER BY 2]], i, p))
    assert.equal(2, #parts)
    assert.same({ "inode", "path" }, { parts[1].parent, parts[2].parent })
    local keys = assert(t.conn:exec([[
      SELECT count(*) AS n FROM pg_index WHERE indrelid IN ($1::regclass, $2::regclass)]], i, p))
    assert.is_true(keys[1].n >= 4)
    local fk = assert(t.conn:exec("SELECT count(*) AS n FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'f'", p))
    assert.equal(1, fk[1].n)
    local stray = assert(t.conn:exec("SELECT relname FROM pg_class WHERE relname IN ($1, $2)",
                                   (i:gsub("_p_", "_s_")), (p:gsub("_p_", "_s_"))))
    assert.equal(0, #stray)
  end)

  it("drops the staging tables a killed load left, and loads", function()
    local dir = helper.tmpdir("stale")
    helper.write(dir .. "/a", "a")
    local h = medium(dir)
    local i, p = db.partition_names(h)
    local si, sp = i:gsub("_p_", "_s_"), p:gsub("_p_", "_s_")
    -- what a load killed between its walk and its swap leaves behind
    assert(t.conn:exec(("CREATE TABLE %s (LIKE inode)"):format(si)))
    assert(t.conn:exec(("CREATE TABLE %s (LIKE path)"):format(sp)))
    assert(t.conn:exec(("INSERT INTO %s (medium_hash, fs_index, path, ino) VALUES ($1, 0, 'junk', 1)"):format(sp), h))
    local s = assert(enumerate.load(t.conn, h, { { fs_index = 0, root = dir } }))
    assert.equal(2, s.entries)
    assert.equal(0, #assert(t.conn:exec("SELECT relname FROM pg_class WHERE relname IN ($1, $2)", si, sp)))
    assert.equal(0, rows(h, "SELECT count(*) AS n FROM PATH WHERE path = 'junk'")[1].n)
  end)

  it("gives a loaded medium's partitions the parents' CHECKs and keys led by the inode number", function()
    local dir = helper.tmpdir("keys")
    helper.write(dir .. "/a", "a")
    local h = medium(dir)
    assert(enumerate.load(t.conn, h, { { fs_index = 0, root = dir } }))
    local i, p = db.partition_names(h)
    -- every CHECK of a parent, under its name, on its partition (added after the COPY)
    local missing = assert(t.conn:exec([[
      SELECT k.conname FROM pg_constraint k
       WHERE k.conrelid IN ('inode'::regclass, 'path'::regclass) AND k.contype = 'c'
         AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                          WHERE c.conrelid = (CASE k.conrelid WHEN 'inode'::regclass THEN $1 ELSE $2 END)::regclass
                            AND c.contype = 'c' AND c.conname = k.conname
                            AND pg_get_constraintdef(c.oid) = pg_get_constraintdef(k.oid))]], i, p))
    assert.equal(0, #missing, missing[1] and missing[1].conname)
    local ok, err = t.conn:exec("UPDATE " .. i .. " SET attempts = -1")
    assert.is_nil(ok); assert.matches("check constraint", err)
    -- (ino, fs_index): the key and the path -> inode index (migration 022)
    local defs = {}
    for _, r in ipairs(assert(t.conn:exec([[SELECT pg_get_indexdef(indexrelid) AS d FROM pg_index
                                             WHERE indrelid IN ($1::regclass, $2::regclass)]], i, p))) do
      defs[#defs + 1] = r.d:match("%((.*)%)")
    end
    table.sort(defs)
    assert.same({ "blobid) WHERE (blobid IS NOT NULL", "fs_index, dir_key, ino) WHERE (state = ANY (ARRAY['pending'::inode_state, 'failed_retryable'::inode_state])",
                  "fs_index, path", "ino, fs_index", "ino, fs_index" }, defs)
    assert.equal(1, #assert(t.conn:exec("SELECT 1 FROM pg_indexes WHERE tablename = $1 AND indexname = $2", p, p .. "_fk_idx")))
  end)

  it("keeps two filesystems with the same inode numbers apart", function()
    -- one tree seen as two filesystems: every inode number occurs in both
    local d = helper.tmpdir("fs1")
    helper.write(d .. "/x", "one")
    helper.sh { "ln", d .. "/x", d .. "/y" }
    local h = medium(d)
    local s = assert(enumerate.load(t.conn, h, { { fs_index = 1, root = d }, { fs_index = 2, root = d } }))
    assert.equal(4, s.inodes)                  -- root and x, twice; y is x's hardlink
    local r = rows(h, "SELECT fs_index, count(*) AS n FROM INODE GROUP BY 1 ORDER BY 1")
    assert.equal(2, #r)
    assert.equal(1, r[1].fs_index); assert.equal(2, r[2].fs_index)
    assert.equal(2, r[1].n); assert.equal(2, r[2].n)
    local same = rows(h, [[SELECT count(*) AS n FROM INODE a JOIN INODE b
                            ON a.ino = b.ino AND a.fs_index = 1 AND b.fs_index = 2]])
    assert.equal(2, same[1].n)
    assert.equal(6, rows(h, "SELECT count(*) AS n FROM PATH")[1].n)
    -- the medium's partition is keyed by (fs_index, ino); its bound pins the medium
    local i = db.partition_names(h)
    local pk = assert(t.conn:exec([[SELECT a.attname FROM pg_index x JOIN pg_attribute a
                                    ON a.attrelid = x.indrelid AND a.attnum = ANY(x.indkey)
                                   WHERE x.indrelid = $1::regclass AND x.indisprimary ORDER BY a.attname]], i))
    local cols = {}
    for _, c in ipairs(pk) do cols[#cols + 1] = c.attname end
    assert.same({ "fs_index", "ino" }, cols)
    local ok, err = t.conn:exec("INSERT INTO " .. i .. " (medium_hash, fs_index, ino) VALUES ($1, 1, $2)",
                              h, rows(h, "SELECT min(ino) AS m FROM INODE WHERE fs_index = 1")[1].m)
    assert.is_nil(ok); assert.matches("duplicate key", err)
  end)

  it("marks ignored paths excluded, and inodes whose every path is excluded terminal", function()
    local dir = helper.tmpdir("ignore")
    helper.sh { "mkdir", "-p", dir .. "/.cache", dir .. "/keep" }
    helper.write(dir .. "/.cache/junk", "junk")
    helper.write(dir .. "/keep/file", "keep")
    helper.sh { "ln", dir .. "/keep/file", dir .. "/.cache/link-to-kept" }
    helper.write(dir .. "/.cache/twin1", "twin")
    helper.sh { "ln", dir .. "/.cache/twin1", dir .. "/.cache/twin2" }
    helper.sh { "mkdir", "-p", dir .. "/.cache/sole" }
    helper.write(dir .. "/.cache/sole/only", "only")
    -- hardlinks in one directory, the excluded name made first and last:
    -- whichever name the walk meets first, the file is to be copied
    helper.write(dir .. "/keep/a~", "a")
    helper.sh { "ln", dir .. "/keep/a~", dir .. "/keep/a" }
    helper.write(dir .. "/keep/b", "b")
    helper.sh { "ln", dir .. "/keep/b", dir .. "/keep/b~" }
    local h = medium(dir)
    local s = assert(enumerate.load(t.conn, h, { { fs_index = 0, root = dir } }, { ignore = { assert(require("ntt.core.util").regex("^\\.cache/")), "~$" } }))
    assert.equal(8, s.excluded)   -- junk, link-to-kept, twin1, twin2, sole, sole/only, a~, b~
    local by = {}
    for _, r in ipairs(rows(h, "SELECT p.path, p.exclude_reason, i.state::text AS state FROM PATH p JOIN INODE i USING (fs_index, ino)")) do
      by[r.path] = r
    end
    assert.equal("ignore:^\\.cache/", by[".cache/junk"].exclude_reason)
    assert.equal("excluded", by[".cache/junk"].state)
    assert.equal("pending", by["keep/file"].state)        -- one of its paths is kept
    assert.equal("pending", by["keep/a~"].state)
    assert.equal("pending", by["keep/b"].state)
    assert.equal("excluded", by[".cache/twin1"].state)   -- hardlinked, every path excluded
    assert.equal(3, s.excluded_inodes)                   -- junk, twin1/twin2, and sole/only
    local inode_states = rows(h, "SELECT state::text AS state, count(*) AS n FROM INODE WHERE fs_type = 'f' GROUP BY 1")
    local n_by = {}
    for _, r in ipairs(inode_states) do n_by[r.state] = r.n end
    assert.same({ excluded = 3, pending = 3 }, n_by)
    assert.has_error(function()
      enumerate.load(t.conn, medium(dir), { { fs_index = 0, root = dir } }, { ignore = { "(" } })
    end)
  end)

  it("loads the same rows on one connection as on two", function()
    local dir = helper.tmpdir("onetwo")
    for d = 1, 30 do
      helper.sh { "mkdir", ("%s/d%02d"):format(dir, d) }
      for f = 1, 40 do helper.write(("%s/d%02d/f%02d"):format(dir, d, f), tostring(d * f)) end
    end
    helper.sh { "ln", dir .. "/d01/f01", dir .. "/d02/hard" }
    local function dump(h)
      local out = {}
      for _, r in ipairs(rows(h, [[SELECT p.path, p.parent_ino, p.exclude_reason, i.ino, i.state::text AS state,
                                          i.size, i.nlink, i.mtime_ns, i.dir_key
                                     FROM PATH p JOIN INODE i USING (fs_index, ino) ORDER BY p.path]])) do
        out[#out + 1] = table.concat({ r.path, r.parent_ino or "", r.exclude_reason or "", r.ino, r.state,
                                       r.size or "", r.nlink, r.mtime_ns,
                                       -- a hardlinked file's directory is where the walk saw it first
                                       r.nlink > 1 and "" or r.dir_key or "" }, "|")
      end
      return out
    end
    local h1, h2 = medium(dir), medium(dir)
    local s1 = assert(enumerate.load(t.conn, h1, { { fs_index = 0, root = dir } }, { ignore = { "^d03/" } }))
    local s2 = assert(enumerate.load(t.conn, h2, { { fs_index = 0, root = dir } },
                                     { ignore = { "^d03/" }, parallel = false }))
    assert.equal(30 * 40 + 30 + 1 + 1, s1.entries)
    assert.equal(s1.entries, s2.entries)
    assert.equal(s1.excluded_inodes, s2.excluded_inodes)
    local a, b = dump(h1), dump(h2)
    assert.equal(s1.entries, #a)
    assert.same(a, b)
  end)

  it("refuses a second load of a medium while one runs", function()
    local dir = helper.tmpdir("busy")
    helper.write(dir .. "/a", "a")
    local h = medium(dir)
    -- the lock a running load holds, taken by another session
    local other = assert(pg.connect(url))
    finally(function() other:close() end)
    assert(other:exec("SELECT pg_advisory_lock(hashtextextended($1, 0))", "ntt load " .. h))
    local s, err, code = enumerate.load(t.conn, h, { { fs_index = 0, root = dir } })
    assert.is_nil(s)
    assert.equal("EBUSY", code)
    assert.matches("being loaded by another process", err)
    assert(other:exec("SELECT pg_advisory_unlock(hashtextextended($1, 0))", "ntt load " .. h))
    assert(enumerate.load(t.conn, h, { { fs_index = 0, root = dir } }))
  end)

  it("reports a failing COPY with its SQLSTATE and leaves both connections usable", function()
    local load = require "ntt.core.load"
    local dir = helper.tmpdir("copyfail")
    -- enough rows for several COPY buffers: the server fails on the first
    -- and the rest still reach it (and are ignored) before the COPY ends
    helper.sh { "sh", "-c", 'cd "$1" && for i in $(seq 6000); do : > "f$i"; done', "-", dir }
    local h = medium(dir)
    local other = assert(pg.connect(url))
    finally(function() other:close() end)
    local it_, pt_ = "ti_" .. tag, "tp_" .. tag
    assert(t.conn:begin()); assert(other:begin())
    assert(t.conn:exec(("CREATE TABLE %s (LIKE inode INCLUDING DEFAULTS)"):format(it_)))
    -- the path table refuses every name longer than 3 bytes: fails mid-stream
    assert(other:exec(("CREATE TABLE %s (LIKE path INCLUDING DEFAULTS, CHECK (length(path) < 4))"):format(pt_)))
    local st, err, code, state = load.walk(t.conn, { root = dir, inode_table = it_, path_table = pt_, medium = h,
                                                   fs_index = 0, path_conn = other, freeze = true })
    assert.is_nil(st)
    assert.equal("EDB", code)
    assert.equal("23514", state)
    assert.matches("check constraint", err)
    assert(t.conn:rollback()); assert(other:rollback())
    assert.equal(1, assert(t.conn:exec("SELECT 1 AS x"))[1].x)
    assert.equal(1, assert(other:exec("SELECT 1 AS x"))[1].x)
  end)

  it("stops at ^C mid-load, leaves nothing behind, and loads again after", function()
    local dir = helper.tmpdir("intr")
    helper.sh { "sh", "-c", 'cd "$1" && for d in $(seq 40); do mkdir "d$d"; for i in $(seq 150); do : > "d$d/f$i"; done; done',
                "-", dir }
    local h = medium(dir)
    local script = helper.tmpdir("intrscript") .. "/s.lua"
    helper.write(script, [=[
      local util = require "ntt.core.util"
      local pg = require "ntt.core.pg"
      local db = require "ntt.db"
      local enumerate = require "ntt.enumerate"
      util.raise_on_interrupt(false)
      local conn = assert(pg.connect(arg[1]))
      local h, root = arg[2], arg[3]
      local sent = false
      local function progress()
        if sent then return end
        sent = true
        require("ntt.core.proc").run { argv = { "kill", "-INT", tostring(util.pid()) } }
        while not util.interrupted() do util.sleep(0.01) end
      end
      local s, err, code = enumerate.load(conn, h, { { fs_index = 0, root = root } }, { threads = 1, progress = progress })
      local i, p = db.partition_names(h)
      local si, sp = i:gsub("_p_", "_s_"), p:gsub("_p_", "_s_")
      local left = assert(conn:exec("SELECT count(*) AS n FROM pg_class WHERE relname IN ($1, $2, $3, $4)", i, p, si, sp))
      local m = assert(conn:exec("SELECT enum_done IS NULL AS open FROM medium WHERE medium_hash = $1", h))
      print(tostring(s), err, code, left[1].n, tostring(m[1].open))
      util.clear_interrupt()
      s = assert(enumerate.load(conn, h, { { fs_index = 0, root = root } }))
      print(s.entries)
    ]=])
    local r = assert(proc.run { argv = { helper.ntt, script, url, h, dir }, timeout = 120 })
    assert.equal(0, r.code, r.stderr)
    assert.equal("nil\tinterrupted\tEINTR\t0\ttrue\n" .. (40 * 150 + 40 + 1) .. "\n", r.stdout)
  end)

  it("reports a directory that blocks forever as stalled, and ntt run exits", function()
    if not helper.is_root() then pending("needs root to mount FUSE") return end
    local pc = proc.run { argv = { "pkg-config", "--cflags", "--libs", "fuse3" } }
    if not pc or pc.code ~= 0 then pending("libfuse3-dev is not installed") return end
    local dir = helper.tmpdir("stall")
    local argv = { "cc", "-O1", "-o", dir .. "/walkfs", "spec/fixtures/walkfs.c" }
    for w in pc.stdout:gmatch("%S+") do argv[#argv + 1] = w end
    helper.sh(argv)
    local mnt = dir .. "/mnt"
    helper.sh { "mkdir", mnt }
    local fsp = assert(proc.spawn { argv = { dir .. "/walkfs", "-f", mnt }, env = { WALKFS_HANG = "3600" },
                                    stdout = "null", stderr = "null" })
    finally(function()
      fsp:kill(9); fsp:wait(10)
      proc.run { argv = { "umount", "-l", mnt }, timeout = 30 }
    end)
    local t0 = util.monotonic()
    repeat
      local found = false
      for l in io.lines("/proc/self/mounts") do if l:find(" " .. mnt .. " ", 1, true) then found = true end end
      if found then break end
      util.sleep(0.05)
    until util.monotonic() - t0 > 10
    local pol = dir .. "/p.lua"
    helper.write(pol, 'local ntt = require "ntt"\nreturn ntt.policy.extend("default", { enumerate = { stall_timeout = 2 }, progress = { bar = "never", interval = 0.5 } })\n')
    -- The walk's stuck thread stays in the kernel until the FUSE daemon
    -- answers, so the process can only be reaped after it is gone: watch
    -- the report arrive in time, then let the daemon go and see ntt exit.
    local errf = dir .. "/stderr"
    t0 = util.monotonic()
    local run = assert(proc.spawn { argv = { helper.ntt, "run", pol, mnt }, env = { NTT_HOME = dir .. "/home" },
                                    stdout = "null", stderr = errf })
    local text = ""
    repeat
      util.sleep(0.1)
      local f = io.open(errf, "r")
      if f then text = f:read("a"); f:close() end
    until text:find("stalled", 1, true) or util.monotonic() - t0 > 30
    local took = util.monotonic() - t0
    assert.matches("stalled in 'hang'", text)
    assert.is_true(took < 15, "stall reported after " .. took .. " s")
    -- while the walk waits, its progress line still comes (it counts entries)
    local _, lines = text:gsub("enumerate [^\n]- %d+ entries, ", "")
    assert.is_true(lines >= 2, text)
    local h = assert(json.decode(assert(proc.run { argv = { helper.ntt, "identify", "--json", mnt } }).stdout:match("[^\n]+"))).hash
    fsp:kill(9); fsp:wait(10)
    local kind, code = run:wait(30)
    assert.equal("exit", kind)
    assert.equal(2, code)
    local pr = json.decode(assert(t.conn:exec("SELECT problems::text AS p FROM medium WHERE medium_hash = $1", h))[1].p)
    assert.truthy(pr.enum_stalled, h .. ": " .. json.encode(pr))
    assert.equal("hang", pr.enum_stalled.path)
    local m = assert(t.conn:exec("SELECT enum_done FROM medium WHERE medium_hash = $1", h))[1]
    assert.is_nil(m.enum_done)
  end)
end)
