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
--   bench.cpu()                 -> CPU seconds the whole machine has spent
--                                  busy so far (user, nice, system, irq,
--                                  softirq of /proc/stat: the kernel's
--                                  worker threads -- loop devices, writeback
--                                  -- and the database server count too;
--                                  steal and iowait do not), its cores, and
--                                  the seconds a hypervisor took from them
--                                  (steal)
--   bench.cpu_line(secs, cpu, ncpu, peer) -> "CPU 8.4 s (78% of 2 cores);
--                                  at full use >= 4.2 s, so at most 2.2x
--                                  <peer seconds>": how fast the same work
--                                  could be on this machine at best
--   bench.detach(img)              detaches every loop device of img
--   bench.fresh_ext4(img, mnt, size_mb [, inodes]) -> mnt, where a new
--                                  size_mb MiB ext4 image img (at least
--                                  inodes inodes) is mounted through a
--                                  direct-I/O loop device
--   bench.files_image(dir, shape) -> path of an ext4 image under dir holding
--                                  shape.files files (shape.min..shape.max
--                                  bytes, default 1024..65536) spread over
--                                  shape.dirs folders d000... (default
--                                  files/100), a shape.dup share (default
--                                  0.2) repeating earlier content, drawn
--                                  with math.randomseed(shape.seed or 7).
--                                  Cached: the file name and a stamp next
--                                  to it carry every one of these, so a
--                                  changed shape builds its own image.
--   bench.policy(dir, stages) -> path of a policy in dir: the default one
--                                  with only the stages named in the list
--                                  stages (nil: the default one itself)
--   bench.median(list)          -> the median of a list of numbers
--   bench.spread(list)          -> (max - min) in % of the median
--   bench.loadavg()             -> "1m 5m 15m" of /proc/loadavg
--   bench.rounds(contenders [, opts]) -> res: runs every contender
--                                  opts.runs times (default NTT_BENCH_ROUNDS,
--                                  else 3), alternating: round r starts at
--                                  the r-th contender (A B C, B C A, C A B).
--                                  A contender is { name = "cp -a",
--                                  prepare = fn(round), run = fn(round),
--                                  done = fn(round) }; prepare (fresh
--                                  destination, drop_caches ...) and done
--                                  (unmount, check ...) are optional and not
--                                  timed; run is timed, unless it returns a
--                                  number of seconds itself; what run returns
--                                  second is kept in res.out[name][round].
--                                  opts.work: units each run does (files,
--                                  MB), opts.unit their rate's name
--                                  ("files/s"); opts.ratios: list of
--                                  { "ntt run", "cp -a", target = 2.0 } --
--                                  the peer's time / the first's, per round.
--                                  Prints per round each ratio, per
--                                  contender the median and spread (min-max)
--                                  of its seconds (and rate), per ratio the
--                                  median and spread of the per-round
--                                  ratios and whether every round met its
--                                  target (opts.quiet: print nothing).
--                                  Each run's machine CPU and steal
--                                  (bench.cpu) are kept in
--                                  res.cpu[name][round], res.steal[...]
--                                  and their medians printed with the
--                                  seconds; per ratio, the ceiling the
--                                  first contender's CPU leaves it.
--                                  res.times[name] = { seconds by round },
--                                  res.ratios[i] = { a, b, target, values =
--                                  { by round }, median, min, max, met }.
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

-- /proc/stat counts in USER_HZ ticks, 100 a second on Linux.
function M.cpu()
  local f = assert(io.open("/proc/stat"))
  local busy, ncpu, steal = 0, 0, 0
  for l in f:lines() do
    local user, nice, system, _, _, irq, softirq, st =
      l:match("^cpu%s+(%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) ?(%d*)")
    if user then
      busy = tonumber(user) + tonumber(nice) + tonumber(system) + tonumber(irq) + tonumber(softirq)
      steal = tonumber(st) or 0
    end
    if l:match("^cpu%d") then ncpu = ncpu + 1 end
  end
  f:close()
  return busy / 100, ncpu, steal / 100
end

function M.cpu_line(secs, cpu, ncpu, peer)
  local floor = cpu / ncpu
  local s = ("CPU %.2f s (%.0f%% of %d cores); at full use >= %.2f s"):format(cpu, 100 * cpu / (secs * ncpu),
                                                                         ncpu, floor)
  if peer then s = s .. (", so at most %.2fx a peer's %.2f s"):format(peer / floor, peer) end
  return s
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
function M.fresh_ext4(img, mnt, size_mb, inodes)
  os.remove(img)
  M.sh { "mkdir", "-p", mnt }
  M.sh { "truncate", "-s", size_mb .. "M", img }
  local argv = { "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", img }
  if inodes then table.insert(argv, 3, "-N") table.insert(argv, 4, tostring(math.ceil(inodes))) end
  M.sh(argv)
  local dev = M.sh({ "losetup", "-f", "--show", "--direct-io=on", img }).stdout:match("%S+")
  M.sh { "mount", dev, mnt }
  return mnt
end

-- The generator's own version is part of the key: a change to what it
-- writes must not reuse images an older one made.
local GENERATOR = 1

function M.files_image(dir, shape)
  local p = { files = shape.files, dirs = shape.dirs or math.max(1, shape.files // 100),
              min = shape.min or 1024, max = shape.max or 65536, dup = shape.dup or 0.2,
              seed = shape.seed or 7 }
  local key = ("files%d-dirs%d-size%d-%d-dup%g-seed%d-gen%d"):format(p.files, p.dirs, p.min, p.max, p.dup,
                                                                      p.seed, GENERATOR)
  local img, mnt = dir .. "/tree-" .. key .. ".img", dir .. "/tree-" .. key
  local stamp = io.open(img .. ".done")
  if stamp then
    local got = stamp:read("a")
    stamp:close()
    if got == key .. "\n" then return img end
  end
  os.remove(img .. ".done")
  M.sh { "mkdir", "-p", dir }
  M.sh({ "umount", mnt }, true)
  M.detach(img)
  local per_file = ((p.min + p.max) // 2 + 4095) // 4096 * 4096 + 4096
  M.fresh_ext4(img, mnt, math.ceil(p.files * per_file * 1.1 / 1048576) + 256, p.files + p.dirs + 4096)
  M.sh { "chmod", "0755", mnt }
  local rnd = assert(io.open("/dev/urandom", "rb"))
  local pool = rnd:read(8 * 1048576)
  rnd:close()
  math.randomseed(p.seed)
  local made = {}
  for d = 0, p.dirs - 1 do assert(fs.mkdirp(("%s/d%03d"):format(mnt, d))) end
  for n = 1, p.files do
    local data
    if #made > 10 and math.random() < p.dup then
      data = made[math.random(#made)]
    else
      local len = math.random(p.min, p.max)
      local off = math.random(0, #pool - len)
      data = pool:sub(off + 1, off + len - 16) .. ("%016d"):format(n)
      if #made < 2000 then made[#made + 1] = data else made[math.random(#made)] = data end
    end
    local f = assert(io.open(("%s/d%03d/f%06d"):format(mnt, n % p.dirs, n), "wb"))
    f:write(data)
    f:close()
  end
  M.sh { "umount", mnt }
  M.detach(img)
  os.remove(mnt)
  local f = assert(io.open(img .. ".done", "w"))
  f:write(key, "\n")
  f:close()
  return img
end

function M.policy(dir, stages)
  local path = dir .. "/policy-" .. (stages and table.concat(stages, "-") or "default") .. ".lua"
  local words = {}
  for i, st in ipairs(stages or {}) do words[i] = ("%q"):format(st) end
  M.sh { "mkdir", "-p", dir }
  local f = assert(io.open(path, "w"))
  if stages then
    f:write(('return require("ntt").policy.extend("default", { stages = { %s } })\n'):format(table.concat(words, ", ")))
  else
    f:write('return require("ntt").policy.extend("default", {})\n')
  end
  f:close()
  return path
end

function M.median(list)
  local s = {}
  for i, v in ipairs(list) do s[i] = v end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

local function spread(list)
  local lo, hi = math.huge, -math.huge
  for _, v in ipairs(list) do lo, hi = math.min(lo, v), math.max(hi, v) end
  return lo, hi
end

function M.spread(list)
  local lo, hi = spread(list)
  return 100 * (hi - lo) / M.median(list)
end

function M.loadavg()
  local f = io.open("/proc/loadavg")
  local s = f and f:read("l") or "?"
  if f then f:close() end
  return (s:match("^(%S+ %S+ %S+)") or s)
end

-- Alternation spreads what drifts during a bench (other load, the page
-- cache, the destination's age) over every contender instead of charging
-- it to whichever always runs last.
function M.rounds(contenders, opts)
  opts = opts or {}
  local runs = opts.runs or M.num("NTT_BENCH_ROUNDS", 3)
  local say = opts.quiet and function() end or function(...) print(...) io.stdout:flush() end
  local res = { times = {}, out = {}, ratios = {}, cpu = {}, steal = {} }
  for _, c in ipairs(contenders) do
    res.times[c.name], res.out[c.name], res.cpu[c.name], res.steal[c.name] = {}, {}, {}, {}
  end
  local _, ncpu = M.cpu()
  for _, q in ipairs(opts.ratios or {}) do
    res.ratios[#res.ratios + 1] = { a = q[1], b = q[2], target = q.target, values = {} }
  end
  local n = #contenders
  for round = 1, runs do
    local order = {}
    for k = 0, n - 1 do
      local c = contenders[(round - 1 + k) % n + 1]
      order[#order + 1] = c.name
      if c.prepare then c.prepare(round) end
      local c0, _, s0 = M.cpu()
      local t0 = util.monotonic()
      local secs, out = c.run(round)
      local t = util.monotonic() - t0
      local c1, _, s1 = M.cpu()
      res.cpu[c.name][round], res.steal[c.name][round] = c1 - c0, s1 - s0
      if type(secs) == "number" then t = secs end
      if c.done then c.done(round) end
      res.times[c.name][round], res.out[c.name][round] = t, out
    end
    local words = {}
    for _, name in ipairs(order) do words[#words + 1] = ("%s %.2fs"):format(name, res.times[name][round]) end
    for _, q in ipairs(res.ratios) do
      q.values[round] = res.times[q.b][round] / res.times[q.a][round]
      words[#words + 1] = ("%s = %.2fx %s"):format(q.a, q.values[round], q.b)
    end
    say(("round %d/%d: %s"):format(round, runs, table.concat(words, ", ")))
  end
  for _, c in ipairs(contenders) do
    local ts = res.times[c.name]
    local lo, hi = spread(ts)
    local line = ("%-16s median %8.2f s (%.2f-%.2f), CPU %.2f s, steal %.2f s"):format(
      c.name, M.median(ts), lo, hi, M.median(res.cpu[c.name]), M.median(res.steal[c.name]))
    if opts.work then
      line = line .. ("  %10.1f %s (%.1f-%.1f)"):format(opts.work / M.median(ts), opts.unit or "/s",
                                                      opts.work / hi, opts.work / lo)
    end
    say(line)
  end
  for _, q in ipairs(res.ratios) do
    q.median = M.median(q.values)
    q.min, q.max = spread(q.values)
    local line = ("ratio %s vs %s (%s time / %s time): median %.2fx (%.2f-%.2f)"):format(
      q.a, q.b, q.b, q.a, q.median, q.min, q.max)
    if q.target then
      q.met = q.min >= q.target
      line = line .. ("; target >= %.2f in every run: %s"):format(q.target, q.met and "met" or "NOT met")
    end
    say(line)
    -- what the first contender's own CPU leaves this ratio on these cores
    local ta, ca, tb = M.median(res.times[q.a]), M.median(res.cpu[q.a]), M.median(res.times[q.b])
    say(("  %s: %s"):format(q.a, M.cpu_line(ta, ca, ncpu, tb)))
  end
  return res
end

return M
