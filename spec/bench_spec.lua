-- spec/bench_spec.lua: what the benches share (spec/bench/common.lua):
-- contenders run alternated with median, spread and per-round ratios, and a
-- cached fixture is reused only for the shape it was built for.
local helper = require "spec.support.helper"
local fs = require "ntt.core.fs"
local bench = dofile("spec/bench/common.lua")

describe("bench.rounds", function()
  it("alternates the contenders and rates each round", function()
    local order = {}
    local function c(name, secs)
      return { name = name, prepare = function(r) order[#order + 1] = "p" .. name .. r end,
               run = function(r) order[#order + 1] = name .. r return secs * r, name .. r end,
               done = function(r) order[#order + 1] = "d" .. name .. r end }
    end
    local res = bench.rounds({ c("A", 1), c("B", 2), c("C", 4) },
                             { runs = 3, quiet = true, ratios = { { "A", "C", target = 4 }, { "B", "A", target = 1 } } })
    assert.same({ "pA1", "A1", "dA1", "pB1", "B1", "dB1", "pC1", "C1", "dC1",
                  "pB2", "B2", "dB2", "pC2", "C2", "dC2", "pA2", "A2", "dA2",
                  "pC3", "C3", "dC3", "pA3", "A3", "dA3", "pB3", "B3", "dB3" }, order)
    assert.same({ 2, 4, 6 }, res.times.B)
    assert.equal("C2", res.out.C[2])
    local q = res.ratios[1]
    assert.same({ 4, 4, 4 }, q.values)
    assert.equal(4, q.median)
    assert.is_true(q.met)
    assert.equal(0.5, res.ratios[2].median)
    assert.is_false(res.ratios[2].met)
  end)

  it("times run itself when it returns no seconds, and takes NTT_BENCH_ROUNDS", function()
    local res = bench.rounds({ { name = "x", run = function() end } }, { quiet = true })
    assert.equal(bench.num("NTT_BENCH_ROUNDS", 3), #res.times.x)
    assert.is_true(res.times.x[1] >= 0 and res.times.x[1] < 1)
  end)

  it("counts the machine's CPU of each run and the ceiling it leaves a ratio", function()
    local util = require "ntt.core.util"
    local function spin(secs)
      local t0, x = util.monotonic(), 0
      while util.monotonic() - t0 < secs do x = x + 1 end
      return x
    end
    local _, ncpu = bench.cpu()
    assert.is_true(ncpu >= 1)
    local res = bench.rounds({ { name = "busy", run = function() spin(0.4) end },
                               { name = "idle", run = function() util.sleep(0.4) end } },
                             { runs = 1, quiet = true })
    -- the spinning run kept a core busy for its whole time (give or take
    -- a tick and what else the machine did meanwhile)
    assert.is_true(res.cpu.busy[1] >= 0.3, "busy run: " .. res.cpu.busy[1])
    assert.is_true(res.cpu.busy[1] <= 0.4 * ncpu + 0.3, "busy run: " .. res.cpu.busy[1])
    assert.is_true(res.cpu.idle[1] < res.cpu.busy[1])
    assert.is_true(res.steal.busy[1] >= 0)
    -- 3 CPU seconds over 2 cores take 1.5 s at best: 2.0x a peer's 3 s
    assert.equal("CPU 3.00 s (75% of 2 cores); at full use >= 1.50 s, so at most 2.00x a peer's 3.00 s",
                 bench.cpu_line(2, 3, 2, 3))
    assert.equal("CPU 1.00 s (50% of 1 cores); at full use >= 1.00 s", bench.cpu_line(2, 1, 1))
  end)

  it("takes the median of odd and even lists", function()
    assert.equal(2, bench.median { 3, 1, 2 })
    assert.equal(2.5, bench.median { 4, 1, 3, 2 })
  end)
end)

describe("bench.files_image", function()
  it("builds an image per shape and reuses it only for that shape", function()
    if not helper.is_root() then pending("needs root (loop devices)"); return end
    local dir = helper.tmpdir("bench")
    local a = bench.files_image(dir, { files = 30, dirs = 3, min = 100, max = 200 })
    local b = bench.files_image(dir, { files = 40, dirs = 3, min = 100, max = 200 })
    local c = bench.files_image(dir, { files = 30, dirs = 3, min = 100, max = 300 })
    assert.are_not.equal(a, b)
    assert.are_not.equal(a, c)
    local before = fs.stat(a)
    assert.equal(a, bench.files_image(dir, { files = 30, dirs = 3, min = 100, max = 200 }))
    assert.equal(before.mtime_ns, fs.stat(a).mtime_ns)
    -- the tree is what the shape says
    local mnt = dir .. "/m"
    assert(fs.mkdirp(mnt))
    helper.sh { "mount", "-o", "loop,ro", b, mnt }
    finally(function() helper.sh { "umount", mnt } end)
    local n = 0
    for d = 0, 2 do
      for _, name in ipairs(assert(fs.readdir(("%s/d%03d"):format(mnt, d)))) do
        local st = assert(fs.stat(("%s/d%03d/%s"):format(mnt, d, name)))
        assert.is_true(st.size >= 100 and st.size <= 200)
        n = n + 1
      end
    end
    assert.equal(40, n)
  end)

  it("builds again when the stamp names another shape", function()
    if not helper.is_root() then pending("needs root (loop devices)"); return end
    local dir = helper.tmpdir("bench")
    local a = bench.files_image(dir, { files = 10, dirs = 2, min = 100, max = 200 })
    helper.write(a .. ".done", "files99\n")
    helper.write(a, "not an image")
    assert.equal(a, bench.files_image(dir, { files = 10, dirs = 2, min = 100, max = 200 }))
    assert.is_true(fs.stat(a).size > 1048576)
  end)
end)
