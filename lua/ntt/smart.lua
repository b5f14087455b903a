-- lua/ntt/smart.lua: a SMART summary of a device, where smartctl exists.
--
--   smart.summary(device [, {binary=, timeout=}]) -> summary
--       summary = { available = false, reason = "..." }   (no smartctl, or
--                   it could not say anything of this device)
--               | { available = true, passed = bool|nil, model=, serial=,
--                   firmware=, protocol=, power_on_hours=, temperature=,
--                   reallocated=, pending=, uncorrectable=, exit= }
--       From `smartctl -j -i -H -A DEVICE` (smartmontools >= 7: JSON).  Never
--       fails: what goes wrong is the reason.  smartctl's exit status is a
--       bit mask (bit 3: the disk says it is failing); it is kept as exit.
local proc = require "ntt.core.proc"
local fs = require "ntt.core.fs"
local json = require "ntt.json"

local M = {}

-- The first smartctl on PATH (or in the sbin folders sudo leaves out).
local function find(binary)
  if binary:find("/", 1, true) then return fs.stat(binary) and binary or nil end
  local path = (os.getenv("PATH") or "") .. ":/usr/sbin:/sbin:/usr/local/sbin"
  for dir in path:gmatch("[^:]+") do
    local st = fs.stat(dir .. "/" .. binary)
    if st and st.type == "file" then return dir .. "/" .. binary end
  end
  return nil
end

-- An ATA attribute's raw value by id, from smartctl's table.
local function attribute(obj, id)
  local t = obj.ata_smart_attributes and obj.ata_smart_attributes.table
  if type(t) ~= "table" then return nil end
  for _, a in ipairs(t) do
    if a.id == id and type(a.raw) == "table" then return a.raw.value end
  end
  return nil
end

function M.summary(device, opts)
  opts = opts or {}
  local bin = find(opts.binary or "smartctl")
  if not bin then return { available = false, reason = "smartctl is not installed (apt-get install smartmontools)" } end
  local r, err = proc.run { argv = { bin, "-j", "-i", "-H", "-A", device }, timeout = opts.timeout or 30 }
  if not r then return { available = false, reason = tostring(err) } end
  if r.timed_out then return { available = false, reason = "smartctl did not answer in time" } end
  local obj = json.decode(r.stdout or "")
  if type(obj) ~= "table" then return { available = false, reason = "smartctl gave no JSON", exit = r.code } end
  local function v(x) if x == json.null then return nil end return x end
  -- bits 0-1: the command line or the device could not be opened
  if r.code and r.code & 3 ~= 0 then
    local msgs = obj.smartctl and obj.smartctl.messages
    local why = type(msgs) == "table" and msgs[1] and msgs[1].string or ("exit " .. tostring(r.code))
    return { available = false, reason = tostring(v(why)), exit = r.code }
  end
  local status = type(obj.smart_status) == "table" and obj.smart_status or {}
  local nvme = type(obj.nvme_smart_health_information_log) == "table" and obj.nvme_smart_health_information_log or {}
  return {
    available = true, exit = r.code, passed = v(status.passed),
    model = v(obj.model_name), serial = v(obj.serial_number), firmware = v(obj.firmware_version),
    protocol = type(obj.device) == "table" and v(obj.device.protocol) or nil,
    power_on_hours = type(obj.power_on_time) == "table" and v(obj.power_on_time.hours) or nil,
    temperature = type(obj.temperature) == "table" and v(obj.temperature.current) or nil,
    reallocated = attribute(obj, 5), pending = attribute(obj, 197),
    uncorrectable = attribute(obj, 198) or v(nvme.media_errors),
  }
end

return M
