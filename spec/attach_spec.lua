-- spec/attach_spec.lua: `ntt attach` to a running `ntt run` through a real
-- terminal (tmux): the run copies a FUSE source (spec/fixtures/slowfs.c with
-- SLOWFS_STUCK=1) whose one file never answers its reads; the console
-- shows that file with its age, lowers the thread ceiling (later batches
-- use fewer threads) and skips the file (recorded skipped by the operator),
-- and the run finishes.  ^C in the console stops only the statement.
local helper = require "spec.support.helper"
local runs = require "spec.support.runs"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local slowfs = require "spec.support.slowfs"
local term = require "spec.support.term"

local tty = term.new { socket = "ntt-attach-spec", target = "att", history = true, wait = 15 }
local tmux, send, screen, wait_for = tty.tmux, tty.send, tty.screen, tty.wait_for

local events = runs.events

describe("ntt attach", function()
  local ok, why = runs.can_run { fuse = true }
  if ok then ok, why = term.have() end
  if ok then
    local b, err = slowfs.bin()
    if not b then ok, why = false, err end
  end
  if not ok then
    it("shows a stuck file and skips it", function() pending(why) end)
    return
  end
  after_each(function() tmux("kill-server") end)

  -- The fixture mounted at dir/src (its one file d00/stuck.bin hangs).
  local function mount_stuck(dir)
    local mnt = dir .. "/src"
    -- multithreaded (no -s): the fixture must see the kernel's interrupt while a read hangs
    slowfs.mount(finally, mnt, { SLOWFS_DIRS = "8", SLOWFS_FILES = "10", SLOWFS_BAD = "0",
                                 SLOWFS_LATENCY_MS = "5", SLOWFS_STUCK = "1" })
    return mnt
  end

  local function stuck_row(mnt)
    local h = runs.medium_of(mnt)
    return assert(runs.db():exec(("SELECT i.state::text AS state, i.reason FROM inode_p_%s i"
      .. " JOIN path_p_%s p ON p.ino = i.ino AND p.fs_index = i.fs_index WHERE p.path = '\\x%s'::bytea")
      :format(h, h, ("d00/stuck.bin"):gsub(".", function(c) return ("%02x"):format(c:byte()) end))))
  end

  it("shows a stuck file with its age, lowers the threads, skips it, and the run finishes", function()
    local dir = helper.tmpdir("attach")
    local mnt = mount_stuck(dir)
    local pol = runs.policy(dir, [[{ copy = { batch = 6, threads = 4, adapt = false } }]])
    local home = dir .. "/home"
    local out = dir .. "/run.out"
    local run = assert(proc.spawn { argv = { helper.ntt, "run", pol, mnt }, env = { NTT_HOME = home },
                                    stdout = out, stderr = dir .. "/run.err" })
    finally(function() run:kill(9); run:wait(10) end)
    -- the socket is there while the run is, mode 0600
    local sock
    assert.is_true(runs.wait_for(function()
      for _, n in ipairs(require("ntt.core.fs").readdir(home .. "/run") or {}) do
        if n:match("^ctl%-.*%.sock$") then sock = home .. "/run/" .. n; return true end
      end
      return false
    end), "no control socket")
    assert.equal("600", helper.sh({ "stat", "-c", "%a", sock }).stdout:match("%d+"))

    tty.start(200, 50, "env", "NTT_HOME=" .. home, "NTT_HISTORY=" .. dir .. "/hist", "TERM=xterm", helper.ntt, "attach")
    wait_for("attached to run")
    send("help()", "Enter")
    wait_for("skip%(path or ino, reason%)")
    -- the stuck file, with its age, once it has hung a while
    local s
    local deadline = util.monotonic() + 30
    repeat
      send("for _, f in ipairs(reading()) do print('READ', f.path, 'AGE', f.age) end", "Enter")
      util.sleep(0.5)
      s = screen()
      local age = tonumber(s:match("READ%s+d00/stuck%.bin%s+AGE%s+([%d.]+)%s*\n[^\n]*$")
                          or s:match(".*READ%s+d00/stuck%.bin%s+AGE%s+([%d.]+)"))
      if age and age >= 1 then break end
    until util.monotonic() > deadline
    assert.matches("READ%s+d00/stuck%.bin%s+AGE%s+[%d.]+", s)

    -- ^C stops a statement, not the run; the console goes on
    send("local t = os.clock() while os.clock() - t < 1.5 do end", "Enter")
    util.sleep(0.3)
    send("C-c", "")
    wait_for("interrupted")
    send("6*7", "Enter")
    wait_for("\n42\n")

    send("threads(1)", "Enter")
    wait_for("at most 1 from the next batch")
    send('skip("d00/stuck.bin", "hangs on read")', "Enter")
    wait_for("skipping d00/stuck%.bin")
    local how, code = run:wait(60)
    assert.equal("exit", how)
    assert.equal(1, code, helper.read(dir .. "/run.err"))   -- finished, one file skipped
    assert.matches("copied:%s+80 ", helper.read(out))
    -- the socket went with the run
    assert.is_nil(io.open(sock))

    local rows = stuck_row(mnt)
    assert.equal(1, #rows)
    assert.equal("skipped", rows[1].state)
    assert.equal("skipped by the operator: hangs on read", rows[1].reason)
    -- batches started after the override use 1 thread; earlier ones 4
    local ov = events(home, "policy_override")
    assert.equal(1, #ov)
    assert.equal("copy.threads", ov[1].key)
    local before, after = 0, 0
    for _, e in ipairs(events(home, "copy_batch")) do
      if e.ts < ov[1].ts then before = before + 1; assert.equal(4, e.threads)
      elseif e.threads == 1 then after = after + 1 end
    end
    assert.is_true(before >= 1 and after >= 1, ("batches before %d, after %d"):format(before, after))
    assert.equal(1, #events(home, "operator_skip"))
  end)

  it("reaches a file a worker process reads (--workers 2)", function()
    local dir = helper.tmpdir("attachw")
    local mnt = mount_stuck(dir)
    local pol = runs.policy(dir, [[{ copy = { batch = 6, threads = 2, adapt = false } }]])
    local home = dir .. "/home"
    local run = assert(proc.spawn { argv = { helper.ntt, "run", "--workers", "2", pol, mnt },
                                    env = { NTT_HOME = home }, stdout = dir .. "/run.out", stderr = dir .. "/run.err" })
    finally(function() run:kill(9); run:wait(10) end)
    local function ask(chunk)
      local r = runs.ntt(home, { "attach", "-e", chunk }, 30)
      return r.stdout, r
    end
    -- the hanging file, in this process or the worker; the worker is listed
    local who
    assert.is_true(runs.wait_for(function()
      local out = ask("for _, f in ipairs(reading()) do if f.path == 'd00/stuck.bin' and f.age > 0.5 then "
                      .. "print('WHO', f.worker or 'main') end end")
      who = out:match("WHO%s+(%S+)")
      return who ~= nil
    end), "the stuck file was never seen being read")
    local w = ask("for _, w in ipairs(workers()) do print('WORKER', w.pid, w.state) end")
    assert.matches("WORKER%s+%d+%s+running", w)
    assert.matches("skipping d00/stuck%.bin", ask('skip("d00/stuck.bin", "hangs")'))
    local how, code = run:wait(60)
    assert.equal("exit", how)
    assert.equal(1, code, helper.read(dir .. "/run.err"))
    assert.matches("copied:%s+80 ", helper.read(dir .. "/run.out"))
    local rows = stuck_row(mnt)
    assert.equal("skipped by the operator: hangs", rows[1].reason)
    -- no worker socket is left
    assert.same({}, require("ntt.core.fs").readdir(home .. "/run/workers") or {})
  end)
end)
