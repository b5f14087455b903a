-- lua/ntt/schema.lua: validation of option tables (checkgauge-style).
--
-- A schema is a table mapping each allowed key to a type spec:
--   "string" | "number" | "integer" | "boolean" | "function" | "table" | "any"
--   "integer|function" (alternatives), a trailing "?" is accepted and ignored
--   (every key is optional; defaults come from the default policy),
--   { "a", "b", "c" }          one of these strings (enum),
--   { list = spec }            an array whose items match spec,
--   { section = schema }       a nested table checked against schema,
--   { check = fn, doc = "..." } fn(value) -> true | nil, "why"
--   { type = "integer", min = 1 [, max = n] }  a simple type with bounds
-- check(value, schema, where) -> true | nil, msg, keypath
-- The caller turns keypath into the policy's file:line.
local M = {}

-- Levenshtein distance, for "did you mean".
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

function M.nearest(word, candidates)
  local best, bestd
  for _, c in ipairs(candidates) do
    local d = distance(word:lower(), c:lower())
    if not bestd or d < bestd or (d == bestd and c < best) then best, bestd = c, d end
  end
  if best and bestd <= math.max(2, #word // 3) then return best end
  return nil
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks, function(a, b) return tostring(a) < tostring(b) end)
  return ks
end

local function typename(v)
  local t = math.type(v) or type(v)
  if t == "float" then return "number" end
  return t
end

local function check_simple(v, spec)
  for alt in spec:gsub("%?$", ""):gmatch("[^|]+") do
    if alt == "any" then return true end
    local t = typename(v)
    if alt == t or (alt == "number" and t == "integer")
       or (alt == "integer" and t == "number" and math.tointeger(v)) then
      return true
    end
  end
  local want = spec:gsub("%?$", ""):gsub("|", " or ")
  local article = want:match("^[aeiou]") and "an" or "a"
  return nil, ("must be %s %s (got %s)"):format(article, want, typename(v))
end

local check

local function join(where, k)
  if math.type(k) == "integer" then return ("%s[%d]"):format(where, k) end
  if where == "" then return k end
  return where .. "." .. k
end

function check(v, spec, where)
  if type(spec) == "string" then
    local ok, why = check_simple(v, spec)
    if not ok then return nil, ("%s %s"):format(where, why), where end
    return true
  end
  if spec.type then
    local ok, why = check_simple(v, spec.type)
    if not ok then return nil, ("%s %s"):format(where, why), where end
    if (spec.min and v < spec.min) or (spec.max and v > spec.max) then
      local want = spec.max and ("from %s to %s"):format(spec.min, spec.max) or ("at least %s"):format(spec.min)
      return nil, ("%s must be %s (got %s)"):format(where, want, tostring(v)), where
    end
    return true
  end
  if spec.check then
    local ok, why = spec.check(v)
    if not ok then return nil, ("%s %s"):format(where, why), where end
    return true
  end
  if spec.list then
    if type(v) ~= "table" then
      return nil, ("%s must be a list (got %s)"):format(where, typename(v)), where
    end
    for k in pairs(v) do
      if math.type(k) ~= "integer" or k < 1 or k > #v then
        return nil, ("%s must be a list; unexpected key '%s'"):format(where, tostring(k)), join(where, tostring(k))
      end
    end
    for i, item in ipairs(v) do
      local ok, msg, path = check(item, spec.list, join(where, i))
      if not ok then return nil, msg, path end
    end
    return true
  end
  if spec.section then
    if type(v) ~= "table" then
      return nil, ("%s must be a table (got %s)"):format(where, typename(v)), where
    end
    for _, k in ipairs(sorted_keys(v)) do
      local sub = spec.section[k]
      if sub == nil then
        local names = sorted_keys(spec.section)
        local near = type(k) == "string" and M.nearest(k, names)
        local in_where = where == "" and "the policy" or where
        local msg = ("unknown option '%s' in %s"):format(tostring(k), in_where)
        if near then msg = msg .. (" (did you mean '%s'?)"):format(near) end
        return nil, msg, join(where, tostring(k))
      end
      local ok, msg, path = check(v[k], sub, join(where, k))
      if not ok then return nil, msg, path end
    end
    return true
  end
  -- enum
  if type(v) ~= "string" then
    return nil, ("%s must be one of %s (got %s)"):format(where, table.concat(spec, ", "), typename(v)), where
  end
  for _, s in ipairs(spec) do if s == v then return true end end
  local near = M.nearest(v, spec)
  local msg = ("%s must be one of %s (got '%s')"):format(where, table.concat(spec, ", "), v)
  if near then msg = msg .. (" (did you mean '%s'?)"):format(near) end
  return nil, msg, where
end

function M.check(v, schema, where)
  return check(v, { section = schema }, where or "")
end

return M
