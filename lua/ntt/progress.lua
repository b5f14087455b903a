-- lua/ntt/progress.lua: progress of a long stage, for people.
--
-- On a terminal: one line redrawn in place (count, bytes, current rate, ETA)
-- at most five times a second, and at least once a second while the stage
-- calls set/add or tick (the copier does, from its waits; ntt.live ticks
-- registered lines).  Elsewhere (logs, CI): a plain line every `interval`
-- seconds.  Nothing is printed for stages shorter than one interval.
-- The rate is the current one (over the last few seconds); the ETA is by
-- bytes when total_bytes is known, else by count.
--   progress.new{label=, total=, total_bytes=, unit="files", interval=5, bar="auto",
--                out=io.stderr, bytes_only=false} -> P
--     (unit: what is counted, e.g. "entries"; bytes_only: no counts, e.g. imaging)
--   P:add(n, bytes)   P:set(n, bytes) (counts never go back)   P:tick()
--   P:finish() -> summary table
local util = require "ntt.core.util"

local M = {}

function M.bytes(n)
  local units = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" }
  local i = 1
  n = n or 0
  while n >= 1024 and i < #units do n = n / 1024; i = i + 1 end
  return i == 1 and ("%d B"):format(math.floor(n)) or ("%.1f %s"):format(n, units[i])
end

function M.duration(s)
  if not s or s ~= s or s == math.huge then return "--:--" end
  s = math.floor(s + 0.5)
  local h, m = s // 3600, (s % 3600) // 60
  if h > 0 then return ("%d:%02d:%02d"):format(h, m, s % 60) end
  return ("%d:%02d"):format(m, s % 60)
end

local P = {}
P.__index = P

function M.new(opts)
  opts = opts or {}
  local out = opts.out or io.stderr
  local tty = opts.bar == "always" or (opts.bar ~= "never" and out == io.stderr and util.isatty(2))
  local now = util.monotonic()
  return setmetatable({
    label = opts.label or "progress", total = opts.total, total_bytes = opts.total_bytes,
    unit = opts.unit or "files", interval = opts.interval or 5, tty = tty, out = out,
    files = 0, bytes = 0, start = now, last = now, drawn = false, bytes_only = opts.bytes_only, samples = { { now, 0, 0 } },
  }, P)
end

local WINDOW = 5   -- seconds the current rate is taken over

-- The rate now: over the samples of the last WINDOW seconds.
function P:rates(now)
  local s = self.samples
  s[#s + 1] = { now, self.files, self.bytes }
  while #s > 2 and now - s[2][1] >= WINDOW do table.remove(s, 1) end
  local first = s[1]
  local dt = now - first[1]
  if dt <= 0 then return 0, 0 end
  return (self.files - first[2]) / dt, (self.bytes - first[3]) / dt
end

function P:line()
  local rate, brate = self:rates(util.monotonic())
  local eta
  if self.total_bytes and self.total_bytes > 0 and brate > 0 then
    eta = math.max(0, self.total_bytes - self.bytes) / brate
  elseif self.total and self.total > 0 and rate > 0 then
    eta = math.max(0, self.total - self.files) / rate
  end
  if self.bytes_only then
    local of = self.total_bytes and self.total_bytes > 0
    return ("%s:%s %s%s, %s/s, ETA %s"):format(self.label,
      of and (" %6.2f%%"):format(100 * self.bytes / self.total_bytes) or "", M.bytes(self.bytes),
      of and (" of " .. M.bytes(self.total_bytes)) or "", M.bytes(brate), eta and M.duration(eta) or "--:--")
  end
  local u = self.unit
  local count = self.total and ("%d/%d %s"):format(self.files, self.total, u) or ("%d %s"):format(self.files, u)
  local frac = self.total_bytes and self.total_bytes > 0 and self.bytes / self.total_bytes
    or self.total and self.total > 0 and self.files / self.total
  local pct = frac and (" %3d%%"):format(math.floor(100 * math.min(1, frac))) or ""
  local bytes = self.total_bytes and ("%s of %s"):format(M.bytes(self.bytes), M.bytes(self.total_bytes))
    or M.bytes(self.bytes)
  return ("%s:%s %s, %s, %.0f %s/s, %s/s, ETA %s"):format(self.label, pct, count,
    bytes, rate, u, M.bytes(brate), eta and M.duration(eta) or "--:--")
end

function P:tick()
  local now = util.monotonic()
  local every = self.tty and 0.2 or self.interval
  if now - self.last < every or (not self.tty and now - self.start < self.interval) then return end
  self.last = now
  if self.tty then
    self.out:write("\r\27[K", self:line())
    self.drawn = true
  else
    self.out:write(self:line(), "\n")
  end
  self.out:flush()
end

function P:add(files, bytes)
  self.files = self.files + (files or 0)
  self.bytes = self.bytes + (bytes or 0)
  self:tick()
end

function P:set(files, bytes)
  self.files = math.max(self.files, files or 0)
  self.bytes = math.max(self.bytes, bytes or 0)
  self:tick()
end

function P:finish()
  if self.drawn then self.out:write("\r\27[K", self:line(), "\n"); self.out:flush() end
  local el = util.monotonic() - self.start
  return { files = self.files, bytes = self.bytes, seconds = el,
           files_per_s = el > 0 and self.files / el or 0, bytes_per_s = el > 0 and self.bytes / el or 0 }
end

return M
