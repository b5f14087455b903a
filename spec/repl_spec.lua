-- spec/repl_spec.lua: `ntt repl` driven through a real terminal (tmux).
local helper = require "spec.support.helper"
local util = require "ntt.core.util"
local term = require "spec.support.term"

local tty = term.new { socket = "ntt-spec", target = "repl", wait = 10 }
local tmux, send, screen, wait_for = tty.tmux, tty.send, tty.screen, tty.wait_for

describe("ntt repl", function()
  local has, why = term.have()
  if not has then
    it("needs tmux", function() pending(why) end)
    return
  end

  local hist
  before_each(function()
    hist = helper.tmpdir("repl") .. "/history"
    tty.start(150, 50, "env", "NTT_HISTORY=" .. hist, "TERM=xterm", helper.ntt, "repl", "policies/default.lua")
    wait_for("ntt>")
  end)
  after_each(function() tmux("kill-server") end)

  it("echoes expressions, =expr, and pretty-prints tables", function()
    send("6*7", "Enter")
    wait_for("\n42\n")
    send("=2^10", "Enter")
    wait_for("1024.0")
    send("policy.retry.backoff", "Enter")
    wait_for("{ base = 0.02, cap = 0.25, factor = 1.5 }")
  end)

  it("loads the policy without running it and can explain a rule", function()
    local s = screen()
    assert.matches("policy default loaded %(not run%)", s)
    send('repl.explain(policy, {"detected_io_error", "dmesg:io_error"})', "Enter")
    wait_for('rule 4 %(predicate all%(detected_io_error, dmesg:io_error%)%) %-> skip \\"IO_ERROR_CONFIRMED\\"')
  end)

  it("continues incomplete statements on the next line", function()
    send("local s = 0; for i = 1, 4 do", "Enter")
    wait_for(">>")
    send("s = s + i end; print('sum', s)", "Enter")
    wait_for("sum%s+10")
  end)

  it("interrupts a running statement with Ctrl-C and keeps the session", function()
    send("x = 5; while true do end", "Enter")
    util.sleep(0.3)
    send("C-c")
    wait_for("interrupted")
    send("x + 1", "Enter")
    wait_for("\n6\n")
  end)

  it("drops the line on Ctrl-C at the prompt and saves history on exit", function()
    send("this is not lua", "C-c")
    send("'still here'", "Enter")
    wait_for('"still here"')
    send("C-d")
    local deadline = util.monotonic() + 10
    local text = ""
    repeat
      local f = io.open(hist, "r")
      if f then text = f:read("a"); f:close() end
      if not text:find("still here", 1, true) then util.sleep(0.05) end
    until text:find("still here", 1, true) or util.monotonic() > deadline
    assert.matches("'still here'", text)
    assert.not_matches("this is not lua", text)
  end)
end)
