-- examples/site.lua: a site policy that inherits the default and changes a
-- few things: fewer retries, junk that is not worth copying, more workers.
local ntt = require "ntt"

return ntt.policy.extend("default", {
  name = "site",
  workers = 4,
  retry = { checkpoint = 5, max = 10 },
  -- the shelf's cloud drive is mounted with rclone's FUSE driver under
  -- another name: copy from it with the network thread count
  copy = { network_fuse = ntt.policy.append { "fuse.shelfcloud" } },
  enumerate = {
    ignore = { "(^|/)\\.cache/", "(^|/)node_modules/", "(^|/)Thumbs\\.db$" },
    raw_audit = true,
  },
  -- a permission error on this shelf means a broken ACL, not a bad sector
  diagnose = ntt.policy.prepend { { ntt.has "detected_permission_error", ntt.SKIP "PERMISSION_DENIED" } },
})
