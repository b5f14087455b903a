-- lua/ntt/version.lua: the Lua library's version; must equal the C runtime's.
return "0.1.0"
