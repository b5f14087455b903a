-- spec/log_spec.lua: JSONL ops log, error log, levels, rotation, progress.
local helper = require "spec.support.helper"
local json = require "ntt.json"
local log = require "ntt.log"
local progress = require "ntt.progress"

local function lines(path)
  local t = {}
  local f = io.open(path, "rb")
  if not f then return t end
  for l in f:lines() do t[#t + 1] = l end
  f:close()
  return t
end

local function sink()
  local buf = {}
  return { write = function(self, ...) for _, s in ipairs { ... } do buf[#buf + 1] = s end return self end,
           flush = function() end, text = function() return table.concat(buf) end }
end

describe("ntt.log", function()
  it("writes one JSON object per line with ts, level and event", function()
    local dir = helper.tmpdir("log")
    local err = sink()
    local l = assert(log.open { dir = dir, level = "info", err = err })
    l:info("copy_batch", { files = 3, path = "a\nb" })
    l:debug("noise", {})
    l:error("copy_failed", { ino = 7 }, "file 7 failed")
    l:close()
    local ops = lines(dir .. "/ops.jsonl")
    assert.equal(2, #ops)
    local a = assert(json.decode(ops[1]))
    assert.equal("copy_batch", a.event); assert.equal("info", a.level); assert.equal(3, a.files)
    assert.equal("a\nb", a.path)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", a.ts)
    local errs = lines(dir .. "/errors.jsonl")
    assert.equal(1, #errs)                       -- errors reach the error log
    assert.equal(7, json.decode(errs[1]).ino)
    assert.equal("ntt: error: file 7 failed\n", err.text())  -- quiet stderr: only the error
  end)

  it("detail: per-item lines reach the files, and stderr only from -v", function()
    local dir = helper.tmpdir("logdetail")
    local quiet, verbose = sink(), sink()
    local l = assert(log.open { dir = dir, level = "info", err = quiet })
    l:detail("warn", "file_failed", { ino = 9, path = "a/b" }, "p0 a/b: failed_retryable")
    l:close()
    assert.equal("", quiet.text())
    local errs = lines(dir .. "/errors.jsonl")
    assert.equal(1, #errs)
    local e = json.decode(errs[1])
    assert.equal("file_failed", e.event)
    assert.equal("warn", e.level)
    assert.equal("a/b", e.path)
    assert.equal(1, #lines(dir .. "/ops.jsonl"))
    l = assert(log.open { dir = dir, level = "info", stderr = "info", err = verbose })
    l:detail("warn", "file_failed", { ino = 9 }, "p0 a/b: failed_retryable")
    l:close()
    assert.equal("ntt: warn: p0 a/b: failed_retryable\n", verbose.text())
  end)

  it("rotates each file by size and keeps N old ones", function()
    local dir = helper.tmpdir("rot")
    local l = assert(log.open { dir = dir, max_bytes = 1000, keep = 2, err = sink() })
    for i = 1, 100 do l:warn("event", { i = i, pad = ("x"):rep(50) }) end
    l:close()
    local cur, one, two = lines(dir .. "/ops.jsonl"), lines(dir .. "/ops.jsonl.1"), lines(dir .. "/ops.jsonl.2")
    assert.is_nil(io.open(dir .. "/ops.jsonl.3"))
    assert.is_true(#cur > 0 and #one > 0 and #two > 0)
    for _, f in ipairs { "/ops.jsonl", "/ops.jsonl.1", "/ops.jsonl.2", "/errors.jsonl" } do
      local h = assert(io.open(dir .. f)); local size = h:seek("end"); h:close()
      assert.is_true(size <= 1000, f .. " is " .. size .. " bytes")
    end
    -- the newest record is in the current file, order is preserved
    assert.equal(100, json.decode(cur[#cur]).i)
    assert.equal(json.decode(one[#one]).i + 1, json.decode(cur[1]).i)
  end)

  it("fails with nil, message, errname when a directory or file cannot be made", function()
    local dir = helper.tmpdir("logfail")
    local file = dir .. "/plain"
    assert(io.open(file, "wb")):close()
    local l, msg, code = log.open { dir = file .. "/log", err = sink() }
    assert.is_nil(l)
    assert.matches("^log: cannot create directory", msg)
    assert.equal("ENOTDIR", code)
    assert(require("ntt.core.fs").mkdirp(dir .. "/a/ops.jsonl"))      -- a directory where a log goes
    l, msg, code = log.open { dir = dir .. "/a", err = sink() }
    assert.is_nil(l)
    assert.matches("^log: cannot open .*/ops%.jsonl", msg)
    assert.equal("EISDIR", code)
    assert(require("ntt.core.fs").mkdirp(dir .. "/b/errors.jsonl"))
    l, msg, code = log.open { dir = dir .. "/b", err = sink() }
    assert.is_nil(l)
    assert.matches("^log: cannot open .*/errors%.jsonl", msg)
    assert.equal("EISDIR", code)
  end)

  it("sends info to stderr with -v and is closed idempotently", function()
    local err = sink()
    local l = assert(log.open { stderr = "info", err = err })
    l:info("stage_done", { stage = "copy" })
    assert.equal("ntt: stage_done stage=copy\n", err.text())
    l:close(); l:close()
    assert.matches("closed", tostring(l))
  end)
end)

describe("ntt.progress", function()
  it("formats bytes and durations", function()
    assert.equal("512 B", progress.bytes(512))
    assert.equal("1.5 KiB", progress.bytes(1536))
    assert.equal("2.0 GiB", progress.bytes(2 * 1024 ^ 3))
    assert.equal("1:05", progress.duration(65))
    assert.equal("1:01:01", progress.duration(3661))
  end)

  it("prints periodic lines off a terminal, with rate and ETA", function()
    local out = sink()
    local p = progress.new { label = "copy", total = 10, interval = 0.05, bar = "never", out = out }
    p:add(2, 2048)
    require("ntt.core.util").sleep(0.08)
    p:add(3, 1024)
    local s = p:finish()
    assert.equal(5, s.files); assert.equal(3072, s.bytes)
    assert.matches("copy:  50%% 5/10 files, 3%.0 KiB, %d+ files/s, .*ETA %d+:%d%d\n", out.text())
  end)

  it("counts its own unit, never goes back, and gives an ETA by bytes", function()
    local out = sink()
    local p = progress.new { label = "enumerate", unit = "entries", total_bytes = 4096, interval = 0.05,
                             bar = "never", out = out }
    p:set(10, 1024)
    require("ntt.core.util").sleep(0.08)
    p:set(5, 2048)     -- a smaller count (a batch collected) does not move it back
    local s = p:finish()
    assert.equal(10, s.files); assert.equal(2048, s.bytes)
    assert.matches("enumerate:  50%% 10 entries, 2%.0 KiB of 4%.0 KiB, %d+ entries/s, [%d.]+ %a+/s, ETA 0:0%d\n",
                   out.text())
  end)
end)
