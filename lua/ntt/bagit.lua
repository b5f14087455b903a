-- lua/ntt/bagit.lua: what `ntt export --bagit` needs of BagIt (RFC 8493)
-- beyond the payload files themselves: names a bag can hold, manifest
-- paths, and the tag files.
--
--   bagit.name(component) -> name in the bag, changed (boolean)
--       A path component that is valid UTF-8 and holds no control byte
--       (0x00-0x1f, 0x7f) is kept as it is.  Any other is escaped: every
--       byte that is not part of a valid UTF-8 sequence, every control
--       byte and every "=" is written "=XX" (two upper-case hex digits),
--       so the rule can be undone; no "%" is added, so manifests stay
--       readable by sha256sum -c.  The original bytes of every changed
--       path are listed in the tag file ntt-renamed.txt.
--   bagit.manifest_path(p) -> p with "%", CR and LF written %25, %0D, %0A
--       (RFC 8493 section 2.1.3)
--   bagit.write_tags(dest, info) -> oxum | nil, msg, code
--       writes bagit.txt, bag-info.txt, manifest-sha256.txt, the ntt-*.txt
--       tag files that have lines, then tagmanifest-sha256.txt over all of
--       them.  info = { files = { { path = "data/...", sha256 = }, ... },
--       bytes =, hash = (External-Identifier), description =,
--       renamed = { { bag = "data/...", original = bytes }, ... },
--       not_exported = { { path = bytes, why = }, ... } }
local export = require "ntt.core.export"

local M = {}

local function valid_utf8_clean(s)
  if s:find("[%z\1-\31\127]") then return false end
  return utf8.len(s) ~= nil
end

local function hx(c) return ("=%02X"):format(c:byte()) end

function M.name(s)
  if valid_utf8_clean(s) then return s, false end
  local out, i, n = {}, 1, #s
  while i <= n do
    local b = s:byte(i)
    local len = b < 0x80 and 1 or (b >= 0xc2 and b <= 0xdf) and 2 or (b >= 0xe0 and b <= 0xef) and 3
                or (b >= 0xf0 and b <= 0xf4) and 4 or 0
    local seq = len > 0 and s:sub(i, i + len - 1) or nil
    if len > 1 and #seq == len and utf8.len(seq) == 1 then
      out[#out + 1] = seq
      i = i + len
    else
      local c = s:sub(i, i)
      out[#out + 1] = (len == 1 and b >= 32 and b ~= 127 and c ~= "=") and c or hx(c)
      i = i + 1
    end
  end
  return table.concat(out), true
end

function M.manifest_path(p)
  return (p:gsub("[%%\r\n]", { ["%"] = "%25", ["\r"] = "%0D", ["\n"] = "%0A" }))
end

-- bytes shown for a text tag file: printable ASCII but "%", the rest %XX
local function shown(s)
  return (s:gsub("[^\33-\36\38-\126]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function put(dest, name, text, sums)
  local f, err = io.open(dest .. "/" .. name, "wb")
  if not f then return nil, err, "EIO" end
  local ok, werr = f:write(text)
  f:close()
  if not ok then return nil, werr, "EIO" end
  sums[#sums + 1] = ("%s  %s\n"):format(export.sha256(text), name)
  return true
end

function M.write_tags(dest, info)
  local sums = {}
  local oxum = ("%d.%d"):format(info.bytes, #info.files)
  local lines = {}
  for _, f in ipairs(info.files) do lines[#lines + 1] = ("%s  %s\n"):format(f.sha256, M.manifest_path(f.path)) end
  local tags = {
    { "bagit.txt", "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n" },
    { "bag-info.txt", table.concat({
        "External-Identifier: " .. info.hash,
        "External-Description: " .. (info.description or ""):gsub("[\r\n]", " "),
        "Bagging-Date: " .. os.date("!%Y-%m-%d"),
        "Bag-Software-Agent: ntt " .. require("ntt.version"),
        "Payload-Oxum: " .. oxum, "" }, "\n") },
    { "manifest-sha256.txt", table.concat(lines) },
  }
  if info.renamed and #info.renamed > 0 then
    local t = { "# path in the bag <TAB> the original path (bytes outside printable ASCII and % as %XX)\n" }
    for _, r in ipairs(info.renamed) do t[#t + 1] = ("%s\t%s\n"):format(M.manifest_path(r.bag), shown(r.original)) end
    tags[#tags + 1] = { "ntt-renamed.txt", table.concat(t) }
  end
  if info.not_exported and #info.not_exported > 0 then
    local t = { "# original path (bytes outside printable ASCII and % as %XX) <TAB> why it is not in the bag\n" }
    for _, r in ipairs(info.not_exported) do t[#t + 1] = ("%s\t%s\n"):format(shown(r.path), r.why) end
    tags[#tags + 1] = { "ntt-not-exported.txt", table.concat(t) }
  end
  for _, t in ipairs(tags) do
    local ok, err, code = put(dest, t[1], t[2], sums)
    if not ok then return nil, err, code end
  end
  local ok, err, code = put(dest, "tagmanifest-sha256.txt", table.concat(sums), {})
  if not ok then return nil, err, code end
  return oxum
end

return M
