-- lua/ntt/progress.lua: progress of a long stage, for people.
--
-- On a terminal: one line redrawn in place (count, bytes, rate, ETA) at most
-- five times a second.  Elsewhere (logs, CI): a plain line every `interval`
-- seconds.  Nothing is printed for stages shorter than one interval.
--   progress.new{label=, total=, total_bytes=, interval=5, bar="auto", out=io.stderr,
--                bytes_only=false} -> P   (bytes_only: no file counts, e.g. imaging)
--   P:add(files, bytes)   P:set(files, bytes)   P:finish() -> summary table
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
    interval = opts.interval or 5, tty = tty, out = out,
    files = 0, bytes = 0, start = now, last = now, drawn = false, bytes_only = opts.bytes_only,
  }, P)
end

function P:line()
  local el = util.monotonic() - self.start
  local rate = el > 0 and self.files / el or 0
  local brate = el > 0 and self.bytes / el or 0
  local eta
  if self.total and self.total > 0 and rate > 0 then
    eta = (self.total - self.files) / rate
  elseif self.total_bytes and self.total_bytes > 0 and brate > 0 then
    eta = (self.total_bytes - self.bytes) / brate
  end
  if self.bytes_only then
    local of = self.total_bytes and self.total_bytes > 0
    return ("%s:%s %s%s, %s/s, ETA %s"):format(self.label,
      of and (" %6.2f%%"):format(100 * self.bytes / self.total_bytes) or "", M.bytes(self.bytes),
      of and (" of " .. M.bytes(self.total_bytes)) or "", M.bytes(brate), eta and M.duration(eta) or "--:--")
  end
  local count = self.total and ("%d/%d files"):format(self.files, self.total) or ("%d files"):format(self.files)
  local pct = self.total and self.total > 0 and (" %3d%%"):format(math.floor(100 * self.files / self.total)) or ""
  return ("%s:%s %s, %s, %.0f files/s, %s/s, ETA %s"):format(self.label, pct, count,
    M.bytes(self.bytes), rate, M.bytes(brate), eta and M.duration(eta) or "--:--")
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
  self.files, self.bytes = files or self.files, bytes or self.bytes
  self:tick()
end

function P:finish()
  if self.drawn then self.out:write("\r\27[K", self:line(), "\n"); self.out:flush() end
  local el = util.monotonic() - self.start
  return { files = self.files, bytes = self.bytes, seconds = el,
           files_per_s = el > 0 and self.files / el or 0, bytes_per_s = el > 0 and self.bytes / el or 0 }
end

return M
