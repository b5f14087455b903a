-- lua/ntt/mapfile.lua: GNU ddrescue mapfiles (called "logfiles" before 1.20).
--
-- A mapfile says which bytes of an image ddrescue really read.  ddrescue
-- writes nothing into areas it could not read, so they hold zeros in the
-- image: only the map tells a good zero from a missing one.
--
--   mapfile.parse(text [, name]) -> Map | nil, "NAME: line N: what is wrong", "EINVAL"
--   mapfile.read(path)           -> Map | nil, "path: strerror", errname
--                                      | nil, "path: line N: what is wrong", "EINVAL"
--
-- Parsing is ntt.core.mapfile's: the one C parser the mount helper uses
-- too, so a map one rejects the other rejects with the same line number.
-- Its rules (src/media/mapfile_parse.h, docs/media.md): comments `#`, the
-- status line `current_pos current_status [current_pass]`, then
-- `pos size status` block lines; numbers decimal or 0x-hex; block status
-- `+` rescued, `-` bad sector, `/` non-scraped, `*` non-trimmed,
-- `?` non-tried; blocks contiguous and non-overlapping.  The area before
-- a first block that starts past 0 is non-tried (a block with gap=true),
-- and so is everything after the last block.
--
-- Map fields and methods (offsets and sizes in bytes, integers):
--   map.blocks          contiguous list of {pos=, size=, status=} from 0 to
--                       map.size (gaps filled in as "?", with gap=true)
--   map.current_pos, map.current_status, map.pass (nil with 2-field lines)
--   map.size            end of the last block
--   map.rescued_bytes   bytes marked "+"
--   map:rescued_pct([total])      percent of total (default map.size) rescued
--   map:holes([total])            merged non-rescued ranges {pos, size, status}
--   map:status_at(offset)         status character of one byte
--   map:overlap(ranges)           the non-rescued parts of {pos=, size=} ranges
--   map:grade([thresholds], [total]) -> "ok"|"incomplete"|"corrupt"|"failed"
--   map:boot_sector_bad([sector_size]) -> true when sector 0 is not all rescued
local util = require "ntt.core.util"
local cmap = require "ntt.core.mapfile"

local M = {}

local Map = {}
Map.__index = Map
Map.__name = "ntt.Map"

M.DEFAULT_THRESHOLDS = { incomplete = 90, corrupt = 20 }

local BLOCK_STATUS = { ["+"] = "rescued", ["-"] = "bad sector", ["/"] = "non-scraped",
                       ["*"] = "non-trimmed", ["?"] = "non-tried" }
M.STATUS = BLOCK_STATUS

function M.parse(text, name)
  if type(text) ~= "string" then error("mapfile.parse: text must be a string", 2) end
  name = name or "mapfile"
  local map, err, code = cmap.parse(text)
  if not map then return nil, ("%s: %s"):format(name, err), code end
  map.name = name
  return setmetatable(map, Map)
end

function M.read(path)
  local f, err, code = io.open(path, "rb")
  if not f then return nil, err, util.errname(code) end
  local text, rerr, rcode = f:read("a")
  f:close()
  if not text then return nil, ("%s: %s"):format(path, rerr), util.errname(rcode) end
  return M.parse(text, path)
end

local function total_of(self, total)
  if total == nil then return self.size end
  if math.type(total) ~= "integer" or total < 0 then
    error("mapfile: total must be a non-negative integer", 3)
  end
  return total
end

-- Bytes marked rescued below total.
local function rescued_below(self, total)
  if total >= self.size then return self.rescued_bytes end
  local n = 0
  for _, b in ipairs(self.blocks) do
    if b.pos >= total then break end
    if b.status == "+" then n = n + math.min(b.size, total - b.pos) end
  end
  return n
end

-- Percent rescued of total bytes (default: the map's size); 0 when total is 0.
function Map:rescued_pct(total)
  total = total_of(self, total)
  if total == 0 then return 0.0 end
  return rescued_below(self, total) * 100.0 / total
end

-- Index of the block holding offset, or nil when offset >= size.
local function find(blocks, offset)
  local lo, hi = 1, #blocks
  while lo <= hi do
    local mid = (lo + hi) // 2
    local b = blocks[mid]
    if offset < b.pos then hi = mid - 1
    elseif offset >= b.pos + b.size then lo = mid + 1
    else return mid end
  end
  return nil
end

function Map:status_at(offset)
  if math.type(offset) ~= "integer" or offset < 0 then
    error("map:status_at: offset must be a non-negative integer", 2)
  end
  local i = find(self.blocks, offset)
  return i and self.blocks[i].status or "?"
end

-- Append [pos, pos+size) with status to list, merging with the last range
-- when they touch.  A merged range of mixed statuses lists each status once.
local function push(list, pos, size, status)
  local last = list[#list]
  if last and last.pos + last.size == pos then
    last.size = last.size + size
    if not last.status:find(status, 1, true) then last.status = last.status .. status end
  else
    list[#list + 1] = { pos = pos, size = size, status = status }
  end
end

-- Non-rescued ranges up to total (default map.size), adjacent ones merged.
function Map:holes(total)
  total = total_of(self, total)
  local out = {}
  for _, b in ipairs(self.blocks) do
    if b.pos >= total then break end
    if b.status ~= "+" then push(out, b.pos, math.min(b.size, total - b.pos), b.status) end
  end
  if total > self.size then push(out, self.size, total - self.size, "?") end
  return out
end

-- The parts of ranges ({pos=, size=} each, any order) that are not rescued,
-- as {pos=, size=, status=}, in the order of the ranges.  Bytes past the
-- map's end are non-tried.
function Map:overlap(ranges)
  local out, blocks = {}, self.blocks
  for _, r in ipairs(ranges) do
    local p, e = r.pos, r.pos + r.size
    if math.type(p) ~= "integer" or p < 0 or r.size < 0 then
      error("map:overlap: ranges need integer pos >= 0 and size >= 0", 2)
    end
    local i = find(blocks, p)
    while i and p < e do
      local b = blocks[i]
      local be = math.min(b.pos + b.size, e)
      if b.status ~= "+" then push(out, p, be - p, b.status) end
      p = be
      i = i + 1
      if not blocks[i] then break end
    end
    if p < e and p >= self.size then push(out, p, e - p, "?") end
  end
  return out
end

-- Health grade from the rescued percentage: 100 % ok, then the thresholds.
function Map:grade(thresholds, total)
  thresholds = thresholds or M.DEFAULT_THRESHOLDS
  total = total_of(self, total)
  local rescued = rescued_below(self, total)
  if total > 0 and rescued == total then return "ok" end
  local pct = total > 0 and rescued * 100.0 / total or 0
  if pct >= (thresholds.incomplete or M.DEFAULT_THRESHOLDS.incomplete) then return "incomplete" end
  if pct >= (thresholds.corrupt or M.DEFAULT_THRESHOLDS.corrupt) then return "corrupt" end
  return "failed"
end

function Map:boot_sector_bad(sector_size)
  sector_size = sector_size or 512
  return #self:overlap({ { pos = 0, size = sector_size } }) > 0
end

function Map:__tostring()
  return ("ntt.Map(%s: %d bytes, %.2f%% rescued)"):format(self.name, self.size, self:rescued_pct())
end

return M
