-- spec/bench/run.lua: `make bench` -- every benchmark, each comparing ntt
-- with its peers in the same run (ratios, never timed assertions).
--   build/ntt spec/bench/run.lua [copy|enumerate|identify|image|pipeline|report|reader|archive|tree|verify|scale ...]
local proc = require "ntt.core.proc"
local i = -1
while arg[i - 1] do i = i - 1 end
local ntt = arg[i]
local dir = arg[0]:match("^(.*)/run%.lua$") or "spec/bench"
local which = #arg > 0 and arg or { "copy", "enumerate", "identify", "image", "pipeline", "report", "reader", "archive", "tree", "verify", "scale" }
local failed = 0
for _, name in ipairs(which) do
  io.stdout:write(("== %s\n"):format(name)); io.stdout:flush()
  local p = assert(proc.spawn { argv = { ntt, dir .. "/" .. name .. ".lua" } })
  local _, code = p:wait()
  if code ~= 0 then failed = failed + 1 end
end
os.exit(failed == 0 and 0 or 1)
