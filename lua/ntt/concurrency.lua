-- lua/ntt/concurrency.lua: how many copy threads to run against a source
-- filesystem, first from what it is, then from how each batch went.
--
--   concurrency.default(probe [, opts]) -> threads, reason
--     probe: the table of ntt.core.fs.probe (kind, network, fstype).
--     9p (WSL2's drvfs, virtio shares) -> 1: it serialises and stalls under
--     parallel access; network filesystems (nfs, cifs, smb2, and FUSE types
--     the policy lists in copy.network_fuse, passed to fs.probe)
--     -> 2; local -> opts.cores * 4 clamped to [4, 16]: cold small-file
--     copying waits on the device, so reads from several directories
--     must be in flight even on a 2-core machine.
--     opts: cores (default ntt.core.util.cores()), wsl (boolean; a WSL
--     kernel's non-9p mounts count as local).
--
--   concurrency.controller{threads=, min=1, max=, max_error_rate=0.1,
--                          max_latency=2.0, gain=0.05, min_files=20}
--     -> Controller
--   ctl:observe{files=, errors=, seconds=} -> threads, reason
--     Feed it each batch's count of files, failures and wall time.  Many
--     errors halve the threads ("errors"); a per-file latency above
--     max_latency (seconds per file per thread) drops one ("latency");
--     otherwise it climbs one thread at a time while throughput grows by
--     more than `gain` ("raise"), steps back when the last raise did not
--     pay ("revert") and then holds ("hold") for a few batches.
--   ctl:threads() -> the current count
--   The controller never leaves [min, max]: the copier passes the policy's
--   copy.threads(fs) as max, so that count is a ceiling (9p -> 1 thread).
local M = {}

function M.default(probe, opts)
  opts = opts or {}
  if type(probe) ~= "table" then error("concurrency.default: probe table expected", 2) end
  local cores = opts.cores
  if not cores then
    local ok, util = pcall(require, "ntt.core.util")
    cores = ok and util.cores() or 1
  end
  local kind, fstype = probe.kind or "unknown", probe.fstype or ""
  if kind == "9p" or fstype == "9p" or fstype == "v9fs" then
    return 1, "9p serialises parallel access"
  end
  if probe.network then
    return 2, "network filesystem"
  end
  local n = math.max(4, math.min(16, cores * 4))
  return n, "local filesystem"
end

local Controller = {}
Controller.__index = Controller

function M.controller(opts)
  opts = opts or {}
  local max = opts.max or 16
  local min = opts.min or 1
  if min < 1 or max < min then error("concurrency.controller: need 1 <= min <= max", 2) end
  local t = math.max(min, math.min(max, opts.threads or min))
  return setmetatable({
    n = t, min = min, max = max,
    max_error_rate = opts.max_error_rate or 0.1,
    max_latency = opts.max_latency or 2.0,
    gain = opts.gain or 0.05,
    min_files = opts.min_files or 20,
    hold_batches = opts.hold or 5,
    hold = 0,
    rate = {},          -- best files/s seen per thread count
    raised = false,     -- the last decision was a raise
  }, Controller)
end

function Controller:threads() return self.n end

-- A new ceiling (the console's threads(n)): the count never exceeds it from now on.
function Controller:ceiling(max)
  self.max = math.max(self.min, max)
  self.n = math.min(self.n, self.max)
  self.rate = {}
end

local function set(self, n, reason)
  n = math.max(self.min, math.min(self.max, n))
  self.raised = reason == "raise" and n > self.n
  self.n = n
  return n, reason
end

function Controller:observe(b)
  local files, errors, seconds = b.files or 0, b.errors or 0, b.seconds or 0
  if files <= 0 or seconds <= 0 then return self.n, "no data" end
  if files >= self.min_files and errors / files > self.max_error_rate then
    self.hold = self.hold_batches
    self.rate = {}
    return set(self, self.n // 2, "errors")
  end
  if seconds * self.n / files > self.max_latency then
    self.hold = self.hold_batches
    return set(self, self.n - 1, "latency")
  end
  local rate = files / seconds
  local prev = self.rate[self.n - 1]
  local was_raise = self.raised
  self.rate[self.n] = math.max(self.rate[self.n] or 0, rate)
  if was_raise and prev and rate < prev * (1 + self.gain) then
    self.hold = self.hold_batches
    return set(self, self.n - 1, "revert")
  end
  if self.hold > 0 then
    self.hold = self.hold - 1
    self.raised = false
    return self.n, "hold"
  end
  if self.n < self.max then return set(self, self.n + 1, "raise") end
  self.raised = false
  return self.n, "hold"
end

return M
