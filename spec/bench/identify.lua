-- spec/bench/identify.lua: identifying an image (BLAKE3 of its whole
-- content) against `b3sum` of the same file, in one run.
--
--   build/ntt spec/bench/identify.lua     (root: drop_caches)
--
-- A NTT_BENCH_IDENTIFY_MB (default 1024) MiB image of varied bytes is
-- written once under NTT_BENCH_DIR (default /var/tmp/ntt-bench-identify).
-- Each contender is timed cold (page cache dropped) and warm, alternately,
-- best of NTT_BENCH_ROUNDS (default 2); ntt runs media.identify without a
-- cache, so it reads the whole image every time.  Prints MB/s and the
-- ratio b3sum time / ntt time (>= 0.9 is the target; above 1 ntt is faster).
local media = require "ntt.media"
local bench = dofile((arg[0]:match("^(.*)/[^/]+$") or ".") .. "/common.lua")

local MB = bench.num("NTT_BENCH_IDENTIFY_MB", 1024)
local ROUNDS = bench.num("NTT_BENCH_ROUNDS", 2)
local WORK = os.getenv("NTT_BENCH_DIR") or "/var/tmp/ntt-bench-identify"
local MiB = 1048576

local sh, drop_caches, timed = bench.sh, bench.drop_caches, bench.timed

local contenders = {
  { name = "ntt identify", run = function(path)
      local id = assert(media.identify(path))
      return id.hash
    end },
  { name = "b3sum", run = function(path)
      return sh({ "b3sum", "-l", "16", "--no-names", path }).stdout:match("%x+")
    end },
}

local function main()
  sh { "mkdir", "-p", WORK }
  local path = WORK .. "/image.img"
  bench.varied_file(path, MB)
  local can_drop = io.open("/proc/sys/vm/drop_caches", "w")
  if can_drop then can_drop:close() end
  local best = {}
  for _ = 1, ROUNDS do
    for _, c in ipairs(contenders) do
      for _, temp in ipairs { "cold", "warm" } do
        if temp == "cold" then
          if can_drop then drop_caches() end
        else
          c.run(path)                      -- make sure it is cached
        end
        local t, h = timed(function() return c.run(path) end)
        local key = c.name .. "/" .. temp
        best[key] = math.min(best[key] or math.huge, t)
        c.hash = c.hash or h
        assert(c.hash == h, c.name .. ": two hashes of one file")
      end
    end
  end
  assert(contenders[1].hash == contenders[2].hash, "ntt and b3sum disagree on the medium hash")
  print(("image: %d MiB, %s; cold needs drop_caches: %s"):format(MB, path, can_drop and "yes" or "NOT DONE"))
  for _, temp in ipairs { "cold", "warm" } do
    for _, c in ipairs(contenders) do
      local t = best[c.name .. "/" .. temp]
      print(("%-14s %-4s %7.3f s %8.1f MB/s"):format(c.name, temp, t, MB * MiB / t / 1e6))
    end
    print(("ratio %s (b3sum time / ntt time): %.2f"):format(temp, best["b3sum/" .. temp] / best["ntt identify/" .. temp]))
  end
end

main()
