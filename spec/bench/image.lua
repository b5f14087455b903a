-- spec/bench/image.lua: the image stage (`ntt run` of a policy whose one
-- stage is image, one ddrescue phase) against plain `ddrescue` with the same
-- options, of the same device, in one run.
--
--   build/ntt spec/bench/image.lua     (root: loop devices, drop_caches)
--
-- A NTT_BENCH_IMAGE_MB (default 512) MiB source of varied bytes is written
-- once under NTT_BENCH_DIR (default /var/tmp/ntt-bench-image) and attached
-- read-only as a loop device: the "disk".  Both write their image and map
-- into one fresh ext4 image (bench.fresh_ext4), with the page cache dropped
-- before each run, alternately, best of NTT_BENCH_ROUNDS (default 3).  The
-- stage's time is the whole `ntt run` (database, device facts, the phase,
-- its records); between rounds its imaging rows are deleted, so every
-- round images the device again.  Prints MB/s and the ratio ddrescue time /
-- ntt time (1.0: the stage costs nothing beyond ddrescue's own work).
local fs = require "ntt.core.fs"
local util = require "ntt.core.util"
local bench = dofile((arg[0]:match("^(.*)/[^/]+$") or ".") .. "/common.lua")

local MB = bench.num("NTT_BENCH_IMAGE_MB", 512)
local ROUNDS = bench.num("NTT_BENCH_ROUNDS", 3)
local WORK = os.getenv("NTT_BENCH_DIR") or "/var/tmp/ntt-bench-image"
local MiB = 1048576
local ARGS = { "--idirect", "--no-trim", "--no-scrape", "--cluster-size=128" }

local sh, drop_caches, timed = bench.sh, bench.drop_caches, bench.timed

local function main()
  sh { "mkdir", "-p", WORK }
  local src = WORK .. "/source.img"
  bench.varied_file(src, MB)
  bench.detach(src)
  local loop = sh({ "losetup", "-r", "-f", "--show", src }).stdout:match("%S+")
  local out = bench.fresh_ext4(WORK .. "/out.ext4", WORK .. "/out", 2 * MB + 256)
  local home = WORK .. "/home"
  local words = {}
  for i, a in ipairs(ARGS) do words[i] = ("%q"):format(a) end
  local policy = WORK .. "/image_policy.lua"
  local f = assert(io.open(policy, "w"))
  f:write(('return require("ntt").policy.extend("device", { stages = { "image" }, image = { dir = %q, smart = false, '
           .. 'phases = { { name = "copy", args = { %s } } } } })\n'):format(out .. "/ntt", table.concat(words, ", ")))
  f:close()
  local ntt = bench.self()
  util.setenv("NTT_HOME", home)
  local conn = assert(require("ntt.db").connect { autostart = true })
  assert(require("ntt.db").migrate(conn))
  local contenders = {
    { name = "ntt image", run = function()
        -- the bench's own data root: every imaging forgotten, so this one images again
        assert(conn:exec("DELETE FROM imaging_phase"))
        assert(conn:exec("DELETE FROM imaging"))
        sh { "rm", "-rf", out .. "/ntt" }
        drop_caches()
        local t = timed(function() sh { ntt, "run", "-q", policy, loop } end)
        local made = false
        for _, n in ipairs(fs.readdir(out .. "/ntt") or {}) do
          local st = n:match("%.img$") and fs.stat(out .. "/ntt/" .. n)
          made = made or (st and st.size == MB * MiB)
        end
        assert(made, "ntt made no image of the whole device")
        return t
      end },
    { name = "ddrescue", run = function()
        sh { "rm", "-f", out .. "/plain.img", out .. "/plain.map" }
        drop_caches()
        local argv = { "ddrescue" }
        for _, a in ipairs(ARGS) do argv[#argv + 1] = a end
        argv[#argv + 1], argv[#argv + 2], argv[#argv + 3] = loop, out .. "/plain.img", out .. "/plain.map"
        return timed(function() sh(argv) end)
      end },
  }
  local best, all = {}, {}
  for _ = 1, ROUNDS do
    for _, c in ipairs(contenders) do
      local t = c.run()
      best[c.name] = math.min(best[c.name] or math.huge, t)
      all[c.name] = (all[c.name] and (all[c.name] .. " ") or "") .. ("%.2f"):format(t)
    end
  end
  conn:close()
  sh({ "umount", out }, true)
  bench.detach(WORK .. "/out.ext4")
  sh({ "losetup", "-d", loop }, true)
  print(("device: %d MiB (%s over %s), ddrescue %s"):format(MB, loop, src, table.concat(ARGS, " ")))
  for _, c in ipairs(contenders) do
    print(("%-10s best %7.2f s %8.1f MB/s   (runs: %s s)"):format(c.name, best[c.name], MB * MiB / best[c.name] / 1e6,
                                                                 all[c.name]))
  end
  print(("ratio (ddrescue time / ntt time): %.2f"):format(best["ddrescue"] / best["ntt image"]))
end

main()
