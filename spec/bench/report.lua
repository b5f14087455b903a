-- spec/bench/report.lua: how fast ntt writes reports of a large medium, and
-- that its memory stays flat.
--
--   build/ntt spec/bench/report.lua      (NTT_BENCH_ENTRIES, default 1000000)
--
-- A medium of N entries (N/1000 directories of 999 files; every file
-- "skipped", so the JSON's list carries each of them) is put straight into
-- a private cluster under /var/tmp/ntt-bench-report (the report reads the
-- database only: how the rows got there does not matter), then
-- `ntt report --format dfxml` and `--format json` are timed, each in its own
-- process, at N/10 and N entries: fileobjects (entries) per second and the
-- writer's peak RSS (VmHWM), which must not grow with N.  For scale, `psql
-- \copy` of the same rows to a file is timed too (the database's own
-- fastest way out).
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local bench = dofile((arg[0]:match("^(.*)/[^/]+$") or ".") .. "/common.lua")

local N = bench.num("NTT_BENCH_ENTRIES", 1000000)
local WORK = "/var/tmp/ntt-bench-report"
local NTT = arg[-1] or "build/ntt"

util.setenv("NTT_HOME", WORK .. "/home")
util.setenv("NTT_DB_URL", nil)
bench.sh { "mkdir", "-p", WORK }

local db = require "ntt.db"
local conn = assert(db.connect { autostart = true, migrate = true })

-- A medium of n entries, made once and kept (named by n).
local function medium(n)
  local h = ("%016x"):format(0xbe7c0000 + n)
  local r = assert(conn:exec("SELECT enum_inodes FROM medium WHERE medium_hash = $1", h))
  if r[1] and r[1].enum_inodes == n then return h end
  io.write(("building a medium of %d entries ... "):format(n)) io.flush()
  local t0 = util.monotonic()
  assert(conn:exec("DELETE FROM medium WHERE medium_hash = $1", h))
  local it, pt = db.partition_names(h)
  conn:exec_script(("DROP TABLE IF EXISTS %s, %s"):format(pt, it))
  assert(conn:exec([[INSERT INTO medium (medium_hash, medium_human, kind, image_path, size)
                     VALUES ($1, $2, 'image', $3, $4)]], h, "bench-" .. n, WORK .. "/none.img", n * 4096))
  assert(db.ensure_partitions(conn, h))
  assert(conn:exec(([[INSERT INTO filesystem (medium_hash, fs_index, byte_offset, size, fstype)
                      VALUES ($1, 0, 1048576, $2, 'ext4')]]), h, n * 4096))
  assert(conn:exec_script(([[
    INSERT INTO %s (medium_hash, fs_index, ino, state, reason, size, mode, nlink, mtime_ns, fs_type, attempts, errors)
      SELECT '%s', 0, g, 'skipped', 'IO_ERROR_CONFIRMED', g %% 65536, 33188, 1, 1700000000000000000 + g, 'f', 10,
             '[{"err": "EIO", "msg": "read at byte 0: Input/output error"}]'::jsonb
        FROM generate_series(1, %d) g;
    INSERT INTO %s (medium_hash, fs_index, path, ino, parent_ino)
      SELECT '%s', 0, convert_to(format('d%%s/f%%s.dat', g / 1000, g %% 1000), 'UTF8'), g, 0 FROM generate_series(1, %d) g;
    UPDATE medium SET enum_done = now(), enum_inodes = %d WHERE medium_hash = '%s';
    ANALYZE %s; ANALYZE %s]]):format(it, h, n, pt, h, n, n, h, it, pt)))
  print(("%.0f s"):format(util.monotonic() - t0))
  return h
end

-- One writer process: seconds and its VmHWM (kB), from /usr/bin/time's %M.
local function timed(argv)
  local full = { "/usr/bin/time", "-f", "%M", table.unpack(argv) }
  local t0 = util.monotonic()
  local r = assert(proc.run { argv = full, timeout = 3600 })
  local secs = util.monotonic() - t0
  assert(r.code == 0, table.concat(argv, " ") .. " failed: " .. r.stderr)
  return secs, tonumber(r.stderr:match("(%d+)%s*$"))
end

local function one(n)
  local h = medium(n)
  local out = WORK .. "/out"
  print(("\n%d entries"):format(n))
  print(("%-8s %9s %14s %10s"):format("format", "seconds", "entries/s", "VmHWM kB"))
  for _, fmt in ipairs { "dfxml", "json" } do
    local s, hwm = timed { NTT, "report", "--format", fmt, "-o", out, h }
    print(("%-8s %9.2f %14.0f %10s"):format(fmt, s, n / s, tostring(hwm or "?")))
  end
  local _, pt = db.partition_names(h)
  local s = timed { NTT, "db", "psql", "-q", "-c", ("\\copy %s TO '%s'"):format(pt, out) }
  print(("%-8s %9.2f %14.0f %10s"):format("psql", s, n / s, "-"))
  os.remove(out)
end

local ok, err = pcall(function()
  one(math.max(1000, N // 10))
  one(N)
end)
conn:close()
proc.run { argv = { NTT, "db", "stop" }, timeout = 120 }
if not ok then io.stderr:write("report bench: ", tostring(err), "\n") os.exit(1) end
