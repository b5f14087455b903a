-- spec/support/slowfs.lua: spec/fixtures/slowfs.c, a FUSE source whose
-- requests are slow or never answered, built once per suite run.
--
--   slowfs.bin() -> path of the built fixture, or nil and why not
--                   (libfuse3-dev missing)
local helper = require "spec.support.helper"
local proc = require "ntt.core.proc"

local M = {}

local bin
function M.bin()
  if bin then return bin end
  local pc = proc.run { argv = { "pkg-config", "--cflags", "--libs", "fuse3" } }
  if not pc or pc.code ~= 0 then return nil, "libfuse3-dev is not installed" end
  local dir = helper.tmpdir("slowfs")
  local argv = { "cc", "-O1", "-Wall", "-Werror", "-o", dir .. "/slowfs", "spec/fixtures/slowfs.c" }
  for w in pc.stdout:gmatch("%S+") do argv[#argv + 1] = w end
  helper.sh(argv)
  bin = dir .. "/slowfs"
  return bin
end

return M
