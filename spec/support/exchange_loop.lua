-- spec/support/exchange_loop.lua: swaps two names (fs.exchange) as fast as
-- it can until killed, or n times when n is given; the attacker in the
-- mount helper's race specs.
--   build/ntt spec/support/exchange_loop.lua A B [N]
local fs = require "ntt.core.fs"

local a, b, n = arg[1], arg[2], tonumber(arg[3] or "")
local i = 0
while not n or i < n do
  assert(fs.exchange(a, b))
  i = i + 1
end
