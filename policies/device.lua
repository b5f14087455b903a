-- policies/device.lua: image a block device with GNU ddrescue first, then
-- run the default workflow on the image (`ntt run policies/device.lua /dev/sdX`).
--
-- Each phase is one run of ddrescue over the same image and map (so it
-- resumes where the last one stopped and never reads a rescued area again):
-- `args` are ddrescue's own options; `budget` the seconds it may take;
-- `stall` the seconds without any change in ddrescue's status after which
-- the watchdog ends it (recorded, the map kept as .map.stall); `works_on`
-- the map statuses it has work in (skipped when there are none);
-- `skip_above` a rescued % above which it is not worth running;
-- `give_up_below` a rescued % after it at or below which the medium looks
-- dead and the later phases are skipped.  A phase is always skipped when
-- the map has nothing left to rescue.
local ntt = require "ntt"

local H = 3600

return ntt.policy.extend("default", {
  name = "device",
  description = "image a block device with ddrescue in phases, then identify, inspect, mount, enumerate and copy the image",
  stages = { "image", "identify", "inspect", "mount", "enumerate", "copy", "report", "unmount" },

  image = {
    -- dir = "/srv/ntt/images",   -- default: <data root>/images
    smart = true,        -- a SMART summary where smartctl exists
    more = false,        -- true: each run of an imaged device runs more_phases again (a rescue more)
    stall = 1800,        -- seconds without progress before a phase is ended (each phase may set its own)
    phases = {
      -- the easy areas first: no trimming, no scraping, big clusters
      { name = "fast", args = { "--idirect", "--no-trim", "--no-scrape", "--cluster-size=128" },
        budget = 24 * H },
      -- the same from the end: the far side of a bad area
      { name = "reverse", args = { "--idirect", "--no-trim", "--no-scrape", "--reverse" },
        budget = 12 * H, works_on = "?", skip_above = 99.99 },
      -- trim the edges of the bad areas
      { name = "trim", args = { "--idirect", "--no-scrape" }, budget = 12 * H, works_on = "?*",
        give_up_below = 25 },
      -- scrape what is left, sector by sector
      { name = "scrape", args = { "--idirect" }, budget = 24 * H, works_on = "?*/" },
      -- retry the bad sectors
      { name = "retry", args = { "--idirect", "--retry-passes=3" }, budget = 12 * H, works_on = "-",
        skip_above = 99.999 },
    },
    -- a rescue more (`ntt image --more H`, or more = true): the bad areas again, reversed
    more_phases = {
      { name = "retry-more", args = { "--idirect", "--retry-passes=3", "--reverse" }, budget = 24 * H,
        works_on = "?*/-" },
    },
  },
})
