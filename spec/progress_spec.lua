-- spec/progress_spec.lua: progress that moves.  `ntt run` on a 4,000-file,
-- 250 MiB image (one 5,000-file batch by the default policy) runs in a
-- terminal (tmux); its raw output is read as it comes: the copy's line is
-- redrawn at least once a second, its counts come from the engine while
-- the batch runs.
local helper = require "spec.support.helper"
local runs = require "spec.support.runs"
local util = require "ntt.core.util"

local tty = require("spec.support.term").new { socket = "ntt-progress-spec", target = "prog" }
local tmux = tty.tmux

local read = helper.try_read

describe("progress on a terminal", function()
  local ok, why = runs.can_run()
  if ok then ok, why = require("spec.support.term").have() end
  if not ok then
    it("refreshes at least once a second", function() pending(why) end)
    return
  end
  after_each(function() tmux("kill-server") end)

  it("refreshes the copy's line at least once a second, from the engine's counts", function()
    local dir = helper.tmpdir("progress")
    local src = dir .. "/tree"
    -- 4,000 files of 64 KiB, each its own content: 250 MiB
    for d = 1, 40 do
      local sub = ("%s/d%02d"):format(src, d)
      helper.sh { "mkdir", "-p", sub }
      for f = 1, 100 do
        local head = ("%s progress %d %d "):format(runs.tag, d, f)
        local body = head:rep(65536 // #head + 1):sub(1, 65536)
        helper.write(("%s/f%03d"):format(sub, f), body)
      end
    end
    local img = dir .. "/big.img"
    helper.sh { "truncate", "-s", "320M", img }
    helper.sh { "mke2fs", "-q", "-F", "-t", "ext4", "-d", src, img }
    helper.sh { "rm", "-rf", src }
    local home = dir .. "/home"
    local raw = dir .. "/tty.raw"
    tty.start(200, 50, "env", "NTT_HOME=" .. home, "TERM=xterm", "sh", "-c",
         helper.ntt .. " run default " .. img .. "; echo RUN-EXIT $?; sleep 60")
    tmux("pipe-pane", "-o", "-t", "prog", "cat >> " .. raw)
    -- Each redraw of the copy line, with when it was seen (polled every 50 ms).
    local seen, draws, t_end = 0, {}, util.monotonic() + 240
    local text
    repeat
      util.sleep(0.05)
      text = read(raw)
      local now = util.monotonic()
      local n = 0
      for line in text:gmatch("\27%[K(copy [^\r\n]*)") do
        n = n + 1
        if n > seen then draws[#draws + 1] = { t = now, line = line } end
      end
      seen = math.max(seen, n)
    until text:find("RUN-EXIT", 1, true) or util.monotonic() > t_end
    assert.matches("RUN%-EXIT 0", text)
    assert.is_true(#draws >= 3, ("only %d redraws of the copy line:\n%s"):format(#draws, text))
    -- at least once a second (the poll adds up to 50 ms, a busy machine some more)
    local gap = 0
    for i = 2, #draws do gap = math.max(gap, draws[i].t - draws[i - 1].t) end
    assert.is_true(gap <= 1.25, ("a gap of %.2f s between redraws"):format(gap))
    -- counts moved within the one batch: files, bytes of the total, a rate, an ETA
    local first, last = draws[1].line, draws[#draws].line
    assert.matches("%d+/4000 files, [%d.]+ %a+ of 250%.%d MiB, %d+ files/s, [%d.]+ %a+/s, ETA", last)
    local f1 = tonumber(first:match("(%d+)/4000"))
    local f2 = tonumber(last:match("(%d+)/4000"))
    assert.is_true(f2 > f1, first .. " | " .. last)
    assert.matches("4000/4000 files", text)
  end)
end)
