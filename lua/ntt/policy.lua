-- lua/ntt/policy.lua: loading, validating and inheriting policies.
--
-- A policy file runs in its own environment (standard library only;
-- assigning or reading an undeclared global raises), returns
-- `ntt.policy { ... }` or `ntt.policy.extend("default", { ... })`, and is
-- validated against the schema below before anything else happens.  Errors
-- name the policy's file:line and, for unknown keys, the nearest valid key.
--
-- Merge rules for extend(base, overrides):
--   * sections (tables with named keys) merge key by key, recursively;
--   * lists (stages, diagnose, enumerate.ignore, ...) are replaced whole,
--     unless wrapped: policy.append{...} / policy.prepend{...} add to the
--     inherited list;
--   * any other value (number, string, function) replaces;
--   * policy.remove deletes the inherited key.
local schema = require "ntt.schema"
local rules = require "ntt.rules"
local embed = require "ntt.core.embed"

local M = {}

local policy_mt = { __name = "ntt.policy" }
local wrap_mt = { __name = "ntt.policy.listop" }
M.remove = setmetatable({}, { __name = "ntt.policy.remove", __tostring = function() return "policy.remove" end })

function M.append(list) return setmetatable({ op = "append", items = list }, wrap_mt) end
function M.prepend(list) return setmetatable({ op = "prepend", items = list }, wrap_mt) end

-- Stage names the runtime knows; a stage may also be given as a function.
M.STAGES = { "image", "identify", "inspect", "mount", "enumerate", "copy", "tree", "verify", "report", "archive", "unmount" }

local function stage_check(v)
  if type(v) == "function" then return true end
  if type(v) ~= "string" then return nil, "must be a stage name or a function" end
  for _, s in ipairs(M.STAGES) do if s == v then return true end end
  local near = schema.nearest(v, M.STAGES)
  return nil, ("is not a stage: '%s'%s (stages: %s)"):format(v,
    near and (" (did you mean '%s'?)"):format(near) or "", table.concat(M.STAGES, ", "))
end

-- Ignore patterns are compiled when the policy loads: a bad one is the
-- policy's error (file:line), and enumerate is handed the compiled Regex
-- (M.ignore_of), never the text to compile again.  Keyed by the pattern:
-- a pattern means the same in every policy.
local compiled = {}

local function regex_check(v)
  if type(v) ~= "string" then return nil, ("must be a string (got %s)"):format(type(v)) end
  if compiled[v] then return true end
  local rx, why = require("ntt.core.util").regex(v)
  if not rx then return nil, "is not a valid pattern: " .. why end
  compiled[v] = rx
  return true
end

local function sec(t) return { section = t } end

-- store.min_free_bytes: a whole number of bytes, 0 or more.
local function bytes_check(v)
  if math.type(v) ~= "integer" and not (type(v) == "number" and math.tointeger(v)) then
    return nil, ("must be a whole number of bytes (got %s)"):format(type(v))
  end
  if v < 0 then return nil, ("must be 0 or more (got %d)"):format(math.tointeger(v)) end
  return true
end

-- store.min_free_fraction: a share of the store's filesystem, 0 <= f < 1.
local function fraction_check(v)
  if type(v) ~= "number" then return nil, ("must be a number (got %s)"):format(type(v)) end
  if not (v >= 0 and v < 1) then return nil, ("must be at least 0 and below 1 (got %s)"):format(tostring(v)) end
  return true
end

-- A FUSE mount type as the mount table writes it: "fuse.<driver>".
local function fuse_type_check(v)
  if type(v) == "string" and v:match("^fuse%.[%w_%.%-]+$") then return true end
  return nil, ("must be a FUSE mount type such as \"fuse.sshfs\" (got %s)"):format(
    type(v) == "string" and ("'" .. v .. "'") or type(v))
end

-- mount.reader: { FSTYPE = "tsk" | "fuse" | "none", ["*"] = ... } (docs/reader.md).
local function reader_check(v)
  if type(v) ~= "table" then return nil, ("must be a table of filesystem type = reader (got %s)"):format(type(v)) end
  for k, kind in pairs(v) do
    if type(k) ~= "string" or not (k == "*" or k:match("^[a-z0-9]+$")) or #k > 15 then
      return nil, ("key %s must be a filesystem type such as \"vfat\", or \"*\""):format(tostring(k))
    end
    if kind ~= "tsk" and kind ~= "fuse" and kind ~= "none" then
      return nil, ("%s: reader must be \"tsk\", \"fuse\" or \"none\" (got %s)"):format(k, tostring(kind))
    end
  end
  return true
end

-- Bounded numbers: counts of at least one, times never negative.
local function at_least(n, t) return { type = t or "integer", min = n } end
local seconds = at_least(0, "number")

M.schema = {
  name = "string",
  description = "string",
  workers = at_least(1),
  stages = { list = { check = stage_check } },
  targets = sec {
    folders = { "auto", "images", "tree" },
  },
  image = sec {
    dir = "string",
    binary = "string",
    smart = "boolean",
    more = "boolean",
    stall = "number",
    poll = "number",
    phases = { list = sec { name = "string", args = { list = "string" }, budget = "number", stall = "number",
                            works_on = "string", skip_above = "number", give_up_below = "number" } },
    more_phases = { list = sec { name = "string", args = { list = "string" }, budget = "number", stall = "number",
                                 works_on = "string", skip_above = "number", give_up_below = "number" } },
  },
  identify = sec {
    map_age = "number",
  },
  inspect = sec {
    health = sec { incomplete = "number", corrupt = "number" },
    erased_bytes = { list = "integer" },
  },
  mount = sec {
    timeout = seconds,
    remounts = at_least(0),
    reader = { check = reader_check, doc = "filesystem type = \"tsk\" | \"fuse\" | \"none\"" },
  },
  enumerate = sec {
    ignore = { list = { check = regex_check, doc = "POSIX extended regular expression" } },
    stall_timeout = seconds,
    busy_wait = seconds,
    threads = at_least(1),
    raw_audit = "boolean",
  },
  copy = sec {
    batch = at_least(1),
    durability = { "fsync", "batch", "none" },
    digests = { list = { "sha256" } },
    threads = "integer|function",
    buffer = at_least(1),
    lease = seconds,
    stall_timeout = seconds,
    adapt = "boolean",
    damaged = { "record", "salvage" },
    retry_failed = "boolean",
    deleted = { "record", "recover" },
    network_fuse = { list = { check = fuse_type_check } },
  },
  store = sec {
    min_free_bytes = { check = bytes_check, doc = "bytes, 0 or more" },
    min_free_fraction = { check = fraction_check, doc = "0 <= f < 1" },
    db_free_bytes = { check = bytes_check, doc = "bytes, 0 or more" },
  },
  archive = sec {
    remove_sources = "boolean",
    level = "integer",
    threads = "integer",
  },
  verify = sec {
    after_copy = "boolean",
    threads = at_least(1),
    rate = "number",
  },
  tree = sec {
    batch = at_least(1),
    threads = at_least(1),
    link_max = at_least(2),
  },
  retry = sec {
    checkpoint = at_least(1),
    max = at_least(1),
    history = at_least(0),
    backoff = sec { base = seconds, factor = seconds, cap = seconds },
    confirm = sec { attempts = at_least(1), seconds = seconds },
  },
  diagnose = { list = { check = rules.check_rule } },
  kernel_patterns = { list = sec { pattern = "string", finding = "string" } },
  problems = sec {
    max_events = "integer",
    high_error_rate = sec { rate = "number", min_files = "integer" },
  },
  log = sec {
    level = { "error", "warn", "info", "debug" },
    max_bytes = "integer",
    keep = "integer",
  },
  report = sec { dir = "string", limit = at_least(1) },
  progress = sec { interval = seconds, bar = { "auto", "always", "never" } },
  hooks = sec { on_stage = "function", on_problem = "function", on_finish = "function" },
}

local THIS = debug.getinfo(1, "S").source

-- File, current line and source text of the nearest caller outside this
-- module: the policy being loaded.
local function caller_source()
  local info
  for level = 2, 50 do
    info = debug.getinfo(level, "Sl")
    if not info then return nil end
    if info.source ~= THIS and info.what ~= "C" then break end
  end
  local src = info.source
  local text
  if src:sub(1, 1) == "@" then
    local name = src:sub(2)
    local f = io.open(name, "rb")
    if f then text = f:read("a"); f:close()
    else text = embed.get(name) end
  end
  return src:sub(1, 1) == "@" and src:sub(2) or src, info.currentline, text
end

-- Best line for a key path ("copy.thredas", "diagnose[3]") in source text.
local function locate(text, keypath, from)
  if not text then return from end
  local lines = {}
  for l in (text .. "\n"):gmatch("(.-)\r?\n") do lines[#lines + 1] = l end
  local line = from or 1
  for part in keypath:gmatch("[^%.]+") do
    local name, idx = part:match("^([%w_]+)%[?(%d*)%]?$")
    if name then
      for i = line, #lines do
        if lines[i]:find("%f[%w_]" .. name .. "%s*=") or lines[i]:find("%[%s*[\"']" .. name .. "[\"']%s*%]%s*=") then
          line = i
          break
        end
      end
      if idx ~= "" then
        -- count list items after the key, one per line starting with '{'
        local n, want = 0, tonumber(idx)
        for i = line + 1, #lines do
          if lines[i]:find("^%s*{") then n = n + 1 end
          if n == want then line = i; break end
        end
      end
    end
  end
  return line
end

-- Policy files being loaded, innermost last: {file=, text=}.  A policy
-- usually ends in a tail call (return ntt.policy{...}), which removes its
-- frame from the stack, so the file being loaded is the reliable name.
local loading = {}

local function fail(msg, keypath)
  local file, cur, text
  local top = loading[#loading]
  if top then
    file, cur, text = top.file, 1, top.text
  else
    file, cur, text = caller_source()
  end
  if file then
    local line = keypath and locate(text, keypath, cur) or cur
    error(("%s:%d: %s"):format(file, line, msg), 0)
  end
  error(msg, 0)
end

-- What one key cannot say alone: retries give up no earlier than their
-- first checkpoint.  Checked on a whole policy (an extend's merged result).
local function coherent(t)
  local r = type(t.retry) == "table" and t.retry or {}
  if math.type(r.max) and math.type(r.checkpoint) and r.max < r.checkpoint then
    return nil, ("retry.max (%d) must not be below retry.checkpoint (%d)"):format(r.max, r.checkpoint), "retry.max"
  end
  return true
end

local function validate(t, whole)
  local ok, msg, keypath = schema.check(t, M.schema)
  if ok and whole then ok, msg, keypath = coherent(t) end
  if not ok then fail(msg, keypath) end
end

-- ntt.policy { ... }: a validated policy.
function M.new(t)
  if type(t) ~= "table" then fail("ntt.policy expects a table") end
  if getmetatable(t) == policy_mt then return t end
  validate(t, true)
  return setmetatable(t, policy_mt)
end

local function is_section(v)
  return type(v) == "table" and getmetatable(v) == nil and next(v) ~= nil and v[1] == nil
end

local function copy(v)
  if type(v) ~= "table" or rules.is_action(v) or rules.is_predicate(v) then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = copy(x) end
  return setmetatable(c, getmetatable(v) == policy_mt and nil or getmetatable(v))
end

local function merge(base, over)
  local out = copy(base)
  for k, v in pairs(over) do
    local cur = out[k]
    if v == M.remove then
      out[k] = nil
    elseif getmetatable(v) == wrap_mt then
      local list = {}
      local old = type(cur) == "table" and cur or {}
      if v.op == "prepend" then
        for _, x in ipairs(v.items) do list[#list + 1] = x end
        for _, x in ipairs(old) do list[#list + 1] = x end
      else
        for _, x in ipairs(old) do list[#list + 1] = x end
        for _, x in ipairs(v.items) do list[#list + 1] = x end
      end
      out[k] = list
    elseif is_section(v) and type(cur) == "table" and cur[1] == nil then
      out[k] = merge(cur, v)
    else
      out[k] = copy(v)
    end
  end
  return out
end

-- Strip list operators so the overrides can be checked like a policy.
local function plain(over)
  local t = {}
  for k, v in pairs(over) do
    if v == M.remove then -- nothing to check
    elseif getmetatable(v) == wrap_mt then t[k] = v.items
    elseif is_section(v) then t[k] = plain(v)
    else t[k] = v end
  end
  return t
end

local load_file

local function readable(p)
  local f = io.open(p, "rb")
  if f then f:close() end
  return f ~= nil
end

-- Where installed policies are, in order: $NTT_POLICY_PATH (dirs, ":"),
-- then PREFIX/share/ntt/policies beside the running binary (PREFIX/bin/ntt;
-- a staged DESTDIR install finds its own tree the same way).
function M.dirs()
  local out = {}
  for d in (os.getenv("NTT_POLICY_PATH") or ""):gmatch("[^:]+") do out[#out + 1] = d end
  local exe = require("ntt.core.fs").realpath("/proc/self/exe")
  local prefix = exe and exe:match("^(.*)/bin/[^/]+$")
  if prefix then out[#out + 1] = prefix .. "/share/ntt/policies" end
  return out
end

-- Find a policy by name: a path, a file beside `from`, an installed one
-- (M.dirs), or an embedded one.  `policies/NAME.lua` that is not there (the
-- README's command run from another directory) is looked up as NAME.
function M.resolve(name, from_dir)
  if name:find("/") or name:find("%.lua$") then
    local path = name
    if from_dir and not name:find("^/") then path = from_dir .. "/" .. name end
    local short = name:match("^policies/([%w_%-]+)%.lua$")
    if short and not readable(path) then return M.resolve(short) end
    return path
  end
  if from_dir then
    local p = from_dir .. "/" .. name .. ".lua"
    if readable(p) then return p end
  end
  for _, d in ipairs(M.dirs()) do
    local p = d .. "/" .. name .. ".lua"
    if readable(p) then return p end
  end
  return "policies/" .. name .. ".lua", true
end

-- ntt.policy.extend(base, overrides): base is a policy or a policy name.
function M.extend(base, over)
  if type(over) ~= "table" then fail("policy.extend: overrides table expected") end
  local p = base
  if type(base) == "string" then
    local top = loading[#loading]
    local file = top and top.file or caller_source()
    local dir = file and file:match("^(.*)/[^/]*$")
    local path, embedded = M.resolve(base, dir)
    local err
    p, err = load_file(path, embedded)
    if not p then fail(("cannot extend '%s': %s"):format(base, err)) end
  elseif getmetatable(base) ~= policy_mt then
    fail("policy.extend: base must be a policy or a policy name")
  end
  validate(plain(over))
  local merged = merge(p, over)
  validate(merged, true)
  return setmetatable(merged, policy_mt)
end

-- The sandbox a policy runs in.
local function sandbox(name)
  local allowed = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    pcall = pcall, print = print, rawequal = rawequal, rawget = rawget, rawlen = rawlen,
    select = select, setmetatable = setmetatable, getmetatable = getmetatable,
    tonumber = tonumber, tostring = tostring, type = type, xpcall = xpcall,
    require = require, string = string, table = table, math = math, utf8 = utf8,
    os = { getenv = os.getenv, time = os.time, date = os.date, clock = os.clock },
    _VERSION = _VERSION,
  }
  return setmetatable({}, {
    __index = function(_, k)
      local v = allowed[k]
      if v == nil then
        error(("undefined global '%s' in policy %s (declare it with 'local')"):format(tostring(k), name), 2)
      end
      return v
    end,
    __newindex = function(_, k)
      error(("assignment to global '%s' in policy %s (use 'local')"):format(tostring(k), name), 2)
    end,
  })
end

function load_file(path, embedded)
  local src, chunk
  if embedded then
    src, chunk = embed.get(path)
    if not src then return nil, ("no policy %s"):format(path), "ENOENT" end
  else
    local f, err, errno = io.open(path, "rb")
    if not f then return nil, err, require("ntt.core.util").errname(errno) end
    src = f:read("a")
    f:close()
    chunk = "@" .. path
  end
  local fn, err = load(src, chunk, "t", sandbox(path))
  if not fn then return nil, err, "EINVAL" end
  loading[#loading + 1] = { file = chunk:gsub("^@", ""), text = src }
  local ok, res = pcall(fn)
  loading[#loading] = nil
  if not ok then return nil, tostring(res), "EINVAL" end
  if getmetatable(res) == policy_mt then return res end
  if type(res) ~= "table" then
    return nil, ("%s: a policy must return ntt.policy { ... } (got %s)"):format(path, type(res)), "EINVAL"
  end
  -- A plain table: validate it here, naming this file.
  local ok2, msg, keypath = schema.check(res, M.schema)
  if ok2 then ok2, msg, keypath = coherent(res) end
  if not ok2 then
    return nil, ("%s:%d: %s"):format(chunk:gsub("^@", ""), locate(src, keypath, 1), msg), "EINVAL"
  end
  return setmetatable(res, policy_mt)
end

-- policy.load(path_or_name) -> policy | nil, msg, code ("EINVAL": the policy
-- is wrong, msg naming its file:line; else why it could not be read)
function M.load(name)
  local path, embedded = M.resolve(name)
  if not embedded then return load_file(path) end
  return load_file(path, true)
end

-- The compiled enumerate.ignore patterns of a policy, in order.
function M.ignore_of(policy)
  local out = {}
  for i, pat in ipairs((policy.enumerate or {}).ignore or {}) do
    if not compiled[pat] then assert(regex_check(pat)) end
    out[i] = compiled[pat]
  end
  return out
end

function M.is_policy(v) return getmetatable(v) == policy_mt end

-- Calls policy.hooks[name](...) if the policy has it, in a protected call:
-- a failing hook is logged (hook_failed) and the run goes on.
function M.call_hook(policy, log, name, ...)
  local fn = (policy and policy.hooks or {})[name]
  if not fn then return end
  local ok, err = pcall(fn, ...)
  if not ok and log then
    log:error("hook_failed", { hook = name, error = tostring(err) }, ("hooks.%s failed: %s"):format(name, tostring(err)))
  end
end

return setmetatable(M, { __call = function(_, t) return M.new(t) end })
