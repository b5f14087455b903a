-- lua/ntt/repl.lua: helpers for `ntt repl`: the pretty-printer the loop
-- uses to echo results, and small tools for poking at a policy.
--   pretty(v, [opts]) -> string   (sorted keys, nested, cycles marked)
--   show(...)                      prints each value with pretty()
--   explain(policy, findings)      which diagnose rule decides, and its action
local M = {}

local function key_repr(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return k end
  return "[" .. M.pretty(k, { depth = 1 }) .. "]"
end

local function str_repr(s)
  if s:find("[%c\128-\255]") and not utf8.len(s) then return ("%q"):format(s) end
  return ("%q"):format(s):gsub("\\\n", "\\n")
end

local function pretty(v, depth, indent, seen, limit)
  local t = type(v)
  if t == "string" then return str_repr(v) end
  if t ~= "table" then return tostring(v) end
  local mt = getmetatable(v)
  if mt and mt.__tostring and mt.__name ~= "ntt.policy" then return tostring(v) end
  if seen[v] then return "<cycle>" end
  if depth > limit then return "{...}" end
  seen[v] = true
  local keys, n = {}, #v
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  local items = {}
  for i = 1, n do items[#items + 1] = pretty(v[i], depth + 1, indent .. "  ", seen, limit) end
  for _, k in ipairs(keys) do
    items[#items + 1] = key_repr(k) .. " = " .. pretty(v[k], depth + 1, indent .. "  ", seen, limit)
  end
  seen[v] = nil
  if #items == 0 then return "{}" end
  local flat = "{ " .. table.concat(items, ", ") .. " }"
  if #flat <= 72 and not flat:find("\n") then return flat end
  return "{\n" .. indent .. "  " .. table.concat(items, ",\n" .. indent .. "  ") .. "\n" .. indent .. "}"
end

function M.pretty(v, opts)
  return pretty(v, 1, "", {}, (opts and opts.depth) or 6)
end

function M.show(...)
  for i = 1, select("#", ...) do
    io.stdout:write(M.pretty((select(i, ...))), "\n")
  end
  io.stdout:flush()
end

function M.explain(policy, findings)
  local rules = require "ntt.rules"
  local action, i = rules.decide(policy.diagnose or {}, findings)
  if not action then return "no rule matches" end
  return ("rule %d (%s) -> %s"):format(i, tostring(policy.diagnose[i][1]), tostring(action))
end

return M
