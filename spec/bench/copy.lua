-- spec/bench/copy.lua: the copy engine against its peers, in one run.
--
--   build/ntt spec/bench/copy.lua        (root: loop devices, drop_caches)
--
-- Fixtures live in a loop-mounted ext4 image: NTT_BENCH_FILES small files
-- (default 50000, 1-64 KiB, ~20% duplicate content) in NTT_BENCH_DIRS
-- directories (default 500) and NTT_BENCH_BIG files of 256 MiB (default 3).
-- Every contender writes into a freshly made ext4 image (on a direct-I/O
-- loop device) and starts with a cold page cache.  Like with like:
--   small files: ntt (durability batch) against cp -a, rsync -a, and
--                rsync -a then b3sum of the copies (the hashes too);
--   large files: ntt at durability batch against cp -a; sync and
--                rsync -a; sync, ntt at durability none against cat.
-- NTT_BENCH_ROUNDS rounds (default 3), contenders alternated; prints each
-- time and the machine's CPU seconds meanwhile, then files/s or MB/s, the
-- ratios of each round as median (min-max), and the ratio ntt's CPU would
-- leave it at best on this machine's cores.
local util = require "ntt.core.util"
local store = require "ntt.core.store"
local copy = require "ntt.core.copy"
local fs = require "ntt.core.fs"
local concurrency = require "ntt.concurrency"
local bench = dofile((arg[0]:match("^(.*)/[^/]+$") or ".") .. "/common.lua")

local NFILES = bench.num("NTT_BENCH_FILES", 50000)
local NDIRS = bench.num("NTT_BENCH_DIRS", 500)
local NBIG = bench.num("NTT_BENCH_BIG", 3)
local BIG = 256 * 1048576
local WORK = os.getenv("NTT_BENCH_DIR") or "/var/tmp/ntt-bench-copy"
local NTT = arg and arg[-1] or "build/ntt"
local DURABILITY = os.getenv("NTT_BENCH_DURABILITY") or "batch"
local THREADS = bench.num("NTT_BENCH_THREADS")
local BATCH = bench.num("NTT_BENCH_BATCH", 5000)
-- NTT_BENCH_ONLY=ntt,big: run only the contenders whose names contain one
-- of these words (the ratios then use the figures that were measured).
local ONLY = os.getenv("NTT_BENCH_ONLY")

local sh, drop_caches, timed = bench.sh, bench.drop_caches, bench.timed

local mounted = {}
local function mount_image(img, mnt, opts)
  sh { "mkdir", "-p", mnt }
  sh { "mount", "-o", "loop," .. opts, img, mnt }
  mounted[#mounted + 1] = mnt
end
local function umount(mnt)
  sh({ "umount", mnt }, true)
  for i, m in ipairs(mounted) do if m == mnt then table.remove(mounted, i) break end end
end

-- The destination's loop device does direct I/O (bench.fresh_ext4): a
-- buffered one halves the write speed of a copier that syncs (ntt at its
-- default durability: 245 vs 472 MB/s measured here).
local DEST_IMG = WORK .. "/dst.img"
local detach = bench.detach
local function fresh_dest(size_mb)
  local mnt = WORK .. "/dst"
  umount(mnt)
  detach(DEST_IMG)
  bench.fresh_ext4(DEST_IMG, mnt, size_mb)
  mounted[#mounted + 1] = mnt
  return mnt
end

-- ---- fixtures ----
-- The stamp names the fixture's whole shape: a kept image (NTT_BENCH_KEEP)
-- is reused only for the same files, directories and big files.
local function make_fixtures()
  local img, mnt = WORK .. "/src.img", WORK .. "/src"
  local shape = ("files=%d dirs=%d big=%dx%d sizes=1024-65536 dup=0.2 seed=42\n"):format(NFILES, NDIRS, NBIG, BIG)
  local stamp = io.open(WORK .. "/src.done")
  if stamp then
    local had = stamp:read("a")
    stamp:close()
    if had == shape then return img end
    os.remove(WORK .. "/src.done")
  end
  sh { "mkdir", "-p", WORK }
  os.remove(img)
  local total_mb = math.ceil((NFILES * 34 * 1024 + NBIG * BIG) / 1048576 * 1.3) + 256
  sh { "truncate", "-s", total_mb .. "M", img }
  sh { "mkfs.ext4", "-q", "-F", img }
  mount_image(img, mnt, "rw")
  local rnd = assert(io.open("/dev/urandom", "rb"))
  local pool = rnd:read(8 * 1048576)
  math.randomseed(42)
  local made = {}
  for d = 0, NDIRS - 1 do sh { "mkdir", "-p", ("%s/small/d%03d"):format(mnt, d) } end
  for i = 1, NFILES do
    local data
    if #made > 10 and math.random() < 0.2 then
      data = made[math.random(#made)]
    else
      local n = math.random(1024, 65536)
      local off = math.random(0, #pool - n)
      data = pool:sub(off + 1, off + n - 16) .. ("%016d"):format(i)
      if #made < 2000 then made[#made + 1] = data else made[math.random(#made)] = data end
    end
    local f = assert(io.open(("%s/small/d%03d/f%06d"):format(mnt, i % NDIRS, i), "wb"))
    f:write(data)
    f:close()
  end
  sh { "mkdir", "-p", mnt .. "/big" }
  for b = 1, NBIG do
    local f = assert(io.open(("%s/big/big%d"):format(mnt, b), "wb"))
    for _ = 1, BIG // #pool do f:write(rnd:read(#pool)) end
    f:close()
  end
  rnd:close()
  umount(mnt)
  local f = assert(io.open(WORK .. "/src.done", "w"))
  f:write(shape)
  f:close()
  return img
end

-- The items of a subtree (enumeration is another stage: not timed), in
-- inode order as the copy stage claims them (NTT_BENCH_ORDER=find keeps
-- readdir order).
local function items_of(root, sub)
  local r = sh { "find", root .. "/" .. sub, "-type", "f", "-printf", "%s\t%i\t%P\n" }
  local items = {}
  for size, ino, rel in r.stdout:gmatch("(%d+)\t(%d+)\t([^\n]+)") do
    items[#items + 1] = { root = root, path = sub .. "/" .. rel, size = tonumber(size), ino = tonumber(ino) }
  end
  if os.getenv("NTT_BENCH_ORDER") ~= "find" then
    table.sort(items, function(a, b) return a.ino < b.ino end)
  end
  return items
end

-- Batches as the copy stage runs them (policies/default.lua: claims of
-- 5000): a batch's reads start as soon as the previous batch has read its
-- last source, while that one still commits (syncfs, renames, syncfs).
local function ntt_copy(items, threads, dest)
  local st = assert(store.open(dest .. "/store"))
  local failed, prev = 0, nil
  local function collect(job)
    for _, r in ipairs(job:wait()) do
      if not r.ok then failed = failed + 1 end
    end
  end
  for i = 1, #items, BATCH do
    local part = table.move(items, i, math.min(#items, i + BATCH - 1), 1, {})
    if prev then prev:wait_reads() end
    local job = copy.start(st, part, { threads = threads, durability = DURABILITY })
    if prev then collect(prev) end
    prev = job
  end
  if prev then collect(prev) end
  st:close()
  assert(failed == 0, failed .. " files failed")
end

-- Rounds: every contender once per round, the order turned by one each
-- round (so none always runs first, after mkfs, or last); a ratio is taken
-- within one round, then the median and spread of the three are printed.
local ROUNDS = bench.num("NTT_BENCH_ROUNDS", 3)

local median = bench.median

-- "median (min-max)" of xs formatted with fmt, or "-".
local function spread(xs, fmt)
  if #xs == 0 then return "-" end
  return (fmt .. " (" .. fmt .. "-" .. fmt .. ")"):format(median(xs), math.min(table.unpack(xs)),
                                                            math.max(table.unpack(xs)))
end

local function main()
  if util.euid() ~= 0 then
    print("copy bench: needs root (loop devices, drop_caches); skipped")
    return
  end
  local img = make_fixtures()
  local src = WORK .. "/src"
  mount_image(img, src, "ro,noload")
  local small = items_of(src, "small")
  local big = items_of(src, "big")
  local dest_mb = math.ceil((NFILES * 34 * 1024 + NBIG * BIG) / 1048576 * 1.5) + 512
  local threads = THREADS or concurrency.default(assert(fs.probe(src)))
  print(("fixtures: %d small files in %d dirs, %d x 256 MiB; ntt threads %d, durability %s; %d rounds, load %s"):format(
    #small, NDIRS, #big, threads, DURABILITY, ROUNDS, bench.loadavg()))

  local function wanted(name)
    if not ONLY then return true end
    for w in ONLY:gmatch("[^,]+") do if name:find(w, 1, true) then return true end end
    return false
  end
  -- One contender: a fresh destination, a cold cache, its seconds; the
  -- machine's CPU seconds meanwhile (bench.cpu) go to cpus[name].
  local cpus = {}
  local _, ncpu = bench.cpu()
  local function run(name, fn)
    local dst = fresh_dest(dest_mb)
    drop_caches()
    local c0, _, s0 = bench.cpu()
    local t = timed(function() fn(dst) end)
    local c1, _, s1 = bench.cpu()
    cpus[name] = cpus[name] or {}
    table.insert(cpus[name], c1 - c0)
    print(("  %-26s %8.2f s, CPU %6.2f s, steal %5.2f s"):format(name, t, c1 - c0, s1 - s0))
    umount(dst)
    detach(DEST_IMG)
    return t
  end
  -- Runs the contenders { {name, fn}, ... } for ROUNDS rounds; -> times[name] = { s, ... }
  local function rounds(list)
    local times = {}
    local kept = {}
    for _, c in ipairs(list) do
      if wanted(c[1]) then kept[#kept + 1] = c; times[c[1]] = {} end
    end
    for r = 1, ROUNDS do
      print(("round %d (load %s)"):format(r, bench.loadavg():match("^%S+")))
      for k = 0, #kept - 1 do
        local c = kept[(k + r - 1) % #kept + 1]
        local t = run(c[1], c[2])
        table.insert(times[c[1]], t)
      end
    end
    return times
  end
  -- Per-round ratios peer/ntt (> 1: ntt is faster), "median (min-max)".
  local function ratios(times, ntt, peer)
    local a, b = times[ntt], times[peer]
    if not (a and b) then return "-" end
    local rs = {}
    for i = 1, math.min(#a, #b) do rs[i] = b[i] / a[i] end
    return spread(rs, "%.2f")
  end
  local function rates(times, name, amount, fmt)
    local xs = {}
    for i, t in ipairs(times[name] or {}) do xs[i] = amount / t end
    return spread(xs, fmt)
  end

  local smalldir = src .. "/small"
  local st = rounds {
    { "ntt small", function(dst) ntt_copy(small, threads, dst) end },
    { "cp -a small", function(dst) sh { "cp", "-a", smalldir, dst .. "/" } end },
    { "rsync -a small", function(dst) sh { "rsync", "-a", smalldir .. "/", dst .. "/small/" } end },
    -- what a user does to have the hashes too: copy, then hash the copies
    { "rsync -a+b3sum small", function(dst)
        sh { "rsync", "-a", smalldir .. "/", dst .. "/small/" }
        sh { "sh", "-c", 'find "$0" -type f -print0 | xargs -0 b3sum >/dev/null', dst .. "/small" }
      end },
  }
  local n = #small
  print(("small files/s, median (min-max): ntt %s, cp -a %s, rsync -a %s, rsync -a+b3sum %s"):format(
    rates(st, "ntt small", n, "%.0f"), rates(st, "cp -a small", n, "%.0f"), rates(st, "rsync -a small", n, "%.0f"),
    rates(st, "rsync -a+b3sum small", n, "%.0f")))
  print(("small ratios (same round), median (min-max): ntt/cp -a %s (target >= 2.5), ntt/rsync -a %s (target >= 1.5), ntt/(rsync -a+b3sum) %s"):format(
    ratios(st, "ntt small", "cp -a small"), ratios(st, "ntt small", "rsync -a small"),
    ratios(st, "ntt small", "rsync -a+b3sum small")))
  -- what ntt's own CPU leaves those ratios on these cores at best
  local function ceiling(times, name, peer)
    if not (cpus[name] and times[peer] and #times[peer] > 0) then return end
    print(("  %s: %s (%s)"):format(name, bench.cpu_line(median(times[name]), median(cpus[name]), ncpu,
                                                         median(times[peer])), peer))
  end
  ceiling(st, "ntt small", "cp -a small")

  if #big > 0 then
    local bytes = 0
    local paths = {}
    for i, it in ipairs(big) do bytes = bytes + it.size; paths[i] = src .. "/" .. it.path end
    local function with(mode, fn)
      return function(dst)
        local saved = DURABILITY
        DURABILITY = mode
        local ok, e = pcall(fn, dst)
        DURABILITY = saved
        if not ok then error(e, 0) end
      end
    end
    local cat = { "sh", "-c", 'exec cat "$@" >/dev/null', "cat", table.unpack(paths) }
    local cp = { "cp", "-a", table.unpack(paths) }
    cp[#cp + 1] = "DST"
    local rs = { "rsync", "-a", table.unpack(paths) }
    rs[#rs + 1] = "DST"
    local function to(argv, dst)
      local a = table.move(argv, 1, #argv, 1, {})
      a[#a] = dst .. "/"
      return a
    end
    local bt = rounds {
      { "ntt big", with("batch", function(dst) ntt_copy(big, 1, dst) end) },
      { "cp -a; sync big", function(dst) sh(to(cp, dst)); sh { "sync", "-f", dst } end },
      { "rsync -a; sync big", function(dst) sh(to(rs, dst)); sh { "sync", "-f", dst } end },
      { "ntt big, durability none", with("none", function(dst) ntt_copy(big, 1, dst) end) },
      { "cat big", function() sh(cat) end },
    }
    local mb = bytes / 1e6
    print(("large MB/s, median (min-max): ntt batch %s, cp -a; sync %s, rsync -a; sync %s, ntt none %s, cat %s"):format(
      rates(bt, "ntt big", mb, "%.0f"), rates(bt, "cp -a; sync big", mb, "%.0f"),
      rates(bt, "rsync -a; sync big", mb, "%.0f"), rates(bt, "ntt big, durability none", mb, "%.0f"),
      rates(bt, "cat big", mb, "%.0f")))
    print(("large ratios (same round), median (min-max): batch/(cp -a; sync) %s (target >= 1.0), batch/(rsync -a; sync) %s, none/cat %s (target >= 0.9)"):format(
      ratios(bt, "ntt big", "cp -a; sync big"), ratios(bt, "ntt big", "rsync -a; sync big"),
      ratios(bt, "ntt big, durability none", "cat big")))
    ceiling(bt, "ntt big", "cp -a; sync big")
  end
  if #big > 0 and wanted("hash") then
    -- Hashing alone, warm cache.
    local f1 = src .. "/" .. big[1].path
    sh { NTT, "hash", f1 }
    local best_n, best_b = math.huge, math.huge
    for _ = 1, 5 do
      best_n = math.min(best_n, (timed(function() sh { NTT, "hash", f1 } end)))
      best_b = math.min(best_b, (timed(function() sh { "b3sum", "--num-threads", "1", f1 } end)))
    end
    print(("hash MB/s: ntt hash %.0f, b3sum --num-threads 1 %.0f, ratio %.2f (target >= 0.9)"):format(
      big[1].size / best_n / 1e6, big[1].size / best_b / 1e6, best_b / best_n))
  end
  umount(src)
end

local ok, err = pcall(main)
for i = #mounted, 1, -1 do sh({ "umount", mounted[i] }, true) end
detach(DEST_IMG)
if os.getenv("NTT_BENCH_KEEP") ~= "1" then sh({ "rm", "-rf", "--one-file-system", WORK }, true) end
if not ok then error(err, 0) end
