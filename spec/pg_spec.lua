-- spec/pg_spec.lua: ntt.core.pg against the suite's real PostgreSQL.
local helper = require "spec.support.helper"
local pg = require "ntt.core.pg"
local proc = require "ntt.core.proc"

local url, why = helper.db_url()

-- Every byte 0..255, and the names the design says must round-trip.
local ALL = {}
for i = 0, 255 do ALL[#ALL + 1] = string.char(i) end
ALL = table.concat(ALL)
local NAMES = { "new\nline", "cr\r", "\rlead", "sep\28x", "back\\nslash", "bad\255\254utf8",
                "tab\there", "quote'\"", "\\.", "ends with CR\r", "nul\0inside", ALL }

describe("ntt.core.pg", function()
  local conn
  before_each(function()
    if not url then return end
    conn = assert(pg.connect(url))
  end)
  after_each(function()
    if conn then conn:close() end
    conn = nil
  end)

  local function need_db()
    if not url then pending(why); return false end
    return true
  end

  it("connects and reports the server", function()
    if not need_db() then return end
    assert.is_true(conn:server_version() >= 100000)
    local st, tx = conn:status()
    assert.equal("ok", st)
    assert.equal("idle", tx)
    assert.equal(url, conn:url())
    assert.matches("^ntt.PgConn %(", tostring(conn))
  end)

  it("fails to connect with nil, message, code", function()
    local dir = helper.tmpdir("pgnone")
    local c, msg, code = pg.connect("host=" .. dir .. " dbname=x connect_timeout=2")
    assert.is_nil(c)
    assert.matches("^connect: ", msg)
    assert.equal("ENOENT", code)
    c, msg, code = pg.connect("host=127.0.0.1 port=1 dbname=x connect_timeout=2")
    assert.is_nil(c)
    assert.equal("ECONNREFUSED", code)
  end)

  it("sends parameters and converts results by type", function()
    if not need_db() then return end
    local r = assert(conn:exec([[SELECT $1::int AS i, $2::bigint AS big, $3::text AS t, $4::bool AS yes,
        $5::bool AS no, $6::float8 AS f, $7::text AS null_t, 2.5::numeric AS num, 7::smallint AS s,
        '{"a": [1]}'::jsonb AS j, '2024-01-02 03:04:05+00'::timestamptz AS ts]],
      42, math.maxinteger, "héllo", true, false, 0.25, nil))
    assert.equal(1, #r)
    assert.equal(1, r.n)
    local row = r[1]
    assert.equal(42, row.i); assert.is_true(math.type(row.i) == "integer")
    assert.equal(math.maxinteger, row.big)
    assert.equal("héllo", row.t)
    assert.is_true(row.yes); assert.is_false(row.no)
    assert.equal(0.25, row.f)
    assert.is_nil(row.null_t)
    assert.equal(2.5, row.num)
    assert.equal(7, row.s)
    assert.equal('{"a": [1]}', row.j)
    assert.equal("string", type(row.ts))
    assert.same({ "i", "big", "t", "yes", "no", "f", "null_t", "num", "s", "j", "ts" }, r.columns)
  end)

  it("round-trips every byte through a bytea parameter", function()
    if not need_db() then return end
    local r = assert(conn:exec("SELECT $1::bytea AS b, length($1::bytea) AS n", pg.bytea(ALL)))
    assert.equal(256, r[1].n)
    assert.equal(ALL, r[1].b)
    r = assert(conn:exec("SELECT '\\x00ff0a'::bytea AS b, ''::bytea AS e"))
    assert.equal("\0\255\n", r[1].b)
    assert.equal("", r[1].e)
  end)

  it("takes any bytes but NUL as text, and gives them back exactly", function()
    if not need_db() then return end
    local t = assert(conn:exec("CREATE TEMP TABLE names (n text)"))
    assert.truthy(t)
    local MARK = "\xef\xbf\xbf"
    local cases = {
      "/media/M\xfcller.img",                  -- Latin-1, not UTF-8
      "a\\b\xff\\xff",                     -- backslashes next to a stray byte
      "\xed\xa0\x80 surrogate", "\xf4\x90\x80\x80 above", "\xc0\xaf overlong", "trunc \xe2\x82",
      MARK .. "x",                            -- valid, but begins with the mark
      "/media/M\xc3\xbcller.img", "plain",     -- valid UTF-8: sent as it is
    }
    for i = 1, 255 do if i ~= 0 then cases[#cases + 1] = "byte " .. string.char(i) end end
    for _, v in ipairs(cases) do
      assert(conn:exec("INSERT INTO names VALUES ($1)", v))
      local r = assert(conn:exec("SELECT n, n = $1 AS same FROM names WHERE n = $1", v))
      assert.equal(1, #r, ("%q"):format(v))
      assert.equal(v, r[1].n)
      assert.is_true(r[1].same)
    end
    -- valid UTF-8 is stored as it is; the rest under the mark, readable
    local r = assert(conn:exec("SELECT n FROM names WHERE n LIKE '%plain' OR n LIKE '%M_ller%' ORDER BY n"))
    assert.same({ "/media/M\xc3\xbcller.img", "plain" }, { r[1].n, r[2].n })   -- the Latin-1 one holds \xfc
    r = assert(conn:exec([[SELECT convert_to(n, 'UTF8') AS b FROM names WHERE n LIKE '%M%ller%' AND n NOT LIKE '%' || chr(252) || '%']]))
    assert.equal(MARK .. "/media/M\\xfcller.img", r[1].b)
    r = assert(conn:exec("SELECT octet_length(n) AS n FROM names WHERE n = $1", "plain"))
    assert.equal(5, r[1].n)
    assert(conn:exec("DROP TABLE names"))
  end)

  it("refuses a text parameter holding NUL and unknown types", function()
    if not need_db() then return end
    assert.has_error(function() conn:exec("SELECT $1::text", "a\0b") end)
    assert.has_error(function() conn:exec("SELECT $1::text", {}) end)
    assert.equal(1, conn:exec("SELECT 1 AS x")[1].x)   -- still usable
  end)

  it("reports rows affected", function()
    if not need_db() then return end
    assert(conn:exec("CREATE TEMP TABLE t (id int PRIMARY KEY, v text)"))
    local r = assert(conn:exec("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')"))
    assert.equal(3, r.n)
    assert.equal(0, #r)
    r = assert(conn:exec("UPDATE t SET v = 'z' WHERE id >= $1", 2))
    assert.equal(2, r.n)
    r = assert(conn:exec("SELECT * FROM t WHERE id > 100"))
    assert.equal(0, #r); assert.equal(0, r.n)
  end)

  it("returns SQL errors as nil, message, EDB, SQLSTATE", function()
    if not need_db() then return end
    assert(conn:exec("CREATE TEMP TABLE u (id int PRIMARY KEY)"))
    assert(conn:exec("INSERT INTO u VALUES (1)"))
    local r, msg, code, state = conn:exec("INSERT INTO u VALUES ($1)", 1)
    assert.is_nil(r)
    assert.equal("EDB", code)
    assert.equal("23505", state)
    assert.matches('duplicate key value violates unique constraint "u_pkey"', msg, 1, true)
    assert.matches("Key (id)=(1) already exists", msg, 1, true)
    r, msg, code, state = conn:exec("SELEC 1")
    assert.is_nil(r)
    assert.equal("EDB", code)
    assert.equal("42601", state)
    assert.matches("syntax error", msg)
    r, msg, code, state = conn:exec("SELECT 1/0")
    assert.equal("22012", state)
    assert.equal("idle", select(2, conn:status()))
  end)

  it("runs multi-statement scripts", function()
    if not need_db() then return end
    local r = assert(conn:exec_script("CREATE TEMP TABLE s (a int); INSERT INTO s VALUES (1), (2); SELECT sum(a) AS t FROM s"))
    assert.equal(3, r[1].t)
    local _, _, _, state = conn:exec_script("SELECT 1; SELECT nope")
    assert.equal("42703", state)
  end)

  it("sends a script and waits for it later, while another connection works", function()
    if not need_db() then return end
    local other = assert(pg.connect(url))
    local util = require "ntt.core.util"
    assert(conn:send("SELECT pg_sleep(0.3); SELECT 42 AS answer"))
    assert.has_error(function() conn:exec("SELECT 1") end, "pg: the statement sent before has not been waited for")
    assert.has_error(function() conn:send("SELECT 1") end)
    local t0 = util.monotonic()
    assert.equal(7, assert(other:exec("SELECT 7 AS n"))[1].n)
    assert.is_true(util.monotonic() - t0 < 0.25, "send did not return at once")
    local r = assert(conn:wait())
    assert.is_true(util.monotonic() - t0 >= 0.25, "wait returned before the statement ended")
    assert.equal(42, r[1].answer)
    assert.has_error(function() conn:wait() end, "pg: wait: nothing was sent")
    assert(conn:send("SELECT nope"))
    local none, msg, _, state = conn:wait()
    assert.is_nil(none)
    assert.matches("nope", msg)
    assert.equal("42703", state)
    assert.equal(1, assert(conn:exec("SELECT 1 AS one"))[1].one)    -- usable again
    assert(conn:send("SELECT 1"))
    conn:close()                                                      -- closes with a statement in flight
    other:close()
  end)

  it("commits and rolls back transactions", function()
    if not need_db() then return end
    assert(conn:exec("CREATE TEMP TABLE x (a int)"))
    assert.is_true(conn:begin())
    assert.equal("intrans", select(2, conn:status()))
    assert(conn:exec("INSERT INTO x VALUES (1)"))
    assert.is_true(conn:rollback())
    assert.equal(0, #conn:exec("SELECT * FROM x"))
    assert.is_true(conn:begin())
    assert(conn:exec("INSERT INTO x VALUES (2)"))
    assert.is_true(conn:commit())
    assert.equal(2, conn:exec("SELECT a FROM x")[1].a)
    -- an error inside a transaction: the rest fails until rollback
    assert.is_true(conn:begin())
    assert.is_nil(conn:exec("SELECT nope"))
    assert.equal("inerror", select(2, conn:status()))
    local _, _, code, state = conn:exec("SELECT 1")
    assert.equal("EDB", code); assert.equal("25P02", state)
    assert.is_true(conn:rollback())
    -- COMMIT of a failed transaction is reported, not taken for success
    assert.is_true(conn:begin())
    assert(conn:exec("INSERT INTO x VALUES (3)"))
    assert.is_nil(conn:exec("SELECT nope"))
    local ok, msg, code2, st = conn:commit()
    assert.is_nil(ok); assert.equal("EDB", code2); assert.equal("25P02", st); assert.matches("rolled back", msg)
    assert.equal("idle", select(2, conn:status()))
    assert.equal(1, #conn:exec("SELECT * FROM x"))
  end)

  it("tx() rolls back on error and commits on success", function()
    if not need_db() then return end
    local db = require "ntt.db"
    assert(conn:exec("CREATE TEMP TABLE y (a int)"))
    assert.has_error(function()
      db.tx(conn, function(c) assert(c:exec("INSERT INTO y VALUES (1)")); error("boom") end)
    end, "boom")
    assert.equal(0, #conn:exec("SELECT * FROM y"))
    local r, msg = db.tx(conn, function(c) assert(c:exec("INSERT INTO y VALUES (2)")); return nil, "no", "EX" end)
    assert.is_nil(r); assert.equal("no", msg)
    assert.equal(0, #conn:exec("SELECT * FROM y"))
    assert.equal("ok", db.tx(conn, function(c) assert(c:exec("INSERT INTO y VALUES (3)")); return "ok" end))
    assert.equal(3, conn:exec("SELECT a FROM y")[1].a)
    -- fn ignored a failed statement: the commit reports the rollback
    local ok, _, code, st = db.tx(conn, function(c) c:exec("INSERT INTO y VALUES (4)"); c:exec("SELECT nope"); return "ok" end)
    assert.is_nil(ok); assert.equal("EDB", code); assert.equal("25P02", st)
    assert.equal(1, #conn:exec("SELECT * FROM y"))
  end)

  it("collects notices and delivers them to a callback after the call", function()
    if not need_db() then return end
    assert(conn:exec("DO $$ BEGIN RAISE NOTICE 'first %', 1; RAISE WARNING 'second'; END $$"))
    local n = conn:notices()
    assert.equal(2, #n)
    assert.same({ severity = "NOTICE", message = "first 1", sqlstate = "00000" }, n[1])
    assert.equal("WARNING", n[2].severity)
    assert.equal("second", n[2].message)
    assert.equal(0, #conn:notices())       -- drained
    local got = {}
    conn:on_notice(function(msg, sev) got[#got + 1] = sev .. ":" .. msg
      -- calling back into the connection from the callback is allowed
      assert(conn:exec("SELECT 1 AS one"))
    end)
    assert(conn:exec("DO $$ BEGIN RAISE NOTICE 'cb'; END $$"))
    assert.same({ "NOTICE:cb" }, got)
    conn:on_notice(nil)
    assert(conn:exec("DO $$ BEGIN RAISE NOTICE 'queued'; END $$"))
    assert.equal("queued", conn:notices()[1].message)
  end)

  it("raises a callback's error to the caller of exec; the connection stays usable", function()
    if not need_db() then return end
    conn:notices()
    conn:on_notice(function(msg) error("callback saw " .. msg) end)
    local ok, err = pcall(conn.exec, conn, "DO $$ BEGIN RAISE NOTICE 'boom'; END $$")
    conn:on_notice(nil)
    assert.is_false(ok)
    assert.matches("callback saw boom", tostring(err))
    assert.equal(1, assert(conn:exec("SELECT 1 AS one"))[1].one)
  end)

  it("streams COPY FROM STDIN in text format", function()
    if not need_db() then return end
    assert(conn:exec("CREATE TEMP TABLE c (id int, name text)"))
    local cp = assert(conn:copy_in("COPY c (id, name) FROM STDIN"))
    assert.matches("active", tostring(cp))
    for i = 1, 1000 do assert(cp:put(("%d\tname %d\n"):format(i, i))) end
    assert.equal(1000, cp:finish())
    assert.matches("closed", tostring(cp))
    assert.has_error(function() cp:put("x") end)
    assert.equal(500500, conn:exec("SELECT sum(id) AS s FROM c")[1].s)
    -- bad data: the COPY fails with its SQLSTATE and the connection survives
    cp = assert(conn:copy_in("COPY c (id, name) FROM STDIN"))
    assert(cp:put("notanumber\tx\n"))
    local n, msg, code, state = cp:finish()
    assert.is_nil(n); assert.equal("EDB", code); assert.equal("22P02", state); assert.matches("integer", msg)
    -- abort discards everything
    cp = assert(conn:copy_in("COPY c (id, name) FROM STDIN"))
    assert(cp:put("5000\tx\n"))
    assert.is_true(cp:abort("changed my mind"))
    assert.equal(1000, conn:exec("SELECT count(*) AS n FROM c")[1].n)
    -- not a COPY
    local _, _, _, st = conn:copy_in("SELECT 1")
    assert.equal("42601", st)
    assert.equal(1, conn:exec("SELECT 1 AS x")[1].x)
  end)

  it("round-trips awkward names through text COPY with bytea escapes", function()
    if not need_db() then return end
    assert(conn:exec("CREATE TEMP TABLE p (id int, path bytea)"))
    local cp = assert(conn:copy_in("COPY p (id, path) FROM STDIN"))
    for i, name in ipairs(NAMES) do
      -- text COPY: bytea in hex form, so no byte of the name is interpreted
      local hex = name:gsub(".", function(ch) return ("%02x"):format(ch:byte()) end)
      assert(cp:put(("%d\t\\\\x%s\n"):format(i, hex)))
    end
    assert.equal(#NAMES, cp:finish())
    for _, row in ipairs(assert(conn:exec("SELECT id, path FROM p ORDER BY id"))) do
      assert.equal(NAMES[row.id], row.path)
    end
  end)

  it("encodes binary COPY in C (integer, float, bool, text, bytea, NULL)", function()
    if not need_db() then return end
    assert(conn:exec([[CREATE TEMP TABLE b (id bigint, path bytea, label text, f float8, ok bool, n bigint)]]))
    local rows = {}
    for i, name in ipairs(NAMES) do
      rows[i] = { n = 6, i, pg.bytea(name), "label " .. i, i / 4, i % 2 == 0, nil }
    end
    rows[#rows + 1] = { n = 6, -math.maxinteger, pg.bytea(""), nil, -1.5, false, math.mininteger }
    assert.equal(#rows, conn:copy_rows("COPY b FROM STDIN (FORMAT binary)", rows))
    local got = assert(conn:exec("SELECT * FROM b ORDER BY id"))
    assert.equal(#rows, #got)
    assert.equal(-math.maxinteger, got[1].id)
    assert.equal("", got[1].path)
    assert.is_nil(got[1].label)
    assert.equal(math.mininteger, got[1].n)
    for k = 2, #got do
      local row, i = got[k], got[k].id
      assert.equal(NAMES[i], row.path)
      assert.equal("label " .. i, row.label)
      assert.equal(i / 4, row.f)
      assert.equal(i % 2 == 0, row.ok)
      assert.is_nil(row.n)
    end
    -- a large batch crosses the flush threshold
    rows = {}
    for i = 1, 20000 do rows[i] = { i, pg.bytea(("x"):rep(40) .. i), "t", 0.5, true, i } end
    assert.equal(20000, conn:copy_rows("COPY b FROM STDIN (FORMAT binary)", rows))
    assert.equal(20000 + #NAMES + 1, conn:exec("SELECT count(*) AS n FROM b")[1].n)
    -- a type mismatch is reported with its SQLSTATE; nothing is half-copied
    local n, msg, code, state = conn:copy_rows("COPY b (id) FROM STDIN (FORMAT binary)", { { "abc" } })
    assert.is_nil(n); assert.equal("EDB", code); assert.matches("^%w%w%w%w%w$", state); assert.matches("data", msg)
    assert.has_error(function() conn:copy_rows("COPY b (id) FROM STDIN (FORMAT binary)", { { {} } }) end)
    assert.equal(1, conn:exec("SELECT 1 AS x")[1].x)
    assert.equal(0, conn:copy_rows("COPY b FROM STDIN (FORMAT binary)", {}))
  end)

  it("encodes binary COPY with explicit column types", function()
    if not need_db() then return end
    assert(conn:exec("CREATE TEMP TABLE ty (a int4, b int2, c int8, d float8, e bool, f text, g bytea)"))
    local types = { "int4", "int2", "int8", "float8", "bool", "raw", "raw" }
    local rows = { { 2147483647, -32768, 1, 3, true, "x", pg.bytea("\0") },
                   { -2147483648, 32767, nil, 0.5, false, "", "" } }
    assert.equal(2, conn:copy_rows("COPY ty FROM STDIN (FORMAT binary)", rows, types))
    local r = assert(conn:exec("SELECT * FROM ty ORDER BY a"))
    assert.same({ a = -2147483648, b = 32767, d = 0.5, e = false, f = "", g = "" }, r[1])
    assert.same({ a = 2147483647, b = -32768, c = 1, d = 3.0, e = true, f = "x", g = "\0" }, r[2])
    assert.has_error(function() conn:copy_rows("COPY ty FROM STDIN (FORMAT binary)", { { 2147483648 } }, { "int4" }) end,
      "pg: copy_rows: row 1 column 1 integer out of range: a number")
    assert.has_error(function() conn:copy_rows("COPY ty FROM STDIN (FORMAT binary)", { { 1.5 } }, { "int4" }) end)
    assert.has_error(function() conn:copy_rows("COPY ty FROM STDIN (FORMAT binary)", { { 1 } }, { "int3" }) end)
    assert.equal(2, conn:exec("SELECT count(*) AS n FROM ty")[1].n)
  end)

  it("escapes identifiers and literals", function()
    if not need_db() then return end
    assert.equal('"a""b"', conn:escape_identifier('a"b'))
    assert.equal("'it''s'", conn:escape_literal("it's"))
    local r = assert(conn:exec("SELECT " .. conn:escape_literal("x'y\\z") .. " AS v"))
    assert.equal("x'y\\z", r[1].v)
  end)

  it("closes idempotently; use after close raises", function()
    if not need_db() then return end
    local c = assert(pg.connect(url))
    c:close()
    c:close()
    assert.equal("closed", c:status())
    assert.equal("ntt.PgConn (closed)", tostring(c))
    assert.has_error(function() c:exec("SELECT 1") end, "pg: connection is closed")
    assert.has_error(function() c:begin() end)
    do
      local c2 <close> = assert(pg.connect(url))
      assert(c2:exec("SELECT 1"))
    end
    -- a COPY outliving its connection's close is inert
    local c3 = assert(pg.connect(url))
    assert(c3:exec("CREATE TEMP TABLE z (a int)"))
    local cp = assert(c3:copy_in("COPY z FROM STDIN"))
    c3:close()
    assert.has_error(function() cp:put("1\n") end)
    cp:close()
  end)

  it("cancels a running statement a grace period after SIGINT", function()
    if not need_db() then return end
    local util = require "ntt.core.util"
    local dir = helper.tmpdir("pgint")
    local out, err = dir .. "/out", dir .. "/err"
    local p = assert(proc.spawn { argv = { helper.ntt, "-e", [[
      local util = require "ntt.core.util"
      util.raise_on_interrupt(false)
      local c = assert(require("ntt.core.pg").connect(os.getenv("NTT_DB_URL")))
      io.stdout:write("ready\n"); io.stdout:flush()
      local t = util.monotonic()
      local r, msg, code = c:exec("SELECT pg_sleep(60)")
      io.stderr:write(("%s %s %s %.1f\n"):format(tostring(r), tostring(msg), tostring(code), util.monotonic() - t))
      print(c:exec("SELECT 7 AS x")[1].x)  -- the connection stays usable
    ]] }, stdout = out, stderr = err })
    -- wait until the statement is running, then interrupt
    local running = false
    for _ = 1, 100 do
      local r = conn:exec("SELECT count(*) AS n FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'")
      if r[1].n > 0 then running = true; break end
      util.sleep(0.05)
    end
    assert.is_true(running)
    local t = util.monotonic()
    assert(p:kill(2))
    local how, code = p:wait(30)
    assert.equal("exit", how); assert.equal(130, code)   -- interrupted, cleanly
    local took = util.monotonic() - t
    assert.is_true(took >= 1.5 and took < 10, "took " .. took)
    assert.matches("^nil interrupted EINTR", helper.read(err))
    assert.equal("ready\n7\n", helper.read(out))
  end)

  it("reports a lost connection as 08006", function()
    if not need_db() then return end
    local victim = assert(pg.connect(url))
    local pid = victim:exec("SELECT pg_backend_pid() AS p")[1].p
    assert(conn:exec("SELECT pg_terminate_backend($1)", pid))
    local r, _, code, state
    for _ = 1, 50 do   -- termination is asynchronous
      r, _, code, state = victim:exec("SELECT 1")
      if not r then break end
      require("ntt.core.util").sleep(0.05)
    end
    assert.is_nil(r)
    assert.equal("EDB", code)
    assert.truthy(state == "08006" or state == "57P01")
    assert.equal("bad", victim:status())
    victim:close()
  end)
end)
