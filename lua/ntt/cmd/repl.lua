-- lua/ntt/cmd/repl.lua: `ntt repl [POLICY]`.
local usage = [[
usage: ntt repl [POLICY]

An interactive Lua prompt with ntt loaded (global `ntt`), line editing and
history.  With POLICY, the policy is loaded and validated (not run) and is
the global `policy`.  An expression is echoed (pretty-printed); `=expr` works
too.  Ctrl-C interrupts a running statement; Ctrl-D leaves.
Helpers: `repl.explain(policy, {"detected_io_error", "dmesg:io_error"})`
shows which diagnose rule decides.]]

return {
  summary = "interactive prompt with ntt loaded (optionally a policy)",
  usage = usage,
  main = function(args)
    local ntt = require "ntt"
    if args[1] and args[1]:match("^%-") then
      io.stderr:write(usage, "\n")
      return 64
    end
    _G.ntt = ntt
    _G.repl = require "ntt.repl"
    if args[1] then
      local p, err = ntt.policy.load(args[1])
      if not p then
        io.stderr:write("ntt: ", err, "\n")
        return 2
      end
      _G.policy = p
      io.stdout:write(("policy %s loaded (not run)\n"):format(p.name or args[1]))
    end
    io.stdout:write(("ntt %s (%s); Ctrl-D to leave\n"):format(ntt.version, _VERSION))
    require("ntt.core.repl").run()
    return 0
  end,
}
