-- lua/ntt/log.lua: the ops log (JSONL), the error log, and stderr.
--
-- Every event is one JSON object per line in <dir>/ops.jsonl:
--   {"ts":"2026-11-22T10:00:00.123Z","level":"info","event":"copy_batch",...}
-- Warnings and errors also go to <dir>/errors.jsonl (the old tool's error
-- log stayed empty while 29,438 errors went elsewhere).  Each file rotates
-- by size: name -> name.1 -> ... -> name.<keep>.  Humans read stderr, which
-- is quiet by default (warnings and errors), -v adds info, --debug all.
--
--   log.open{dir=, level="info", stderr="warn", max_bytes=, keep=} -> Logger | nil, msg, errname
--       (the directory cannot be made, or a log file cannot be opened)
--   Logger:debug|info|warn|error(event, fields, [message]) 
--   Logger:detail(level, event, fields, [message])   one line per item (a
--       file skipped or failed, a problem recorded): written to the files
--       like any other line of its level (errors.jsonl from warn), shown on
--       stderr only from -v, so a medium of 5,000 failing files does not
--       flood the terminal
--   Logger:close()
--   log.set_default(logger); log.default() (a stderr-only logger until set)
--   log.info(...) etc. go to the default logger.
local json = require "ntt.json"
local util = require "ntt.core.util"

local M = {}

local LEVELS = { debug = 1, info = 2, warn = 3, error = 4 }
M.LEVELS = LEVELS

local Logger = {}
Logger.__index = Logger
Logger.__name = "ntt.Logger"

local function timestamp(t)
  local s = math.floor(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", s) .. (".%03dZ"):format(math.floor((t - s) * 1000))
end
M.timestamp = timestamp

local function open_append(path)
  local f, err, errno = io.open(path, "ab")
  if not f then return nil, err, util.errname(errno) end
  f:setvbuf("line")
  return f
end

local function rotate(stream)
  stream.f:close()
  for i = stream.keep - 1, 1, -1 do
    os.rename(("%s.%d"):format(stream.path, i), ("%s.%d"):format(stream.path, i + 1))
  end
  if stream.keep >= 1 then
    os.rename(stream.path, stream.path .. ".1")
  else
    os.remove(stream.path)
  end
  local f, err = open_append(stream.path)
  if not f then error(("log: cannot reopen %s: %s"):format(stream.path, err), 0) end
  stream.f, stream.size = f, 0
end

local function write(stream, line)
  if stream.max_bytes > 0 and stream.size > 0 and stream.size + #line > stream.max_bytes then
    rotate(stream)
  end
  stream.f:write(line)
  stream.size = stream.size + #line
end

local function new_stream(path, max_bytes, keep)
  local f, err, code = open_append(path)
  if not f then return nil, ("log: cannot open %s: %s"):format(path, err), code end
  return { path = path, f = f, size = f:seek("end") or 0, max_bytes = max_bytes, keep = keep }
end

function M.open(opts)
  opts = opts or {}
  local self = setmetatable({
    level = LEVELS[opts.level or "info"] or error("log: bad level " .. tostring(opts.level)),
    stderr_level = LEVELS[opts.stderr or "warn"] or error("log: bad stderr level " .. tostring(opts.stderr)),
    err = opts.err or io.stderr,
    fields = opts.fields or {},
  }, Logger)
  if opts.dir then
    local made, merr, mcode = require("ntt.core.fs").mkdirp(opts.dir)
    if not made then return nil, "log: cannot create directory: " .. merr, mcode end
    local max, keep = opts.max_bytes or 16 * 1024 * 1024, opts.keep or 5
    local e, c
    self.ops, e, c = new_stream(opts.dir .. "/ops.jsonl", max, keep)
    if not self.ops then return nil, e, c end
    self.errors, e, c = new_stream(opts.dir .. "/errors.jsonl", max, keep)
    if not self.errors then self.ops.f:close(); return nil, e, c end
  end
  return self
end

function Logger:log(level, event, fields, message, quiet)
  local lv = LEVELS[level]
  if self.closed then return end
  if lv >= self.level and self.ops then
    local rec = { ts = timestamp(util.now()), level = level, event = event }
    for k, v in pairs(self.fields) do rec[k] = v end
    if fields then for k, v in pairs(fields) do rec[k] = v end end
    if message then rec.msg = message end
    local line = json.encode(rec) .. "\n"
    write(self.ops, line)
    if lv >= LEVELS.warn then write(self.errors, line) end
  end
  if lv >= self.stderr_level and not (quiet and self.stderr_level > LEVELS.info) then
    local text = message
    if not text then
      local parts = {}
      if fields then
        local ks = {}
        for k in pairs(fields) do ks[#ks + 1] = k end
        table.sort(ks)
        for _, k in ipairs(ks) do
          local v = fields[k]
          parts[#parts + 1] = ("%s=%s"):format(k, type(v) == "table" and json.encode(v) or tostring(v))
        end
      end
      text = event .. (#parts > 0 and (" " .. table.concat(parts, " ")) or "")
    end
    self.err:write(("ntt: %s%s\n"):format(lv >= LEVELS.warn and (level .. ": ") or "", text))
  end
end

for name in pairs(LEVELS) do
  Logger[name] = function(self, event, fields, message) return self:log(name, event, fields, message) end
end

function Logger:detail(level, event, fields, message)
  return self:log(level, event, fields, message, true)
end

function Logger:close()
  if self.closed then return end
  self.closed = true
  if self.ops then self.ops.f:close(); self.errors.f:close() end
end
Logger.__close = Logger.close
Logger.__gc = Logger.close
Logger.__tostring = function(self)
  return ("ntt.Logger (%s)"):format(self.closed and "closed" or (self.ops and self.ops.path or "stderr"))
end

local default = M.open {}

function M.default() return default end
function M.set_default(l) default = l end
for name in pairs(LEVELS) do
  M[name] = function(...) return default:log(name, ...) end
end

return M
