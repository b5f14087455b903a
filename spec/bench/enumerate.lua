-- spec/bench/enumerate.lua: how fast ntt.core.walk enumerates, against find(1).
--
--   build/ntt spec/bench/enumerate.lua [--dir /var/tmp/ntt-bench-enum] [--threads N]
--
-- Needs root (loop mounts, dropping caches).  Builds once and then reuses,
-- under --dir, two ext4 images, loop-mounted while the bench runs:
--   files.img  ~50,000 files of 1-64 KiB in 500 directories
--   many.img   1,000,000 empty files in 1,000 directories (a fresh ext4, so
--              creating them is quick)
-- For each tree, warm (best of 3) and cold (caches dropped before each run;
-- best of 3 on the small tree, one run on the big one),
-- it times, each in its own child process:
--   find ROOT -printf '%y %i %n %s %T@ %p\0' > /dev/null
--   walk.count (records go nowhere), walk.to_file (zstd audit file),
--   a walk that builds the Lua record tables (Walker:next),
--   and "load": walk + binary COPY into PostgreSQL end to end (enumerate.load,
--   the enumerate stage's code, with a private cluster already running)
-- and prints entries/s, the ratio to find (> 1: faster than find), the
-- walker's peak RSS (VmHWM) and the CPU seconds the machine spent on it
-- (walker, kernel and database server; bench.cpu), with the ratio that
-- much CPU would leave the load on these cores at best.
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local bench = dofile((arg[0]:match("^(.*)/[^/]+$") or ".") .. "/common.lua")
local machine_cpu, cpu_line = bench.cpu, bench.cpu_line

local opts = { dir = "/var/tmp/ntt-bench-enum", threads = 4 }
do
  local i = 1
  while i <= #arg do
    local a = arg[i]
    if a == "--dir" then opts.dir = arg[i + 1]; i = i + 1
    elseif a == "--threads" then opts.threads = tonumber(arg[i + 1]); i = i + 1
    else io.stderr:write("usage: ntt spec/bench/enumerate.lua [--dir D] [--threads N]\n") os.exit(64) end
    i = i + 1
  end
end

if util.euid() ~= 0 then
  print("enumerate bench: skipped (needs root for loop mounts and drop_caches)")
  os.exit(0)
end

local NTT = arg[-1] or "build/ntt"

local sh = bench.sh

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end

local function is_mounted(dir)
  for l in io.lines("/proc/self/mounts") do
    if l:find(" " .. dir .. " ", 1, true) then return true end
  end
  return false
end

local mounted = {}
local function mount(img, dir, ro)
  sh { "mkdir", "-p", dir }
  if is_mounted(dir) then sh { "umount", dir } end
  sh { "mount", "-o", ro and "loop,ro" or "loop", img, dir }
  mounted[#mounted + 1] = dir
end

local function unmount_all()
  for i = #mounted, 1, -1 do proc.run { argv = { "umount", mounted[i] }, timeout = 120 } end
  mounted = {}
end

-- Builds (or reuses) an image; fill(root) populates it; a marker file says it is complete.
local function image(name, size, mkfs_extra, fill)
  local img, dir = opts.dir .. "/" .. name .. ".img", opts.dir .. "/" .. name
  if exists(img) then
    mount(img, dir, true)
    if exists(dir .. "/.complete") then return dir end
    sh { "umount", dir }
    mounted[#mounted] = nil
  end
  io.write("building ", img, " ... ") io.flush()
  local t0 = util.monotonic()
  sh { "rm", "-f", img }
  local argv = { "mkfs.ext4", "-q", "-F" }
  for _, a in ipairs(mkfs_extra) do argv[#argv + 1] = a end
  argv[#argv + 1] = img
  argv[#argv + 1] = size
  sh(argv)
  mount(img, dir, false)
  fill(dir)
  assert(io.open(dir .. "/.complete", "w")):close()
  sh { "umount", dir }
  mounted[#mounted] = nil
  mount(img, dir, true)
  print(("%.0f s"):format(util.monotonic() - t0))
  return dir
end

local function fill_files(root)
  local seed = 12345
  local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648 return seed % n end
  local chunk = ("0123456789abcdef"):rep(4096)   -- 64 KiB
  for d = 1, 500 do
    local dir = ("%s/dir%03d"):format(root, d)
    sh { "mkdir", dir }
    for f = 1, 100 do
      local fh = assert(io.open(("%s/file%03d.dat"):format(dir, f), "wb"))
      fh:write(chunk:sub(1, 1024 + rnd(63 * 1024 + 1)))
      fh:close()
    end
  end
end

local function fill_many(root)
  for d = 1, 1000 do
    local dir = ("%s/d%04d"):format(root, d)
    sh { "mkdir", dir }
    for f = 1, 999 do assert(io.open(("%s/f%04d"):format(dir, f), "w")):close() end
  end
end

local drop_caches = bench.drop_caches

-- The walker in a child; prints entries and VmHWM (kB).
local WALKER = [[
local walk = require "ntt.core.walk"
local mode, root, out, threads = arg[1], arg[2], arg[3], tonumber(arg[4])
local r
if mode == "count" then
  r = assert(walk.count(root, { threads = threads }))
elseif mode == "to_file" then
  r = assert(walk.to_file(root, out, { threads = threads }))
elseif mode == "load" then
  -- walk + load end to end: binary COPY into PostgreSQL, partitions filled,
  -- committed and analysed, as the enumerate stage does
  local db = require "ntt.db"
  local enumerate = require "ntt.enumerate"
  local util = require "ntt.core.util"
  local conn = assert(db.connect { autostart = true })
  assert(db.migrate(conn))
  local h = ("%016x%016x"):format(util.pid(), math.floor(util.now() * 1e6))
  assert(conn:exec("INSERT INTO medium (medium_hash, kind, image_path) VALUES ($1, 'directory', $2)", h, root))
  local s = assert(enumerate.load(conn, h, { { fs_index = 0, root = root } }, { threads = threads }))
  conn:close()
  r = { entries = s.entries, stalled = false, error_count = s.error_count, medium = h }
elseif mode == "drop" then
  -- the bench's own bookkeeping, after the timed load: not part of it
  local db = require "ntt.db"
  local conn = assert(db.connect {})
  local h = root
  local i, p = db.partition_names(h)
  assert(conn:exec("DELETE FROM medium WHERE medium_hash = $1", h))
  assert(conn:exec("DROP TABLE " .. p))
  assert(conn:exec("DROP TABLE " .. i))
  conn:close()
  os.exit(0)
else
  local w = assert(walk.open(root, { threads = threads }))
  local n = 0
  while true do
    local b = w:next()
    if not b then break end
    n = n + #b
  end
  r = w:result()
  w:close()
  assert(n == r.entries)
end
assert(not r.stalled and r.error_count == 0, "walk reported problems")
local hwm
for l in io.lines("/proc/self/status") do hwm = hwm or l:match("^VmHWM:%s*(%d+)") end
io.write(r.entries, " ", hwm, " ", r.medium or "", "\n")
]]
local script = opts.dir .. "/walker.lua"
-- the load mode's database: a private cluster under the bench directory
util.setenv("NTT_HOME", opts.dir .. "/home")
util.setenv("NTT_DB_URL", nil)

-- -> seconds, stdout, the machine's CPU seconds meanwhile (bench.cpu: the
-- database server's work counts)
local function timed(argv, stdout)
  local t0, c0 = util.monotonic(), machine_cpu()
  local r
  if stdout == "null" then
    local p = assert(proc.spawn { argv = argv, stdout = "null" })
    local how, code = p:wait()
    assert(how == "exit" and code == 0, table.concat(argv, " ") .. " failed")
    r = { stdout = "" }
  else
    r = sh(argv)
  end
  return util.monotonic() - t0, r.stdout, machine_cpu() - c0
end

local function run_find(root)
  local secs, _, cpu = timed({ "find", root, "-printf", "%y %i %n %s %T@ %p\\0" }, "null")
  return secs, nil, nil, cpu
end

local function run_walker(mode, root)
  local secs, out, cpu = timed { NTT, script, mode, root, opts.dir .. "/audit.zst", tostring(opts.threads) }
  local n, hwm, medium = out:match("^(%d+) (%d+) ?(%x*)")
  if medium and medium ~= "" then sh { NTT, script, "drop", medium, "-", "1" } end
  return secs, tonumber(n), tonumber(hwm), cpu
end

local function bench(label, root)
  local _, entries = run_walker("count", root)   -- also warms the caches
  print(("\n%s: %s, %d entries, walker threads=%d"):format(label, root, entries, opts.threads))
  print(("%-6s %-10s %9s %12s %8s %10s %8s"):format("cache", "tool", "seconds", "entries/s", "vs find", "VmHWM kB",
                                                   "CPU s"))
  local _, ncpu = machine_cpu()
  for _, cache in ipairs { "warm", "cold" } do
    local rounds = (cache == "warm" or entries < 200000) and 3 or 1
    local function measure(fn)
      local best, hwm, cpu
      for _ = 1, rounds do
        if cache == "cold" then drop_caches() end
        local s, _, h, c = fn()
        if not best or s < best then best, hwm, cpu = s, h, c end
      end
      return best, hwm, cpu
    end
    local tf, _, cf = measure(function() return run_find(root) end)
    print(("%-6s %-10s %9.3f %12.0f %8s %10s %8.2f"):format(cache, "find", tf, entries / tf, "1.00x", "-", cf))
    for _, mode in ipairs { "count", "to_file", "lua", "load" } do
      local s, hwm, cpu = measure(function() return run_walker(mode, root) end)
      print(("%-6s %-10s %9.3f %12.0f %7.2fx %10d %8.2f"):format(cache, mode, s, entries / s, tf / s, hwm, cpu))
      -- the machine's CPU (the server's too) over its cores: how fast the
      -- same work could go here at best
      if mode == "load" then print(("       load: %s"):format(cpu_line(s, cpu, ncpu, tf))) end
    end
  end
end

sh { "mkdir", "-p", opts.dir }
do
  local f = assert(io.open(script, "w"))
  f:write(WALKER)
  f:close()
end
local ok, err = pcall(function()
  local files = image("files", "3G", {}, fill_files)
  local many = image("many", "3G", { "-N", "1100000", "-I", "128" }, fill_many)
  sh { NTT, "db", "start" }
  bench("files (1-64 KiB)", files)
  bench("1M empty files", many)
end)
unmount_all()
proc.run { argv = { NTT, "db", "stop" }, timeout = 120 }
os.remove(opts.dir .. "/audit.zst")
if not ok then io.stderr:write("enumerate bench: ", tostring(err), "\n") os.exit(1) end
