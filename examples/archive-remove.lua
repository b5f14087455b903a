-- examples/archive-remove.lua: a site short of disk space keeps only the
-- compressed archive of each image.  After the default stages, the archive
-- stage packs the image set (image, map, .map.bak, .map.stall,
-- -ddrescue.log) into <data root>/archive/<hash>.tar.zst, reads it back and
-- compares every member with its source; only then, and only once the
-- medium is unmounted (the default's unmount stage runs before archive),
-- are the sources removed.  A medium still mounted keeps its sources and
-- the stage fails "EBUSY".
local ntt = require "ntt"

return ntt.policy.extend("default", {
  name = "archive-remove",
  description = "the default workflow; each image set replaced by its verified tar.zst",
  archive = { remove_sources = true, level = 9 },
})
