-- examples/demo.lua: the built-in demo (`make demo`).
--
-- Builds a small shelf of real disk images with the system's own tools --
-- a clean two-partition hard disk, a FAT floppy, a floppy image cut short
-- mid-data, an ext4 image with a ddrescue mapfile marking a hole, an
-- erased floppy, a CD-ROM -- then runs the real `ntt run
-- policies/default.lua` over the folder (private PostgreSQL included) and
-- shows `ntt status` and what was recorded.  Needs root (loop devices).
-- Everything lives under $NTT_HOME (default: ./demo-home).
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local fs = require "ntt.core.fs"

local source = arg[0]:match("^(.*)/examples/demo%.lua$") or "."
package.path = source .. "/?.lua;" .. package.path
local images = require "spec.support.images"
local helper = require "spec.support.helper"

if util.euid() ~= 0 then
  io.stderr:write("demo: needs root (it loop-mounts its images read-only)\n")
  os.exit(2)
end
local home = os.getenv("NTT_HOME")
if not home or home == "" then
  local pwd = assert(fs.realpath("."))
  home = pwd .. "/demo-home"
  util.setenv("NTT_HOME", home)
end
local shelf = home .. "/images"
assert(fs.mkdirp(shelf))

local function say(...) io.stdout:write(...); io.stdout:write("\n"); io.stdout:flush() end

say("demo: building images in ", shelf)
local MiB = images.MiB
-- 1. A hard disk with two ext4 partitions; odd names on purpose.
local p1 = images.ext(shelf .. "/.p1", { size_mb = 8, label = "SYSTEM", files = {
  ["README.TXT"] = "Backup of the office PC, 1998.\n",
  ["letters/an\nnual report.doc"] = ("annual report "):rep(500),
  ["letters/Icon\r"] = "HFS+ style name ending in CR\n",
  ["letters/\xe9t\xe9.txt"] = "latin-1 name, not UTF-8\n",
  ["letters/macro\\n.plist"] = "backslash followed by n\n",
  ["data/table.csv"] = ("1,2,3\n"):rep(4000) } })
local p2 = images.ext(shelf .. "/.p2", { size_mb = 8, label = "DATA", files = {
  ["photos/cat.raw"] = ("\x10\x20\x30\x40"):rep(30000),
  ["copy-of-table.csv"] = ("1,2,3\n"):rep(4000),          -- the same content as on p1
  ["empty.txt"] = "" } })
images.mbr(shelf .. "/harddisk.img", { size_mb = 20, parts = {
  { start_mb = 1, size_mb = 8, image = p1 }, { start_mb = 10, size_mb = 8, image = p2 } } })
os.remove(p1); os.remove(p2)
-- 2. A FAT floppy, read through the FUSE driver (this kernel has no vfat).
images.fat(shelf .. "/floppy-ok.img", { kb = 1440, files = {
  ["LETTER.TXT"] = "Dear archivist,\n", ["BUDGET.WK1"] = ("$"):rep(20000) } })
-- 3. A floppy whose image stops mid-data (the drive gave up).
local files = {}
for i = 1, 10 do files[("SCAN%02d.TIF"):format(i)] = (string.char(64 + i)):rep(100 * 1024) end
images.fat(shelf .. "/floppy-cut.img", { kb = 1440, files = files })
images.truncate(shelf .. "/floppy-cut.img", 600 * 1024)
-- 4. An ext4 image with a ddrescue mapfile: one area was never rescued.
local rfiles = {}
for i = 1, 6 do rfiles[("part%d.dat"):format(i)] = (string.char(96 + i)):rep(300 * 1024) end
images.ext(shelf .. "/zipdisk.img", { size_mb = 8, block = 4096, files = rfiles })
local blocks = helper.sh { "debugfs", "-R", "blocks /part4.dat", shelf .. "/zipdisk.img" }
local first = tonumber(blocks.stdout:match("%d+")) * 4096
images.mapfile(shelf .. "/zipdisk.map", { { 0, first + 65536, "+" }, { first + 65536, 8192, "-" },
                                          { first + 73728, 8 * MiB - first - 73728, "+" } })
-- 5. An erased floppy: every byte 0xf6.
helper.write(shelf .. "/floppy-erased.img", ("\xf6"):rep(1474560))
-- 6. A CD-ROM (ISO 9660, read through fuseiso).
images.iso(shelf .. "/cdrom.iso", { label = "PHOTOS98", files = {
  ["INDEX.HTM"] = "<html>photos</html>\n", ["IMG/0001.JPG"] = ("\xff\xd8"):rep(5000) } })

local ntt_bin = arg[-1] or "ntt"
local i = -1
while arg[i - 1] do i = i - 1 end
ntt_bin = arg[i]

say("demo: ntt run ", source, "/policies/default.lua ", shelf)
local r = assert(proc.run { argv = { ntt_bin, "run", "-v", source .. "/policies/default.lua", shelf },
                            stderr = "stdout", timeout = 1800 })
io.stdout:write(r.stdout)
say(("demo: ntt run exited %s (0: all clean; 1: finished, with problems recorded)"):format(tostring(r.code)))
say("\ndemo: ntt status")
io.stdout:write(assert(proc.run { argv = { ntt_bin, "status" }, timeout = 120 }).stdout)
say("\ndemo: diagnostic events by action (the seed's query, unchanged)")
io.stdout:write(assert(proc.run { argv = { ntt_bin, "db", "psql", "-c", [[
SELECT event->>'action' as action, COUNT(*) as count
FROM medium, jsonb_array_elements(problems->'diagnostic_events') as event
GROUP BY 1 ORDER BY 2 DESC;]] }, timeout = 60 }).stdout)
say("demo: the store is in ", home, "/store, the logs in ", home, "/log")
os.exit((r.code == 0 or r.code == 1) and 0 or 1)
