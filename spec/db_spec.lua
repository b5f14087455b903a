-- spec/db_spec.lua: migrations, schema checks and per-medium partitions.
--
-- Each test works in a schema of its own (search_path set through the
-- connection's options), so it starts from an empty database.
local helper = require "spec.support.helper"
local pg = require "ntt.core.pg"
local proc = require "ntt.core.proc"
local db = require "ntt.db"

local url, why = helper.db_url()
local serial = 0

local function schema_url(schema)
  local opt = "-csearch_path=" .. schema
  if url:match("^postgres[%w]*://") then
    return url .. (url:find("?", 1, true) and "&" or "?") .. "options=" .. opt:gsub("=", "%%3D")
  end
  return url .. " options='" .. opt .. "'"
end

-- A fresh schema and a connection whose search_path is it.
local function fresh()
  serial = serial + 1
  local schema = ("dbspec_%d_%d"):format(require("ntt.core.util").pid(), serial)
  local admin = assert(pg.connect(url))
  assert(admin:exec("DROP SCHEMA IF EXISTS " .. schema .. " CASCADE"))
  assert(admin:exec("CREATE SCHEMA " .. schema))
  admin:close()
  local u = schema_url(schema)
  return assert(pg.connect(u)), schema, u
end

describe("ntt.db", function()
  local conn, schema
  before_each(function()
    if url then conn, schema = fresh() end
  end)
  after_each(function()
    if conn then
      conn:close()
      local admin = assert(pg.connect(url))
      admin:exec("DROP SCHEMA IF EXISTS " .. schema .. " CASCADE")
      admin:close()
    end
    conn = nil
  end)

  local function need_db()
    if not url then pending(why); return false end
    return true
  end

  it("lists the embedded migrations in order", function()
    local list = db.migrations()
    assert.is_true(#list >= 1)
    assert.equal(1, list[1].version)
    assert.equal("001_schema.sql", list[1].name)
    assert.equal(list[#list].version, db.required())
    for i = 2, #list do assert.is_true(list[i].version > list[i - 1].version) end
  end)

  it("migrates idempotently and records each migration", function()
    if not need_db() then return end
    assert.equal(0, db.version(conn))
    local v, applied = db.migrate(conn)
    assert.equal(db.required(), v)
    assert.equal(#db.migrations(), #applied)
    local v2, applied2 = db.migrate(conn)
    assert.equal(v, v2)
    assert.same({}, applied2)
    local rows = assert(conn:exec("SELECT version, name, applied_at FROM schema_migrations ORDER BY version"))
    assert.equal(#db.migrations(), #rows)
    assert.equal("001_schema.sql", rows[1].name)
    assert.is_string(rows[1].applied_at)
    assert.equal(v, db.check(conn))
    -- the tables of the data model are there, in this schema
    for _, t in ipairs { "medium", "filesystem", "inode", "path", "blob", "schema_migrations" } do
      assert.is_true(conn:exec("SELECT to_regclass($1) IS NOT NULL AS ok", schema .. "." .. t)[1].ok, t)
    end
  end)

  it("lets concurrent workers migrate at once", function()
    if not need_db() then return end
    local c0, s2, u = fresh()
    c0:close()
    finally(function()
      local admin = assert(pg.connect(url))
      admin:exec("DROP SCHEMA IF EXISTS " .. s2 .. " CASCADE")
      admin:close()
    end)
    local procs = {}
    for i = 1, 3 do
      procs[i] = assert(proc.spawn { argv = { helper.ntt, "-e",
        "local db = require 'ntt.db'; local c = assert(require('ntt.core.pg').connect(os.getenv('U'))); "
        .. "local v, e = db.migrate(c); if not v then io.stderr:write(e, '\\n'); os.exit(1) end" },
        env = { U = u }, stdout = "null" })
    end
    for i = 1, 3 do
      local how, code = procs[i]:wait(60)
      assert.equal("exit", how); assert.equal(0, code)
    end
    local c = assert(pg.connect(u))
    assert.equal(db.required(), db.check(c))
    assert.equal(#db.migrations(), c:exec("SELECT count(*) AS n FROM schema_migrations")[1].n)
    c:close()
  end)

  it("refuses an older and a newer schema with a clear message", function()
    if not need_db() then return end
    assert(db.migrate(conn))
    local last = db.required()
    local list = db.migrations()      -- the numbers may have gaps: the one before the last
    assert(conn:exec("DELETE FROM schema_migrations WHERE version = $1", last))
    local ok, msg, code = db.check(conn)
    assert.is_nil(ok)
    assert.equal("ESCHEMAOLD", code)
    assert.matches(("schema is version %d, this ntt requires %d"):format(list[#list - 1].version, last), msg, 1, true)
    assert.matches("ntt db migrate", msg, 1, true)
    assert(conn:exec("INSERT INTO schema_migrations (version, name) VALUES ($1, 'x')", last))
    assert(conn:exec("INSERT INTO schema_migrations (version, name) VALUES ($1, 'future')", last + 1))
    ok, msg, code = db.check(conn)
    assert.is_nil(ok)
    assert.equal("ESCHEMANEW", code)
    assert.matches("newer than this ntt", msg)
    ok, msg, code = db.migrate(conn)
    assert.is_nil(ok); assert.equal("ESCHEMANEW", code)
  end)

  it("refuses an empty database", function()
    if not need_db() then return end
    local ok, msg, code = db.check(conn)
    assert.is_nil(ok); assert.equal("ESCHEMAOLD", code); assert.matches("version 0", msg)
  end)

  it("enforces the data model's checks", function()
    if not need_db() then return end
    assert(db.migrate(conn))
    local _, _, _, st = conn:exec("INSERT INTO medium (medium_hash) VALUES ('ABCDEF0123456789')")
    assert.equal("23514", st)
    _, _, _, st = conn:exec("INSERT INTO medium (medium_hash) VALUES ('abc')")
    assert.equal("23514", st)
    _, _, _, st = conn:exec("INSERT INTO medium (medium_hash, kind) VALUES ('0123456789abcdef', 'floppy')")
    assert.equal("23514", st)
    assert(conn:exec("INSERT INTO medium (medium_hash, kind) VALUES ('0123456789abcdef', 'carved')"))
    _, _, _, st = conn:exec("INSERT INTO blob (blobid, size) VALUES ($1, 0)", ("A"):rep(64))
    assert.equal("23514", st)
    local h = "0123456789abcdef"
    assert(db.ensure_partitions(conn, h))
    -- copied without a blob id is refused; a missing blob is refused at commit
    _, _, _, st = conn:exec("INSERT INTO inode (medium_hash, fs_index, ino, state) VALUES ($1, 0, 1, 'copied')", h)
    assert.equal("23514", st)
    _, _, _, st = conn:exec("INSERT INTO inode (medium_hash, fs_index, ino, state) VALUES ($1, 0, 1, 'bogus')", h)
    assert.equal("22P02", st)
    _, _, _, st = conn:exec("INSERT INTO inode (medium_hash, fs_index, ino, blobid) VALUES ($1, 0, 1, $2)", h, ("b"):rep(64))
    assert.equal("23503", st)
    -- a path needs its inode (checked at commit), then round-trips as bytes
    _, _, _, st = conn:exec("INSERT INTO path (medium_hash, fs_index, path, ino) VALUES ($1, 0, $2, 99)", h, pg.bytea("x"))
    assert.equal("23503", st)
    assert(conn:exec("INSERT INTO inode (medium_hash, fs_index, ino) VALUES ($1, 0, 2), ($1, 1, 2)", h))
    _, _, _, st = conn:exec("INSERT INTO path (medium_hash, fs_index, path, ino) VALUES ($1, 1, $2, 2)", h, pg.bytea("a\0b"))
    assert.equal("23514", st)                          -- no NUL inside a name
    local name = "a\nb\r\28\\n\255"
    assert(conn:exec("INSERT INTO path (medium_hash, fs_index, path, ino) VALUES ($1, 1, $2, 2)", h, pg.bytea(name)))
    assert.equal(name, conn:exec("SELECT path FROM path WHERE medium_hash = $1", h)[1].path)
    local r = conn:exec("SELECT state, attempts, errors FROM inode WHERE ino = 2 AND fs_index = 0")[1]
    assert.same({ state = "pending", attempts = 0, errors = "[]" }, r)
    -- deleting an inode removes its paths (partition to partition)
    assert.equal(1, conn:exec("DELETE FROM inode WHERE medium_hash = $1 AND fs_index = 1", h).n)
    assert.equal(0, #conn:exec("SELECT 1 FROM path"))
    assert.equal("[2, 3]", conn:exec("SELECT ntt_push_bounded('[1]'::jsonb || '[2]', '3', 2) AS l")[1].l)
  end)

  it("creates partitions per medium named from the full hash", function()
    if not need_db() then return end
    assert(db.migrate(conn))
    local prefix = ("0123456789abcdef"):rep(2)          -- 32 shared characters
    local hashes = { prefix .. ("a"):rep(8), prefix .. ("b"):rep(8),   -- 40 chars: names hold the hash
                     prefix .. ("c"):rep(32), prefix .. ("d"):rep(32),   -- 64: md5 of the full hash
                     prefix }
    local names = {}
    for _, h in ipairs(hashes) do
      assert(conn:exec("INSERT INTO medium (medium_hash) VALUES ($1)", h))
      local i, p = assert(db.ensure_partitions(conn, h))
      assert.is_true(#i <= 63 and #p <= 63)
      assert.is_nil(names[i]); assert.is_nil(names[p])
      names[i], names[p] = true, true
      local i2, p2 = assert(db.ensure_partitions(conn, h))           -- idempotent
      assert.equal(i, i2); assert.equal(p, p2)
      if #h <= 55 then assert.equal("inode_p_" .. h, i); assert.equal("path_p_" .. h, p) end
      -- the partition holds exactly this medium, with its FK and claim index
      local bound = conn:exec("SELECT pg_get_expr(relpartbound, oid) AS b FROM pg_class WHERE oid = $1::regclass", p)[1].b
      assert.equal("FOR VALUES IN ('" .. h .. "')", bound)
      local fk = conn:exec([[SELECT confrelid::regclass::text AS target FROM pg_constraint
                              WHERE conrelid = $1::regclass AND contype = 'f']], p)
      assert.equal(1, #fk); assert.equal(i, fk[1].target)
      local idx = conn:exec([[SELECT indexdef FROM pg_indexes WHERE tablename = $1
                               AND indexdef LIKE '%dir_key%' AND indexdef LIKE '%WHERE%']], i)
      assert.equal(1, #idx)
      assert(conn:exec("INSERT INTO inode (medium_hash, fs_index, ino) VALUES ($1, 0, 1)", h))
      assert.equal(1, conn:exec("SELECT count(*) AS n FROM " .. i)[1].n)
    end
    local ok, _, code = db.ensure_partitions(conn, "NOT-A-HASH")
    assert.is_nil(ok); assert.equal("EINVAL", code)
    ok, _, code = db.ensure_partitions(conn, ("e"):rep(20))
    assert.is_nil(ok); assert.equal("ENOENT", code)
    assert.has_error(function() db.partition_names("x'; DROP TABLE medium; --") end)
  end)

  it("runs the seed's query-interface queries unchanged", function()
    if not need_db() then return end
    assert(db.migrate(conn))
    local function ev(ino, action, checks, retries)
      return ('{"ino": %d, "retry_count": %d, "checks": [%s], "action": "%s", "timestamp": "2025-10-01T00:00:0%dZ", '
        .. '"worker_id": "w1", "exception_type": "OSError", "exception_msg": "EIO"}')
        :format(ino, retries, checks, action, ino % 10)
    end
    assert(conn:exec("INSERT INTO medium (medium_hash, medium_human, problems) VALUES ($1, 'floppy A', $2::jsonb)",
      ("a"):rep(32), ('{"diagnostic_events": [%s, %s, %s], "beyond_eof_detected": true}'):format(
        ev(12, "skipped", '"detected_beyond_eof", "dmesg:beyond_eof"', 10),
        ev(7, "continuing", '"detected_io_error"', 3),
        ev(9, "skipped", '"dmesg:beyond_eof"', 10))))
    assert(conn:exec("INSERT INTO medium (medium_hash, medium_human, problems) VALUES ($1, 'zip B', $2::jsonb)",
      ("b"):rep(32), ('{"diagnostic_events": [%s]}'):format(ev(3, "remounted", '"mount_check:missing"', 1))))
    assert(conn:exec("INSERT INTO medium (medium_hash, medium_human) VALUES ($1, 'clean C')", ("c"):rep(32)))

    local q1 = [[
SELECT
    medium_hash,
    medium_human,
    jsonb_array_length(problems->'diagnostic_events') as event_count,
    problems->'diagnostic_events'
FROM medium
WHERE problems->'diagnostic_events' IS NOT NULL;]]
    local q2 = [[
SELECT
    event->>'action' as action,
    COUNT(*) as count
FROM medium,
     jsonb_array_elements(problems->'diagnostic_events') as event
GROUP BY 1
ORDER BY 2 DESC;]]
    local q3 = [[
SELECT
    medium_hash,
    medium_human,
    COUNT(*) as beyond_eof_count
FROM medium,
     jsonb_array_elements(problems->'diagnostic_events') as event
WHERE event->'checks' ? 'detected_beyond_eof'
   OR event->'checks' ? 'dmesg:beyond_eof'
GROUP BY 1, 2;]]
    local q4 = [[
SELECT
    medium_hash,
    event->>'ino' as ino,
    event->>'action' as action,
    event->>'retry_count' as retries,
    event->'checks' as checks,
    event->>'timestamp' as when
FROM medium,
     jsonb_array_elements(problems->'diagnostic_events') as event
WHERE event->>'action' = 'skipped'
ORDER BY medium_hash, (event->>'ino')::int;]]
    local r = assert(conn:exec(q1))
    assert.equal(2, #r)
    local counts = {}
    for _, row in ipairs(r) do counts[row.medium_human] = row.event_count end
    assert.same({ ["floppy A"] = 3, ["zip B"] = 1 }, counts)
    r = assert(conn:exec(q2))
    assert.same({ action = "skipped", count = 2 }, r[1])
    assert.equal(3, #r)
    r = assert(conn:exec(q3))
    assert.equal(1, #r)
    assert.same({ medium_hash = ("a"):rep(32), medium_human = "floppy A", beyond_eof_count = 2 }, r[1])
    r = assert(conn:exec(q4))
    assert.equal(2, #r)
    assert.equal("9", r[1].ino); assert.equal("12", r[2].ino)
    assert.equal("10", r[1].retries)
    assert.equal("2025-10-01T00:00:09Z", r[1]["when"])
    assert.equal('["dmesg:beyond_eof"]', r[1].checks)
  end)
end)
