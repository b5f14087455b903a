-- spec/live_spec.lua: ntt.core.ctl (the control socket) and ntt.live (the
-- console's protocol and helpers), in one process: the server is serviced
-- between the client's calls, as a run services it from its waits.
local helper = require "spec.support.helper"
local ctl = require "ntt.core.ctl"
local fs = require "ntt.core.fs"
local live = require "ntt.live"
local proc = require "ntt.core.proc"

-- One request through the socket: sent, serviced, answered.
local function ask(conn, id, chunk)
  assert(conn:send(id .. " " .. live.escape(chunk) .. "\n"))
  local buf = ""
  for _ = 1, 100 do
    live.service(0.05)
    buf = buf .. (conn:recv(0.05) or "")
    if buf:find("\0", 1, true) then break end
  end
  local rid, body = buf:match("^([^\n]*)\n(.*)%z$")
  assert.equal(tostring(id), rid)
  return body
end

describe("ntt.core.ctl", function()
  it("serves lines to clients, replies, and removes its socket when closed", function()
    local dir = helper.tmpdir("ctl")
    local path = dir .. "/c.sock"
    local s = assert(ctl.listen(path))
    assert.equal("600", helper.sh({ "stat", "-c", "%a", path }).stdout:match("%d+"))
    local _, _, code = ctl.listen(path)
    assert.equal("EADDRINUSE", code)
    local c = assert(ctl.connect(path))
    assert(c:send("one\ntw"))
    local got = {}
    for _ = 1, 20 do
      for _, r in ipairs(s:poll(0.05)) do got[#got + 1] = r end
      if #got > 0 then break end
    end
    assert.equal(1, #got)
    assert.equal("one", got[1].line)
    assert(c:send("o\n"))
    got = s:poll(1)
    assert.equal("two", got[1].line)
    assert(s:send(got[1].client, "answer"))
    assert.equal("answer", c:recv(1))
    assert.equal("", c:recv(0.05))             -- nothing more: a timeout, not an error
    assert.equal(1, s:clients())
    s:close()
    assert.is_nil(io.open(path))
    local data, _, ecode = c:recv(1)
    assert.is_nil(data)
    assert.equal("EPIPE", ecode)
    c:close()
    local none, _, ncode = ctl.connect(path)
    assert.is_nil(none)
    assert.equal("ENOENT", ncode)
  end)
end)

describe("ntt.live", function()
  local dir
  before_each(function() dir = helper.tmpdir("live") end)
  after_each(function() live.close() end)

  it("evaluates chunks in the process, with its helpers, and logs a policy override", function()
    -- a stale socket of a dead run is removed; a live one is not
    helper.sh { helper.ntt, "-e", ("require('ntt.core.ctl').listen(%q); os.exit(0)"):format(dir .. "/ctl-1.sock") }
    assert.is_truthy(fs.stat(dir .. "/ctl-1.sock"))
    local other = assert(ctl.listen(dir .. "/ctl-2.sock"))
    local logged = {}
    local log = { log = function(_, level, event, fields) logged[#logged + 1] = { level, event, fields } end }
    for _, l in ipairs { "info", "warn", "error", "debug" } do
      log[l] = function(self, event, fields, msg) return self:log(l, event, fields, msg) end
    end
    local policy = { retry = { max = 5 }, copy = { threads = 4 } }
    local path = assert(live.open { run_id = 77, log = log, policy = policy, dir = dir })
    assert.equal(dir .. "/ctl-77.sock", path)
    local c = assert(ctl.connect(path))
    assert.equal("42\n", ask(c, 1, "6*7"))
    assert.equal("hello\t1\n", ask(c, 2, "print('hello', 1)"))
    assert.matches("skip%(path or ino, reason%)", ask(c, 3, "help()"))
    assert.equal("{}\n", ask(c, 4, "reading()"))
    -- a chunk over several lines, a value kept between chunks
    assert.equal("", ask(c, 5, "x = 0\nfor i = 1, 3 do\n  x = x + i\nend"))
    assert.equal("6\n", ask(c, 6, "x"))
    assert.matches("^error: ", ask(c, 7, "nosuch()"))
    assert.matches("retry.max = 1 for the rest of the run %(was 5%)", ask(c, 8, "set('retry.max', 1)"))
    assert.equal(1, policy.retry.max)
    local ov
    for _, e in ipairs(logged) do if e[2] == "policy_override" then ov = e[3] end end
    assert.same({ key = "retry.max", value = 1, old = 5, run = 77 }, ov)
    assert.matches("^error: .*not a string", ask(c, 9, "set('retry.max', 'x')") .. "")
    -- a statement may not hold up the run
    local t0 = require("ntt.core.util").monotonic()
    assert.matches("^error: .*stopped after 5s", ask(c, 10, "while true do end"))
    assert.is_true(require("ntt.core.util").monotonic() - t0 < 8)
    c:close()
    -- the sockets: this one and the other are live
    local l = {}
    for _, s in ipairs(live.sockets(dir)) do l[s.run_id] = s.live end
    assert.is_true(l["77"]); assert.is_true(l["2"])
    live.close()
    assert.is_nil(io.open(path))
    assert.is_nil(fs.stat(dir .. "/ctl-1.sock"))
    other:close()
  end)

  it("retry(h, path) makes a failed file pending again; media() and medium(h) name the run's media", function()
    local url = helper.db_url()
    if not url then pending("no test database") return end
    local mediadb = require "spec.support.mediadb"
    local t = mediadb.open(url, "live", 0x7a000)
    t.connect()
    finally(t.close)
    local src = helper.tmpdir("livesrc")
    helper.write(src .. "/bad", "b")
    helper.write(src .. "/good", "g")
    local h = t.medium(src)
    assert(require("ntt.enumerate").load(t.conn, h, { { fs_index = 0, root = src } }))
    assert(t.conn:exec(([[UPDATE %s SET state = 'failed_permanent', reason = 'EIO'
      WHERE medium_hash = $1 AND fs_type = 'f']]):format(require("ntt.copier.rows").open(t.conn, h).it), h))
    assert(live.open { run_id = 78, policy = {}, db = t.conn, dir = dir })
    live.stage({ target = src, medium = { hash = h, human = "src" } }, "copy")
    local c = assert(ctl.connect(live.path()))
    assert.matches('stage = "copy"', ask(c, 1, "media()"))
    assert.matches('name = "src"', ask(c, 2, "medium('" .. h:sub(1, 12) .. "')"))
    assert.matches("no medium nosuch", ask(c, 3, "medium('nosuch')"))
    assert.matches("bad is pending again: the next run copies it", ask(c, 4, "retry('" .. h .. "', 'bad')"))
    assert.matches("no failed or skipped file", ask(c, 5, "retry('" .. h .. "', 'bad')"))
    local rows = t.rows(h, "SELECT i.state::text AS state, p.path FROM INODE i JOIN PATH p USING (medium_hash, fs_index, ino)"
                          .. " WHERE i.fs_type = 'f' ORDER BY p.path")
    assert.same({ "pending", "failed_permanent" }, { rows[1].state, rows[2].state })
    c:close()
  end)

  it("ntt attach says when no run is going on", function()
    local home = helper.tmpdir("livehome")
    local r = assert(proc.run { argv = { helper.ntt, "attach" }, env = { NTT_HOME = home }, timeout = 30 })
    assert.equal(1, r.code)
    assert.matches("no run is running", r.stderr)
    assert.is_true(fs.stat(home) ~= nil)
  end)
end)
