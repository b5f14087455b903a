-- spec/bench/common.lua: what the benches share.  Each loads it from its
-- own folder, so a bench runs from any working directory:
--   local bench = dofile((arg[0]:match("^(.*)/[^/]+$") or ".") .. "/common.lua")
--
--   bench.num(name [, default]) -> the number in environment variable name,
--                                  else default
--   bench.self()                -> the ntt binary running the bench
--   bench.varied_file(path, mb)    writes path: mb MiB of varied bytes, each
--                                  MiB its own (no dedup, no sparse); kept
--                                  when it is already that size
--   bench.sh(argv [, may_fail [, timeout]]) -> the result of argv; raises
--                                  when it exits non-zero unless may_fail
--                                  (timeout 3600 s)
--   bench.drop_caches()            empties the page cache (root)
--   bench.timed(fn)             -> seconds fn took, then what it returned
--   bench.detach(img)              detaches every loop device of img
--   bench.fresh_ext4(img, mnt, size_mb) -> mnt, where a new size_mb MiB ext4
--                                  image img is mounted through a direct-I/O
--                                  loop device
local util = require "ntt.core.util"
local proc = require "ntt.core.proc"
local fs = require "ntt.core.fs"

local M = {}

function M.num(name, default)
  return tonumber(os.getenv(name) or "") or default
end

function M.self()
  local i = -1
  while arg[i - 1] ~= nil do i = i - 1 end
  return arg[i]
end

function M.varied_file(path, mb)
  local MiB = 1048576
  local st = fs.stat(path)
  if st and st.size == mb * MiB then return end
  local f = assert(io.open(path .. ".tmp", "wb"))
  local block = {}
  for i = 1, MiB // 8 do block[i] = string.pack("<I8", (i * 0x9e3779b97f4a7c15) & 0x7fffffffffffffff) end
  block = table.concat(block)
  for i = 1, mb do f:write(string.pack("<I8", i), block:sub(9)) end
  f:close()
  M.sh { "mv", path .. ".tmp", path }
end

function M.sh(argv, may_fail, timeout)
  local r = assert(proc.run { argv = argv, timeout = timeout or 3600 })
  if r.code ~= 0 and not may_fail then
    error(table.concat(argv, " ") .. " failed: " .. r.stdout .. r.stderr, 2)
  end
  return r
end

function M.drop_caches()
  M.sh { "sync" }
  local f = assert(io.open("/proc/sys/vm/drop_caches", "w"))
  f:write("3\n")
  f:close()
end

function M.timed(fn)
  local t0 = util.monotonic()
  local out = fn()
  return util.monotonic() - t0, out
end

function M.detach(img)
  local r = M.sh({ "losetup", "-j", img }, true)
  for dev in r.stdout:gmatch("(/dev/loop%d+):") do M.sh({ "losetup", "-d", dev }, true) end
end

-- Inode tables and journal are written by mkfs, not by a kernel thread
-- during the timed run.  The loop device does direct I/O, as a disk would:
-- through a buffered one every byte a syncing writer makes durable goes
-- through two page caches (the filesystem's, then the image file's), which
-- halves the write speed of a copier that syncs and costs cp -a, which
-- never syncs, nothing.
function M.fresh_ext4(img, mnt, size_mb)
  os.remove(img)
  M.sh { "mkdir", "-p", mnt }
  M.sh { "truncate", "-s", size_mb .. "M", img }
  M.sh { "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", img }
  local dev = M.sh({ "losetup", "-f", "--show", "--direct-io=on", img }).stdout:match("%S+")
  M.sh { "mount", dev, mnt }
  return mnt
end

return M
