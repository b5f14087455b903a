-- lua/ntt/rules.lua: ordered decision rules (predicates + actions).
--
-- A rule list is { {predicate, action}, ... }; the first rule whose
-- predicate holds decides, and every rule counts its hits (the copier logs
-- them and stores them with the run, by label()).  Predicates are
-- lower-case constructors over a set of findings (strings such as
-- "detected_io_error", "dmesg:io_error"); actions are upper-case values the
-- runtime carries out.
--   has "f"            the finding is present
--   all("a", "b")      every finding is present
--   any("a", "b")      at least one is present
--   never_ / always    constants
--   SKIP "REASON"      give up on the file permanently with that reason
--   REMOUNT            remount the medium and reset the attempt count
--   CONTINUE           keep retrying
--   GIVE_UP "failed_permanent" | "failed_retryable"
local M = {}

local pred_mt = { __name = "ntt.predicate" }
local action_mt = { __name = "ntt.action" }
action_mt.__tostring = function(a)
  return a.reason and ("%s %q"):format(a.kind, a.reason) or a.kind
end
pred_mt.__tostring = function(p) return "predicate " .. p.doc end
pred_mt.__call = function(p, findings) return p.fn(findings) end

local function predicate(doc, fn) return setmetatable({ doc = doc, fn = fn }, pred_mt) end

-- findings: a set (name -> true) or a list of names.
local function as_set(findings)
  if findings[1] ~= nil then
    local s = {}
    for _, f in ipairs(findings) do s[f] = true end
    return s
  end
  return findings
end

function M.has(name)
  assert(type(name) == "string", "has: finding name expected")
  return predicate(("has %q"):format(name), function(f) return as_set(f)[name] == true end)
end

function M.all(...)
  local names = { ... }
  return predicate("all(" .. table.concat(names, ", ") .. ")", function(f)
    local s = as_set(f)
    for _, n in ipairs(names) do if not s[n] then return false end end
    return true
  end)
end

function M.any(...)
  local names = { ... }
  return predicate("any(" .. table.concat(names, ", ") .. ")", function(f)
    local s = as_set(f)
    for _, n in ipairs(names) do if s[n] then return true end end
    return false
  end)
end

M.always = predicate("always", function() return true end)

local function action(kind, reason) return setmetatable({ kind = kind, reason = reason }, action_mt) end

function M.SKIP(reason)
  assert(type(reason) == "string", "SKIP: a reason string is expected")
  return action("skip", reason)
end
M.REMOUNT = action("remount")
M.CONTINUE = action("continue")
function M.GIVE_UP(state)
  assert(require("ntt.states").failed(state),
         "GIVE_UP: 'failed_permanent' or 'failed_retryable' expected")
  return action("give_up", state)
end

function M.is_predicate(v)
  return type(v) == "function" or getmetatable(v) == pred_mt
end
function M.is_action(v) return getmetatable(v) == action_mt end

-- Schema check for one rule (used by the policy schema).
function M.check_rule(r)
  if type(r) ~= "table" then return nil, "must be a {predicate, action} pair" end
  if not M.is_predicate(r[1]) then return nil, "needs a predicate first (ntt.has, ntt.all, ntt.any, ntt.always or a function)" end
  if not M.is_action(r[2]) then return nil, "needs an action second (ntt.SKIP, ntt.REMOUNT, ntt.CONTINUE, ntt.GIVE_UP)" end
  for k in pairs(r) do
    if k ~= 1 and k ~= 2 and k ~= "name" then return nil, ("has an unknown field '%s'"):format(tostring(k)) end
  end
  return true
end

-- The name of rule i of a list, for its hit counter: the rule's `name`,
-- else "i: predicate -> action" (e.g. '2: all(a, b) -> skip "X"').
function M.label(rules, i)
  local r = rules[i] or {}
  if r.name then return tostring(r.name) end
  local p = r[1]
  local doc = getmetatable(p) == pred_mt and p.doc or type(p)
  return ("%d: %s -> %s"):format(i, doc, tostring(r[2]))
end

-- Evaluate: first match wins; returns action, rule index.  hits[i] counts.
function M.decide(rules, findings, hits)
  local set = as_set(findings)
  for i, r in ipairs(rules) do
    local p = r[1]
    local ok = getmetatable(p) == pred_mt and p.fn(set) or (type(p) == "function" and p(set))
    if ok then
      if hits then hits[i] = (hits[i] or 0) + 1 end
      return r[2], i
    end
  end
  return nil
end

return M
