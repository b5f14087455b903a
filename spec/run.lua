-- spec/run.lua: the test command (`make test` runs `build/ntt spec/run.lua`).
--
-- Runs busted inside ntt against the real primitives, with a throwaway
-- PostgreSQL cluster for the whole suite (unless NTT_DB_URL names one),
-- and ends with "N passed, N failed, N skipped".  Extra arguments go to
-- busted (a spec file, --filter=NAME, ...).
local source = arg[0]:match("^(.*)/spec/run%.lua$") or "."
package.path = source .. "/?.lua;" .. package.path
local helper = require "spec.support.helper"

local cluster = helper.start_suite_db()

-- busted ends the process itself: stop the cluster and clean up first.
local real_exit = os.exit
os.exit = function(code, close)
  helper.stop_suite_db(cluster)
  real_exit(code, close)
end

local args = { "-o", source .. "/spec/support/summary.lua", "--lpath=" .. source .. "/?.lua",
               "--pattern=_spec" }
local explicit = false
for i = 1, #arg do
  args[#args + 1] = arg[i]
  if not arg[i]:match("^%-") then explicit = true end
end
if not explicit then args[#args + 1] = source .. "/spec" end

_G.arg = { [0] = "busted", table.unpack(args) }
local ok, err = pcall(require("busted.runner"), { standalone = false })
helper.stop_suite_db(cluster)
if not ok then
  io.stderr:write("spec/run.lua: ", tostring(err), "\n")
  io.stdout:write("0 passed, 1 failed, 0 skipped\n")
  real_exit(1)
end
