-- spec/bench/reader.lua: a FAT32 image read through the Sleuth Kit reader
-- (ntt-tskfs, started by the mount helper where the kernel has no vfat)
-- against `mcopy -s` of the same image, in one run.
--
--   build/ntt spec/bench/reader.lua     (root: loop devices, drop_caches)
--
-- A 20,000-file FAT32 image (512 B - 8 KiB files in 100 directories,
-- NTT_BENCH_READER_FILES to change) goes through `ntt run
-- policies/default.lua` (the whole pipeline, database included, the
-- private cluster already started) and, as the peer, `mcopy -s` of the
-- image's root into a fresh directory.  Each writes into a freshly made
-- ext4 image and starts with a cold page cache.  Prints files/s and the
-- ratio.  When the kernel has vfat, the kernel mounts the image and the
-- figures say so (the reader is the fallback).
local util = require "ntt.core.util"
local proc = require "ntt.core.proc"
local json = require "ntt.json"
local bench = dofile((arg[0]:match("^(.*)/[^/]+$") or ".") .. "/common.lua")

local NFILES = bench.num("NTT_BENCH_READER_FILES", 20000)
local NDIRS = 100
local MIN, MAX, SEED = 512, 8192, 11   -- file sizes, math.randomseed
local WORK = os.getenv("NTT_BENCH_READER_DIR") or "/var/tmp/ntt-bench-reader"
local NTT = bench.self()
local SOURCE = arg[0]:match("^(.*)/spec/bench/reader%.lua$") or "."
local POLICY = SOURCE .. "/policies/default.lua"
local MTOOLS = { "env", "MTOOLS_SKIP_CHECK=1", "LC_ALL=C.UTF-8" }
-- a mount root of its own: specs running meanwhile unmount what is under /run/ntt/mnt
local MOUNT_ROOT = WORK .. "/mnt"

local function sh(argv, may_fail) return bench.sh(argv, may_fail, 7200) end

local function with_env(prefix, argv)
  local out = {}
  for _, a in ipairs(prefix) do out[#out + 1] = a end
  for _, a in ipairs(argv) do out[#out + 1] = a end
  return out
end

local function release(name)
  sh({ "umount", WORK .. "/" .. name }, true)
  bench.detach(WORK .. "/" .. name .. ".img")
end

local function fresh(name, size_mb)
  release(name)
  local mnt = bench.fresh_ext4(WORK .. "/" .. name .. ".img", WORK .. "/" .. name, size_mb)
  sh { "chmod", "0755", mnt }
  return mnt
end

-- The FAT32 image, built once per shape (mkfs.vfat, then mcopy -s of a
-- tree): its name carries every parameter of the tree, so a changed one
-- builds its own.
local function fixture()
  local img = ("%s/fat32-files%d-dirs%d-size%d-%d-seed%d.img"):format(WORK, NFILES, NDIRS, MIN, MAX, SEED)
  local done = io.open(img .. ".done")
  if done then done:close() return img end
  sh { "mkdir", "-p", WORK }
  local tree = WORK .. "/tree"
  sh { "rm", "-rf", tree }
  local rnd = assert(io.open("/dev/urandom", "rb"))
  local pool = rnd:read(4 * 1048576)
  rnd:close()
  math.randomseed(SEED)
  for d = 0, NDIRS - 1 do sh { "mkdir", "-p", ("%s/dir%03d"):format(tree, d) } end
  for n = 1, NFILES do
    local len = math.random(MIN, MAX)
    local off = math.random(0, #pool - len)
    local f = assert(io.open(("%s/dir%03d/file%06d.dat"):format(tree, n % NDIRS, n), "wb"))
    f:write(pool:sub(off + 1, off + len - 16), ("%016d"):format(n))
    f:close()
  end
  os.remove(img)
  sh { "mkfs.vfat", "-C", "-F", "32", "-n", "BENCH", img, tostring((NFILES * 12 // 1024 + 64) * 1024) }
  local argv = { "mcopy", "-s", "-m", "-i", img }
  for d = 0, NDIRS - 1 do argv[#argv + 1] = ("%s/dir%03d"):format(tree, d) end
  argv[#argv + 1] = "::/"
  sh(with_env(MTOOLS, argv))
  sh { "rm", "-rf", tree }
  local f = assert(io.open(img .. ".done", "w")); f:close()
  return img
end

local function main()
  if util.euid() ~= 0 then print("reader bench: needs root; skipped") return end
  local img = fixture()
  local size_mb = NFILES * 16 // 1024 + 512
  -- Peer: mcopy -s of the image's root into a fresh directory.
  local dst = fresh("dst", size_mb)
  bench.drop_caches()
  local t0 = util.monotonic()
  sh(with_env(MTOOLS, { "mcopy", "-s", "-m", "-n", "-i", img, "::/", dst .. "/copy" }))
  sh { "sync" }
  local t_mcopy = util.monotonic() - t0
  release("dst")
  -- The reader alone: list and read every file through the mount, cold.
  util.setenv("NTT_MOUNT_ROOT", MOUNT_ROOT)
  local mount = require "ntt.mount"
  local h = ("%016x"):format(NFILES) .. "0b"
  mount.unmount(h, img)
  local res = assert(mount.mount(h, img))
  local root = assert(mount.roots_of(res)[1], "nothing mounted")
  bench.drop_caches()
  t0 = util.monotonic()
  sh { "sh", "-c", "find '" .. root.root .. "' -type f -print0 | xargs -0 -P 4 -n 200 cat > /dev/null" }
  local t_read = util.monotonic() - t0
  mount.unmount(h, img)
  -- ntt: the whole pipeline through the reader, data root on a fresh image.
  local home = fresh("home", size_mb + 512)
  sh { "env", "NTT_HOME=" .. home, NTT, "db", "start" }
  bench.drop_caches()
  t0 = util.monotonic()
  local r = assert(proc.run { argv = { NTT, "run", "-q", POLICY, img }, env = { NTT_HOME = home, NTT_DB_URL = false,
                                                                             NTT_MOUNT_ROOT = MOUNT_ROOT },
                              timeout = 7200 })
  local t_ntt = util.monotonic() - t0
  if r.code ~= 0 then error("ntt run exited " .. tostring(r.code) .. ": " .. r.stderr) end
  local stats, stages, driver = {}, {}, "?"
  for line in io.lines(home .. "/log/ops.jsonl") do
    local e = json.decode(line)
    if e and e.event == "copied" then stats = e end
    if e and e.event == "stage_done" then stages[#stages + 1] = ("%s %.2fs"):format(e.stage, e.seconds) end
  end
  local kernel_vfat = io.open("/proc/filesystems"):read("a"):find("\tvfat\n", 1, true)
  driver = kernel_vfat and "kernel vfat" or "ntt-tskfs"
  sh { "env", "NTT_HOME=" .. home, NTT, "db", "stop" }
  release("home")
  if stats.files and stats.files ~= NFILES then
    error(("reader: ntt copied %d files, the image has %d"):format(stats.files, NFILES))
  end
  print(("reader: %d files on FAT32, read by %s; stages: %s"):format(NFILES, driver, table.concat(stages, ", ")))
  print(("files/s: ntt run %.0f (%.2f s), mcopy -s %.0f (%.2f s); ratio %.2f"):format(
    NFILES / t_ntt, t_ntt, NFILES / t_mcopy, t_mcopy, t_mcopy / t_ntt))
  print(("files/s reading through %s alone (find + 4 x cat): %.0f (%.2f s); ratio to mcopy -s %.2f"):format(
    root.driver or "?", NFILES / t_read, t_read, t_mcopy / t_read))
end

main()
