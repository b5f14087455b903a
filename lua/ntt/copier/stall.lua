-- lua/ntt/copier/stall.lua: a read that makes no progress is given up.
--
--   stall.watch(seconds, log, medium) -> w
--   w.check(batches)   batches: those in flight ({ job=, items= });
--                      a file whose bytes read have not moved for `seconds`
--                      is abandoned (job:skip) and its item marked
--                      item.stalled = { seconds=, offset= }
--
-- A read can hang without failing: a share whose server went away, a FUSE
-- driver stuck on a bad sector.  The operator can skip such a file from the
-- console (ntt attach), but an unattended run would wait for it all night;
-- with copy.stall_timeout it is recorded failed (tried again by the next
-- run) and the batch goes on.  Only a read the kernel lets a signal
-- interrupt can be abandoned (FUSE, 9p, NFS "intr"): one in an
-- uninterruptible wait ends when the device's own timeout does.
local util = require "ntt.core.util"

local M = {}

function M.watch(seconds, log, m)
  local seen = setmetatable({}, { __mode = "k" })   -- job -> index -> { bytes, since }
  local w = {}
  function w.check(batches)
    local now = util.monotonic()
    for _, b in ipairs(batches) do
      local per = seen[b.job] or {}
      seen[b.job] = per
      for _, f in ipairs(b.job:live()) do
        local s = per[f.index]
        if not s or s.bytes ~= f.bytes then
          per[f.index] = { bytes = f.bytes, since = now }
        elseif not s.given_up and now - s.since >= seconds then
          s.given_up = true
          local item = b.items[f.index]
          if item then item.stalled = { seconds = now - s.since, offset = f.bytes } end
          b.job:skip(f.index)
          log:warn("copy_stalled", { medium = m.hash, path = f.path, offset = f.bytes, seconds = now - s.since },
                   ("%s: %s: no progress for %.0f s at byte %d: given up (copy.stall_timeout)")
                     :format(m.human or m.hash, tostring(f.path):gsub("%c", "?"), now - s.since, f.bytes))
        end
      end
    end
  end
  return w
end

return M
