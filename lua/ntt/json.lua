-- lua/ntt/json.lua: JSON for logs, helper output and problems.
--
-- encode(v) -> string: objects get sorted keys (stable logs and tests);
-- a table is an array when its keys are exactly 1..n (mark an empty array
-- with json.array{}); bytes that are not valid UTF-8 are written as \u00XX
-- so the output is always valid JSON.  decode(s) -> value | nil, msg:
-- objects become tables, null becomes json.null.
local M = {}

M.null = setmetatable({}, { __tostring = function() return "null" end })
local array_mt = { __name = "json.array" }

function M.array(t) return setmetatable(t or {}, array_mt) end

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}

local function encode_string(s)
  local out = s:gsub('[%c"\\]', function(c)
    return escapes[c] or ("\\u%04x"):format(c:byte())
  end)
  if not utf8.len(out) then
    -- Keep valid sequences, write stray bytes as code points U+0080..U+00FF.
    local parts, i, n = {}, 1, #out
    while i <= n do
      local c = out:byte(i)
      local len = c < 0x80 and 1 or c >= 0xF0 and 4 or c >= 0xE0 and 3 or c >= 0xC2 and 2 or 0
      local seq = len > 0 and out:sub(i, i + len - 1)
      if seq and #seq == len and utf8.len(seq) then
        parts[#parts + 1] = seq
        i = i + len
      else
        parts[#parts + 1] = ("\\u%04x"):format(c)
        i = i + 1
      end
    end
    out = table.concat(parts)
  end
  return '"' .. out .. '"'
end

local function is_array(t)
  if getmetatable(t) == array_mt then return true end
  local n = #t
  if n == 0 then return false end
  local count = 0
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 or k > n then return false end
    count = count + 1
  end
  return count == n
end

local encode

local function encode_table(t, seen)
  if seen[t] then error("json: cannot encode a cyclic table", 0) end
  seen[t] = true
  local parts = {}
  if is_array(t) then
    for i = 1, #t do parts[i] = encode(t[i], seen) end
    seen[t] = nil
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(t) do
    local kt = type(k)
    if kt ~= "string" and kt ~= "number" then
      error("json: cannot encode a key of type " .. kt, 0)
    end
    keys[#keys + 1] = tostring(k)
  end
  table.sort(keys)
  for i, k in ipairs(keys) do
    local v = t[k]
    if v == nil then v = t[tonumber(k)] end
    parts[i] = encode_string(k) .. ":" .. encode(v, seen)
  end
  seen[t] = nil
  return "{" .. table.concat(parts, ",") .. "}"
end

function encode(v, seen)
  local t = type(v)
  if v == nil or v == M.null then return "null"
  elseif t == "boolean" then return tostring(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if math.type(v) == "integer" then return tostring(v) end
    return (("%.17g"):format(v))
  elseif t == "string" then return encode_string(v)
  elseif t == "table" then return encode_table(v, seen or {})
  end
  error("json: cannot encode a " .. t, 0)
end

function M.encode(v) return encode(v, {}) end

-- Decoding ------------------------------------------------------------------

local function decoder(s)
  local pos = 1
  local function fail(what)
    error({ json = ("json: %s at byte %d"):format(what, pos) }, 0)
  end
  local function ws() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local value
  local function str()
    local parts = {}
    pos = pos + 1
    while true do
      local a, b = s:find('["\\]', pos)
      if not a then fail("unterminated string") end
      parts[#parts + 1] = s:sub(pos, a - 1)
      if s:sub(a, a) == '"' then pos = b + 1; break end
      local e = s:sub(a + 1, a + 1)
      if e == "u" then
        local hex = s:match("^%x%x%x%x", a + 2)
        if not hex then fail("bad \\u escape") end
        local cp = tonumber(hex, 16)
        local next_at = a + 6
        if cp >= 0xD800 and cp <= 0xDBFF then
          local lo = s:match("^\\u(%x%x%x%x)", next_at)
          if lo then
            cp = 0x10000 + (cp - 0xD800) * 0x400 + (tonumber(lo, 16) - 0xDC00)
            next_at = next_at + 6
          end
        end
        parts[#parts + 1] = utf8.char(cp)
        pos = next_at
      else
        local map = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t", ['"'] = '"', ["\\"] = "\\", ["/"] = "/" }
        if not map[e] then fail("bad escape") end
        parts[#parts + 1] = map[e]
        pos = a + 2
      end
    end
    return table.concat(parts)
  end
  function value()
    ws()
    local c = s:sub(pos, pos)
    if c == "{" then
      local t = {}
      pos = pos + 1; ws()
      if s:sub(pos, pos) == "}" then pos = pos + 1; return t end
      while true do
        ws()
        if s:sub(pos, pos) ~= '"' then fail("expected a key") end
        local k = str(); ws()
        if s:sub(pos, pos) ~= ":" then fail("expected ':'") end
        pos = pos + 1
        t[k] = value(); ws()
        local d = s:sub(pos, pos); pos = pos + 1
        if d == "}" then return t end
        if d ~= "," then fail("expected ',' or '}'") end
      end
    elseif c == "[" then
      local t = M.array {}
      pos = pos + 1; ws()
      if s:sub(pos, pos) == "]" then pos = pos + 1; return t end
      while true do
        t[#t + 1] = value(); ws()
        local d = s:sub(pos, pos); pos = pos + 1
        if d == "]" then return t end
        if d ~= "," then fail("expected ',' or ']'") end
      end
    elseif c == '"' then return str()
    elseif s:find("^true", pos) then pos = pos + 4; return true
    elseif s:find("^false", pos) then pos = pos + 5; return false
    elseif s:find("^null", pos) then pos = pos + 4; return M.null
    else
      local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
      if not num or num == "" or num == "-" then fail("unexpected character") end
      pos = pos + #num
      return math.tointeger(tonumber(num)) or tonumber(num)
    end
  end
  return function()
    local v = value(); ws()
    if pos <= #s then fail("trailing data") end
    return v
  end
end

function M.decode(s)
  if type(s) ~= "string" then return nil, "json: expected a string", "EINVAL" end
  local ok, v = pcall(decoder(s))
  if ok then return v end
  if type(v) == "table" and v.json then return nil, v.json, "EINVAL" end
  error(v, 0)
end

return M
