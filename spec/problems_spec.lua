-- spec/problems_spec.lua: the medium summaries take the seed's shape (their
-- fields at the top level of medium.problems) and the beyond-EOF skip count
-- adds up across worker processes writing at once.
local helper = require "spec.support.helper"
local proc = require "ntt.core.proc"
local hash = require "ntt.core.hash"
local json = require "ntt.json"
local mediadb = require "spec.support.mediadb"
local problems = require "ntt.problems"

describe("medium summaries", function()
  local url = helper.db_url()
  if not url then
    it("take the seed's shape and add up across workers", function() pending("no test database") end)
    return
  end
  local conn
  mediadb.connect_for(url, setup, teardown, function(c) conn = c end)

  local n = 0
  local function new_medium()
    n = n + 1
    local h = hash.sum(("problems spec %d %d %f"):format(n, require("ntt.core.util").pid(), os.clock()), 16)
    assert(conn:exec("INSERT INTO medium (medium_hash, medium_human) VALUES ($1, 'summary')", h))
    return h
  end
  local function get(h) return assert(problems.get(conn, h)) end

  it("writes beyond_eof_detected once with its fields at the top level, then adds to skip_count", function()
    local h = new_medium()
    local heard = {}
    local prev = problems.watch(function(mh, kind, detail) heard[#heard + 1] = { mh, kind, detail } end)
    assert(problems.beyond_eof(conn, h, { fs_index = 0, ino = 12, count = 2, at = "2026-01-01T00:00:00.000Z", worker = "w1" }))
    assert(problems.beyond_eof(conn, h, { fs_index = 1, ino = 40, count = 3, at = "2026-01-02T00:00:00.000Z", worker = "w2" }))
    problems.watch(prev)
    local p = get(h)
    assert.is_true(p.beyond_eof_detected)
    assert.equal(12, p.first_ino)
    assert.equal(0, p.first_fs_index)
    assert.equal(5, p.skip_count)
    assert.equal("2026-01-01T00:00:00.000Z", p.detected_at)   -- the first detection's
    assert.equal("w1", p.worker_id)
    -- a problem newly recorded is heard once; more skips are not a new problem
    assert.equal(1, #heard)
    assert.equal("beyond_eof_detected", heard[1][2])
    assert.equal(2, heard[1][3].skip_count)
  end)

  it("writes high_error_rate once with error_rate, threshold and detected_at at the top level", function()
    local h = new_medium()
    assert(problems.note(conn, h, "partial_image", { holes = 1 }))
    assert(problems.high_error_rate(conn, h, { error_rate = 0.15, errors = 15, processed = 100, threshold = 0.1,
                                               at = "2026-01-03T00:00:00.000Z", worker = "w1" }))
    assert(problems.high_error_rate(conn, h, { error_rate = 0.5, errors = 50, processed = 100, threshold = 0.1,
                                               at = "2026-01-04T00:00:00.000Z", worker = "w2" }))
    local p = get(h)
    assert.is_true(p.high_error_rate)
    assert.equal(0.15, p.error_rate)
    assert.equal(0.1, p.threshold)
    assert.equal(15, p.errors)
    assert.equal(100, p.processed)
    assert.equal("2026-01-03T00:00:00.000Z", p.detected_at)
    assert.equal("w1", p.worker_id)
    assert.same({ holes = 1 }, p.partial_image)            -- other findings kept
    -- the seed's own check, "already recorded", and its truthiness test
    local r = assert(conn:exec([[SELECT problems->'high_error_rate' IS NOT NULL AS already,
                                        (problems->>'error_rate')::float8 AS rate FROM medium WHERE medium_hash = $1]], h))
    assert.is_true(r[1].already)
    assert.equal(0.15, r[1].rate)
  end)

  it("adds every worker's skips when several processes write at once", function()
    local h = new_medium()
    local workers, each = 4, 25
    local code = ([[
      local problems = require "ntt.problems"
      local conn = assert(require("ntt.db").connect { url = os.getenv("NTT_DB_URL") })
      for i = 1, %d do
        assert(problems.beyond_eof(conn, %q, { fs_index = 0, ino = i, count = 1,
                                               at = "2026-01-01T00:00:00.000Z", worker = os.getenv("W") }))
      end
      conn:close()]]):format(each, h)
    local script = helper.tmpdir("problems") .. "/w.lua"
    helper.write(script, code)
    local ps = {}
    for i = 1, workers do
      ps[i] = assert(proc.spawn { argv = { helper.ntt, script }, env = { NTT_DB_URL = url, W = "w" .. i },
                                  stdout = "null" })
    end
    for i = 1, workers do
      local how, st = ps[i]:wait(60)
      assert.equal("exit", how)
      assert.equal(0, st)
    end
    local p = get(h)
    assert.equal(workers * each, p.skip_count, json.encode(p))
    assert.is_true(p.beyond_eof_detected)
  end)
end)
