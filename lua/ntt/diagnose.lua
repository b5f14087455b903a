-- lua/ntt/diagnose.lua: the findings gathered when a file keeps failing.
--
--   classify(failure)         -> "detected_io_error" | "detected_beyond_eof" | ...
--     failure = a failed copy result's fields: { err = "EIO", phase = "read", ... };
--     decided from err and phase only, never from the message text
--   kernel(lines, devices, patterns) -> set of "dmesg:*" findings from the
--                                kernel lines that name one of our devices
--   mount_check(root [, view_file]) -> "mount_check:ok" | "...:missing" | "...:inaccessible"
--                                (view_file: the honest view's file the mount reads
--                                through; a view gone makes it inaccessible)
--   repeated(tries, n, seconds) -> true when the last n of tries (oldest first,
--                                each {err=, offset=, at=monotonic seconds}) failed
--                                with one errno at one offset within `seconds`
--   gather(opts)              -> list of findings (sorted, no duplicates)
--     opts = { err=, phase=, root=, view_file=, directory=, kernel_lines=, devices=, patterns=,
--              kernel_unavailable=, tries=, confirm={attempts=, seconds=}, more= }
--     a directory medium's check is "mount_check:directory": it has no
--     mount to lose, so no rule remounts it.
--     more: findings found elsewhere, added as they are (the honest view's
--     "view:beyond_eof" / "view:unrescued" from ntt.media.view_findings).
--     With tries and confirm (a medium with no loop device, whose kernel
--     can confirm nothing), a failure repeated `attempts` times as
--     `repeated` says adds "repeat:<class>" (e.g. "repeat:io_error").
--     A read the view refused as past the image's end is also
--     "detected_beyond_eof", the seed's name for "the read was beyond the
--     image" (its queries look for that name).
--   BEYOND_EOF                the findings that say a read went past the image's end
--   beyond_eof(findings)      -> true when one of them is among findings (a list or a set)
local fs = require "ntt.core.fs"

local M = {}

local BY_ERRNO = {
  EIO = "detected_io_error",
  ENODATA = "detected_beyond_eof",   -- the source ended before its recorded size
  ENXIO = "detected_beyond_eof",
  ENOENT = "detected_missing_file",
  ENOTDIR = "detected_missing_file",
  ESTALE = "detected_missing_file",
  EACCES = "detected_permission_error",
  EPERM = "detected_permission_error",
}

-- Failures of the read phase that are not the medium refusing a read: the
-- file ended early (ENODATA) or ran past its size (EFBIG), or a signal.
local NOT_A_FAILING_READ = { ENODATA = true, EFBIG = true, EINTR = true }

function M.classify(f)
  if type(f) ~= "table" or type(f.phase) ~= "string" then
    error("diagnose.classify: expects a failed copy result's fields {err=, phase=, ...}", 2)
  end
  local err = f.err
  -- Once a file is open, a failing read is the medium failing, whatever
  -- errno the driver chose (fusefat reports EPERM for unreadable clusters).
  if f.phase == "read" and not NOT_A_FAILING_READ[err] then
    return "detected_io_error"
  end
  return BY_ERRNO[err or ""] or ("detected_other:" .. tostring(err))
end

-- Does a kernel line name device `dev` (e.g. "loop3"), not "loop31"?
local function names(text, dev)
  local s = 1
  while true do
    local a, b = text:find(dev, s, true)
    if not a then return false end
    local after = text:sub(b + 1, b + 1)
    local before = a > 1 and text:sub(a - 1, a - 1) or " "
    if not after:match("%d") and not before:match("[%w]") then return true end
    s = b + 1
  end
end

function M.kernel(lines, devices, patterns)
  local found = {}
  for _, l in ipairs(lines or {}) do
    local text = type(l) == "table" and l.text or l
    local ours = false
    for _, d in ipairs(devices or {}) do
      if names(text, (d:gsub("^/dev/", ""))) then ours = true; break end
    end
    if ours then
      for _, p in ipairs(patterns or {}) do
        if text:find(p.pattern) then found[p.finding] = true end
      end
    end
  end
  return found
end

-- Is root still a mount point we can read?
function M.mount_check(root, view_file)
  local mounted = false
  for _, m in ipairs(fs.mountinfo() or {}) do
    if m.target == root then mounted = true; break end
  end
  if not mounted then return "mount_check:missing" end
  local st = fs.stat(root)   -- ENOTCONN when its FUSE driver died
  if not st or st.type ~= "directory" then return "mount_check:inaccessible" end
  if view_file then
    -- opened, not stat'ed: a dead view's attributes may still be cached
    local f = io.open(view_file, "rb")
    if not f then return "mount_check:inaccessible" end
    f:close()
  end
  return "mount_check:ok"
end

function M.repeated(tries, n, seconds)
  if type(tries) ~= "table" or n < 1 or #tries < n then return false end
  local last, first = tries[#tries], tries[#tries - n + 1]
  if last.at - first.at > seconds then return false end
  for i = #tries - n + 1, #tries - 1 do
    if tries[i].err ~= last.err or tries[i].offset ~= last.offset then return false end
  end
  return true
end

M.BEYOND_EOF = { "detected_beyond_eof", "dmesg:beyond_eof", "view:beyond_eof" }

function M.beyond_eof(findings)
  local set = findings
  if findings[1] ~= nil then
    set = {}
    for _, f in ipairs(findings) do set[f] = true end
  end
  for _, f in ipairs(M.BEYOND_EOF) do
    if set[f] then return true end
  end
  return false
end

function M.gather(o)
  local set = {}
  local class = M.classify(o)
  set[class] = true
  for _, f in ipairs(o.more or {}) do set[f] = true end
  local c = o.confirm
  if o.tries and c and M.repeated(o.tries, c.attempts or 5, c.seconds or 2) then
    set["repeat:" .. class:gsub("^detected_", "")] = true
  end
  if o.kernel_unavailable then
    set["dmesg:unavailable"] = true
  else
    for k in pairs(M.kernel(o.kernel_lines, o.devices, o.patterns)) do set[k] = true end
  end
  if o.directory then set["mount_check:directory"] = true
  elseif o.err == "ENOTCONN" then
    -- the FUSE driver serving the mount is gone, whatever a stat of its root
    -- says (the kernel may answer that from its attribute cache)
    set["mount_check:inaccessible"] = true
  elseif o.root and o.check_mount ~= false then set[M.mount_check(o.root, o.view_file)] = true end
  if set["view:beyond_eof"] then set.detected_beyond_eof = true end
  local list = {}
  for k in pairs(set) do list[#list + 1] = k end
  table.sort(list)
  return list
end

return M
