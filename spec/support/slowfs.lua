-- spec/support/slowfs.lua: spec/fixtures/slowfs.c, a FUSE source whose
-- requests are slow or never answered, built once per suite run.
--
--   slowfs.bin() -> path of the built fixture, or nil and why not
--                   (libfuse3-dev missing)
--   slowfs.mount(finally, mnt, env [, single]) the built fixture serving at
--                   mnt (made here) with environment env, one request at a
--                   time when single (-s); raises unless mounted within 60 s;
--                   unmounted and stopped in the running test's finally
local helper = require "spec.support.helper"
local runs = require "spec.support.runs"
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

function M.mount(finally, mnt, env, single)
  helper.sh { "mkdir", "-p", mnt }
  local argv = { assert(bin, "slowfs.bin() first"), "-f", "-o", "ro", mnt }
  if single then table.insert(argv, 3, "-s") end
  local p = assert(proc.spawn { argv = argv, env = env, stdout = "null", stderr = "null" })
  finally(function()
    proc.run { argv = { "umount", "-l", mnt }, timeout = 30 }
    p:kill(9); p:wait(10)
  end)
  assert(runs.wait_for(function()
    for l in io.lines("/proc/self/mounts") do
      if l:find(" " .. mnt .. " ", 1, true) then return true end
    end
    return false
  end), "slowfs did not mount")
  return mnt
end

return M
