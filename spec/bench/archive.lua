-- spec/bench/archive.lua: the archive stage's packing (ntt.core.archive:
-- libarchive tar, libzstd level 3 with a worker per core) against `tar -cf - FILES | zstd -T0 -3` of the same image set,
-- in one run.
--
--   build/ntt spec/bench/archive.lua
--
-- The image set is written once under NTT_BENCH_DIR (default
-- /var/tmp/ntt-bench-archive): a NTT_BENCH_ARCHIVE_MB (default 512) MiB
-- image, half incompressible bytes and half text-like runs (as a disk
-- holds both), its map and a ddrescue log.  Sources are warm (read once
-- before); each contender writes a new archive next to them, best of
-- NTT_BENCH_ROUNDS (default 5).  Prints MB/s of image set, archive sizes
-- and the ratio peer time / ntt time (>= 1.0 is the target; ntt fsyncs its
-- archive, so the peer is also timed with `sync FILE`), then the time ntt's
-- read-back (zstd -d, BLAKE3 of the file and of every member) takes on top.
local fs = require "ntt.core.fs"
local util = require "ntt.core.util"
local car = require "ntt.core.archive"
local bench = dofile((arg[0]:match("^(.*)/[^/]+$") or ".") .. "/common.lua")

local MB = bench.num("NTT_BENCH_ARCHIVE_MB", 512)
local ROUNDS = bench.num("NTT_BENCH_ROUNDS", 5)
local WORK = os.getenv("NTT_BENCH_DIR") or "/var/tmp/ntt-bench-archive"
local MiB = 1048576

local sh, timed = bench.sh, bench.timed

local function make_set(dir)
  local img = dir .. "/disk.img"
  local st = fs.stat(img)
  if not (st and st.size == MB * MiB) then
    local f = assert(io.open(img .. ".tmp", "wb"))
    local x = 0x9e3779b97f4a7c15
    local words = { "directory ", "invoice 2003 ", "SYSTEM32 ", "readme.txt ", "\0\0\0\0\0\0\0\0", "Lorem ipsum " }
    for i = 1, MB do
      if i % 2 == 0 then
        local b = {}
        for k = 1, MiB // 8 do
          x = (x * 6364136223846793005 + 1442695040888963407) & 0xffffffffffffffff
          b[k] = string.pack("<I8", x)
        end
        f:write(table.concat(b))
      else
        local b, n = {}, 0
        while n < MiB do
          x = (x * 6364136223846793005 + 1442695040888963407) & 0xffffffffffffffff
          local w = words[(x >> 33) % #words + 1] .. tostring(x >> 50)
          b[#b + 1] = w
          n = n + #w
        end
        f:write(table.concat(b):sub(1, MiB))
      end
    end
    f:close()
    sh { "mv", img .. ".tmp", img }
  end
  local f = assert(io.open(dir .. "/disk.map", "wb"))
  f:write(("# Mapfile\n0x00000000     +               1\n0x00000000  0x%08X  +\n"):format(MB * MiB))
  f:close()
  f = assert(io.open(dir .. "/disk-ddrescue.log", "wb"))
  f:write(("ddrescue log line\n"):rep(1000))
  f:close()
  return { "disk.img", "disk.map", "disk-ddrescue.log" }
end

local function main()
  sh { "mkdir", "-p", WORK .. "/set", WORK .. "/out" }
  local names = make_set(WORK .. "/set")
  local members = {}
  for i, n in ipairs(names) do members[i] = { src = WORK .. "/set/" .. n, name = n } end
  sh { "cat", WORK .. "/set/disk.img" }   -- warm
  local threads = util.cores()
  local out = WORK .. "/out/set.tar.zst"
  local contenders = {
    { name = "ntt archive", run = function()
        return assert(car.write(out, members, { threads = threads, level = 3 })).size
      end },
    { name = "tar | zstd -T0 -3", run = function()
        sh { "sh", "-c", 'cd "$1/set" && tar -cf - disk.img disk.map disk-ddrescue.log | zstd -q -T0 -3 -o "$2"',
             "-", WORK, out }
        return fs.stat(out).size
      end },
    -- ntt's archive is fsynced before it is recorded (sources may be
    -- removed after it): the peer made as durable
    { name = "tar | zstd; sync FILE", run = function()
        sh { "sh", "-c", 'cd "$1/set" && tar -cf - disk.img disk.map disk-ddrescue.log | zstd -q -T0 -3 -o "$2" && sync "$2"',
             "-", WORK, out }
        return fs.stat(out).size
      end },
  }
  local best, size = {}, {}
  for _ = 1, ROUNDS do
    for _, c in ipairs(contenders) do
      os.remove(out)
      sh { "sync" }   -- the last contender's dirty pages are not written back during this one
      local t, n = timed(c.run)
      best[c.name] = math.min(best[c.name] or math.huge, t)
      size[c.name] = n
    end
  end
  local vt = timed(function() return assert(car.read(out)) end)
  os.remove(out)
  local bytes = 0
  for _, m in ipairs(members) do bytes = bytes + fs.stat(m.src).size end
  print(("image set: %d MiB in %d files, %s; zstd threads %d"):format(MB, #members, WORK .. "/set", threads))
  for _, c in ipairs(contenders) do
    print(("%-20s %7.3f s %8.1f MB/s  archive %d bytes"):format(c.name, best[c.name], bytes / best[c.name] / 1e6,
                                                                 size[c.name]))
  end
  print(("ratio (tar|zstd time / ntt time): %.2f; against the durable peer: %.2f"):format(
    best["tar | zstd -T0 -3"] / best["ntt archive"], best["tar | zstd; sync FILE"] / best["ntt archive"]))
  print(("ntt read-back of the last archive (zstd -d and BLAKE3 of every member): %.3f s"):format(vt))
end

main()
