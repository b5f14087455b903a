-- spec/errors_spec.lua: every expected failure of a Lua module under
-- lua/ntt carries a code (docs/errors.md): a static scan finds each
-- `return nil, X` whose statement ends after X, i.e. a failure with a
-- message and no code.  The only ones allowed are the schema validators
-- listed in SCHEMA_VALIDATORS.
local luasrc = require "spec.support.luasrc"

-- Functions that return (nil, reason) to the policy schema checker
-- (lua/ntt/schema.lua), which turns the reason into the policy's error
-- naming file:line (policy.load: nil, "file:line: ...", "EINVAL").  That
-- is an internal contract, not an expected failure seen by callers, so
-- these need no code.  Keyed "file:function".
local SCHEMA_VALIDATORS = {
  ["lua/ntt/policy.lua:stage_check"] = true,      -- stages = { list = { check = ... } }
  ["lua/ntt/policy.lua:regex_check"] = true,      -- enumerate.ignore patterns
  ["lua/ntt/policy.lua:fuse_type_check"] = true,  -- network_fuse types
  ["lua/ntt/policy.lua:bytes_check"] = true,      -- store.min_free_bytes
  ["lua/ntt/policy.lua:fraction_check"] = true,   -- store.min_free_fraction
  ["lua/ntt/policy.lua:reader_check"] = true,     -- mount.reader
  ["lua/ntt/rules.lua:M.check_rule"] = true,      -- diagnose = { list = { check = ... } }
  ["lua/ntt/schema.lua:check_simple"] = true,     -- the checker's own type test
}

-- Lua tokens { v = text, kind = "name"|"string"|"number"|"op", line = n };
-- comments dropped.
local function tokens(text)
  local toks, i, n, line = {}, 1, #text, 1
  local function push(kind, v)
    toks[#toks + 1] = { kind = kind, v = v, line = line }
    local _, breaks = v:gsub("\n", "")
    line = line + breaks
  end
  while i <= n do
    local c = text:sub(i, i)
    if c == "\n" then line = line + 1; i = i + 1
    elseif c:match("%s") then i = i + 1
    elseif text:sub(i, i + 1) == "--" then
      local stop = luasrc.comment_end(text, i)
      local _, breaks = text:sub(i, stop):gsub("\n", "")
      line = line + breaks
      i = stop + 1
    elseif c == "[" and text:match("^%[=*%[", i) then
      local eq = text:match("^%[(=*)%[", i)
      local _, e = text:find("]" .. eq .. "]", i, true)
      e = e or n
      push("string", text:sub(i, e)); i = e + 1
    elseif c == '"' or c == "'" then
      local j = i + 1
      while j <= n and text:sub(j, j) ~= c do
        j = j + (text:sub(j, j) == "\\" and 2 or 1)
      end
      push("string", text:sub(i, j)); i = j + 1
    elseif c:match("[%a_]") then
      local w = text:match("^[%w_]+", i)
      push("name", w); i = i + #w
    elseif c:match("%d") or (c == "." and text:sub(i + 1, i + 1):match("%d")) then
      local w = text:match("^0[xX][%x%.]+[pP][%+%-]?%d+", i) or text:match("^0[xX][%x%.]+", i)
        or text:match("^[%d%.]+[eE][%+%-]?%d+", i) or text:match("^[%d%.]+", i)
      push("number", w); i = i + #w
    else
      local p = text:match("^%.%.%.", i) or text:match("^[=~<>]=", i) or text:match("^%.%.", i)
        or text:match("^::", i) or text:match("^//", i) or text:match("^<<", i) or text:match("^>>", i) or c
      push("op", p); i = i + #p
    end
  end
  return toks
end

local OPENS = { ["function"] = true, ["if"] = true, ["do"] = true, ["repeat"] = true }
local CLOSES = { ["end"] = true, ["until"] = true }
local BRACKETS = { ["("] = 1, ["["] = 1, ["{"] = 1, [")"] = -1, ["]"] = -1, ["}"] = -1 }
-- What may follow a return statement (it is the last of its block).
local AFTER_RETURN = { ["end"] = true, ["else"] = true, ["elseif"] = true, ["until"] = true }

-- The name after `function` (a.b:c), or "(anonymous)".
local function function_name(toks, k)
  local parts, j = {}, k + 1
  while toks[j] and (toks[j].kind == "name" or toks[j].v == "." or toks[j].v == ":") do
    parts[#parts + 1] = toks[j].v
    j = j + 1
  end
  return #parts > 0 and table.concat(parts) or "(anonymous)"
end

-- The number of values of the return statement at toks[k], and where it ends.
local function count_values(toks, k)
  local depth, values, j = 0, 1, k + 1
  if not toks[j] or AFTER_RETURN[toks[j].v] or toks[j].v == ";" then return 0, j end
  while toks[j] do
    local t = toks[j]
    if t.kind == "op" and BRACKETS[t.v] then depth = depth + BRACKETS[t.v]
    elseif t.kind == "name" and OPENS[t.v] then depth = depth + 1
    elseif depth == 0 and ((t.kind == "name" and AFTER_RETURN[t.v]) or t.v == ";") then break
    elseif t.kind == "name" and CLOSES[t.v] then depth = depth - 1
    elseif depth == 0 and t.v == "," then values = values + 1 end
    j = j + 1
  end
  return values, j
end

-- Findings { line=, fn=, text= } for one file: `return nil, X` ending after X.
local function scan(text)
  local toks = tokens(text)
  local found, blocks = {}, {}
  local function current_function()
    for b = #blocks, 1, -1 do
      if blocks[b] ~= true then return blocks[b] end
    end
    return "(main chunk)"
  end
  for k, t in ipairs(toks) do
    if t.kind == "name" then
      if t.v == "function" then blocks[#blocks + 1] = function_name(toks, k)
      elseif OPENS[t.v] then blocks[#blocks + 1] = true
      elseif CLOSES[t.v] then blocks[#blocks] = nil
      elseif t.v == "return" and toks[k + 1] and toks[k + 1].v == "nil"
             and toks[k + 2] and toks[k + 2].v == "," then
        local values, stop = count_values(toks, k)
        if values == 2 then
          local words = {}
          for j = k, math.min(stop - 1, k + 8) do words[#words + 1] = toks[j].v end
          found[#found + 1] = { line = t.line, fn = current_function(), text = table.concat(words, " ") }
        end
      end
    end
  end
  return found
end

describe("errors: every expected failure carries a code", function()
  it("the scan finds `return nil, X` without a code, and only that", function()
    local text = table.concat({
      'local M = {}',                                                -- 1
      'function M.open(path)',                                       -- 2
      '  local f, err = io.open(path)',                              -- 3
      '  if not f then return nil, err end',                         -- 4  finding
      '  if #path > 100 then return nil, "too long", "ENAMETOOLONG" end',
      '  local ok, e, c = f:seek("end")',                            -- 6
      '  if not ok then return nil, ("seek %s: %s"):format(path,',  -- 7
      '    e), c end',                                               -- 8
      '  if ok == 0 then',                                           -- 9
      '    return nil, ("empty %s")',                                -- 10 finding
      '      :format(path)',                                         -- 11
      '  end',                                                       -- 12
      '  -- return nil, "in a comment"',                             -- 13
      '  local s = "return nil, in a string"',                       -- 14
      '  return f',                                                  -- 15
      'end',                                                         -- 16
      'local function check(v)',                                     -- 17
      '  if v then return nil, { a = 1, b = 2 } end',                -- 18 finding
      '  return nil, function() return nil, "inner", "EIO" end, "EIO"',
      'end',                                                         -- 20
      'local function lookup(t, k)',                                 -- 21
      '  if not t then return nil end',                              -- 22 no failure: absent
      '  repeat local x = 1 until x',                                -- 23
      '  return nil, msg;',                                          -- 24 finding
      'end',                                                         -- 25
      'return M',
    }, "\n")
    local got = {}
    for _, f in ipairs(scan(text)) do got[#got + 1] = ("%d %s"):format(f.line, f.fn) end
    assert.same({ "4 M.open", "10 M.open", "18 check", "24 lookup" }, got)
  end)

  it("holds for every Lua module under lua/ntt (schema validators aside)", function()
    local files = luasrc.files("lua/ntt", { migrations = true })
    assert.is_true(#files > 30)
    local bad, used = {}, {}
    for _, path in ipairs(files) do
      for _, f in ipairs(scan(luasrc.read(path))) do
        local key = path .. ":" .. f.fn
        if SCHEMA_VALIDATORS[key] then
          used[key] = true
        else
          bad[#bad + 1] = ("%s:%d: %s ... (in %s): a failure without a code (docs/errors.md)")
            :format(path, f.line, f.text, f.fn)
        end
      end
    end
    for key in pairs(SCHEMA_VALIDATORS) do
      if not used[key] then bad[#bad + 1] = key .. ": listed as a schema validator but not found" end
    end
    table.sort(bad)
    assert(#bad == 0, "\n" .. table.concat(bad, "\n"))
  end)
end)
