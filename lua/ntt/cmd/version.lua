-- lua/ntt/cmd/version.lua: `ntt version`.
local ntt = require "ntt"
return {
  summary = "print the version of ntt and of its Lua",
  usage = "usage: ntt version\n\nPrints ntt's version (the C runtime and its embedded Lua agree on it).",
  main = function()
    io.stdout:write(("ntt %s (%s)\n"):format(ntt.version, _VERSION))
    return 0
  end,
}
