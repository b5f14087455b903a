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
-- before); each contender writes a new archive next to them, alternated,
-- NTT_BENCH_ROUNDS (default 3) rounds, the first contender of a round
-- rotating.  Prints each contender's times, median MB/s of image set and
-- spread (max - min over the median), archive sizes, the ratio of medians
-- peer / ntt (>= 1.0 is the target; ntt fsyncs its archive, so the durable
-- peer is `tar | zstd` then `sync FILE`) with the range of the per-round
-- ratios, the time ntt's read-back (zstd -d, BLAKE3 of the file and of
-- every member) takes on top, and the load average before and after.
local fs = require "ntt.core.fs"
local util = require "ntt.core.util"
local car = require "ntt.core.archive"
local bench = dofile((arg[0]:match("^(.*)/[^/]+$") or ".") .. "/common.lua")

local MB = bench.num("NTT_BENCH_ARCHIVE_MB", 512)
local ROUNDS = bench.num("NTT_BENCH_ROUNDS", 3)
local WORK = os.getenv("NTT_BENCH_DIR") or "/var/tmp/ntt-bench-archive"
local MiB = 1048576

local sh, timed = bench.sh, bench.timed

-- Rounds of contenders, alternated, each timed; median and spread (max -
-- min, in % of the median) of each, and the load average before and after.
local loadavg, median, spread = bench.loadavg, bench.median, bench.spread

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
  local times, size, back = {}, {}, {}
  for _, c in ipairs(contenders) do times[c.name] = {} end
  local load0 = loadavg()
  for round = 1, ROUNDS do
    for k = 0, #contenders - 1 do
      local c = contenders[(round - 1 + k) % #contenders + 1]
      os.remove(out)
      sh { "sync" }   -- the last contender's dirty pages are not written back during this one
      local t, n = timed(c.run)
      table.insert(times[c.name], t)
      size[c.name] = n
      if c.name == "ntt archive" then
        back[#back + 1] = timed(function() return assert(car.read(out)) end)
      end
    end
  end
  os.remove(out)
  local bytes = 0
  for _, m in ipairs(members) do bytes = bytes + fs.stat(m.src).size end
  print(("image set: %d MiB in %d files, %s; zstd threads %d; %d rounds alternated"):format(
    MB, #members, WORK .. "/set", threads, ROUNDS))
  for _, c in ipairs(contenders) do
    local ts, l = times[c.name], {}
    for i, t in ipairs(ts) do l[i] = ("%.3f"):format(t) end
    print(("%-22s median %7.3f s %8.1f MB/s  spread %4.1f%%  (%s s)  archive %d bytes"):format(c.name, median(ts),
          bytes / median(ts) / 1e6, spread(ts), table.concat(l, " "), size[c.name]))
  end
  local function ratio(peer)
    local rs = {}
    for i, t in ipairs(times["ntt archive"]) do rs[i] = times[peer][i] / t end
    table.sort(rs)
    return median(times[peer]) / median(times["ntt archive"]), rs[1], rs[#rs]
  end
  local r1, lo1, hi1 = ratio("tar | zstd -T0 -3")
  local r2, lo2, hi2 = ratio("tar | zstd; sync FILE")
  print(("ratio (peer time / ntt time, of the medians): tar|zstd %.2f (rounds %.2f-%.2f); "
         .. "the durable peer, tar|zstd then sync %.2f (rounds %.2f-%.2f)"):format(r1, lo1, hi1, r2, lo2, hi2))
  print(("ntt read-back of its archive (zstd -d and BLAKE3 of every member): median %.3f s, spread %.1f%%")
        :format(median(back), spread(back)))
  print(("load average: before %s, after %s"):format(load0, loadavg()))
end

main()
