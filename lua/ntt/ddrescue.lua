-- lua/ntt/ddrescue.lua: runs GNU ddrescue for one imaging phase and watches it.
--
--   ddrescue.argv(args, source, image, map [, binary]) -> argv
--       ddrescue's own words of the phase (policy image.phases[i].args)
--       followed by the source, the image and the map: the map is always
--       given, so every phase resumes where the one before (or an
--       interrupted run) stopped and never reads a rescued area again.
--   ddrescue.status(text) -> st | nil
--       the last status ddrescue printed in text (its screen, written every
--       second to its output): { ipos=, rescued=, non_tried=, non_trimmed=,
--       non_scraped=, bad_sector=, bad_areas=, read_errors=, pct= } (bytes
--       as ddrescue rounds them: decimal kB, MB, ...); nil when none yet.
--   ddrescue.run(opts) -> result | nil, msg, code
--       opts: argv=, out= (file ddrescue's output is appended to, also read
--       for its status), budget= seconds (the phase's time; nil: none),
--       stall= seconds without any change in the status (the watchdog; nil:
--       none), poll= seconds between looks (default 0.5), on_status=
--       function(st) (each new status), interrupted= function() -> bool
--       result = { outcome = "done" | "budget" | "stall" | "interrupted" |
--                  "failed", exit=, signal=, seconds=, status= }
--       Ending early (budget, stall, ^C) sends ddrescue SIGINT, upon which it
--       writes its map and exits; after `grace` (10 s) it is killed.
--       "failed": ddrescue exited non-zero by itself (1: a file could not be
--       opened, 2: a bad map, 3: internal); result.tail has its last words.
--       nil, msg, code: ddrescue could not be started (ENOENT: not installed).
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"

local M = {}

M.binary = "ddrescue"
M.grace = 10
local SIGINT, SIGKILL = 2, 9

function M.argv(args, source, image, map, binary)
  local argv = { binary or M.binary }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  argv[#argv + 1] = source
  argv[#argv + 1] = image
  argv[#argv + 1] = map
  return argv
end

local UNIT = { B = 1, kB = 1e3, MB = 1e6, GB = 1e9, TB = 1e12, PB = 1e15, EB = 1e18 }

local function size_of(n, unit)
  local v = tonumber(n)
  if not v then return nil end
  return math.floor(v * (UNIT[unit] or 1) + 0.5)
end

-- The last value of `name:` in text, as a number of bytes.
local function last_size(text, name)
  local v
  for n, u in text:gmatch(name .. ":%s*([%d%.]+)%s*(%a*B)") do v = size_of(n, u) end
  return v
end

local function last_count(text, name)
  local v
  for n in text:gmatch(name .. ":%s*(%d+)") do v = tonumber(n) end
  return v
end

function M.status(text)
  if not text:find("rescued:", 1, true) then return nil end
  local pct
  for n in text:gmatch("pct rescued:%s*([%d%.]+)%%") do pct = tonumber(n) end
  local st = {
    ipos = last_size(text, "ipos"), rescued = last_size(text, "\n%s*rescued"),
    non_tried = last_size(text, "non%-tried"), non_trimmed = last_size(text, "non%-trimmed"),
    non_scraped = last_size(text, "non%-scraped"), bad_sector = last_size(text, "bad%-sector"),
    bad_areas = last_count(text, "bad areas"), read_errors = last_count(text, "read errors"), pct = pct,
  }
  if not st.rescued then st.rescued = last_size(text, "rescued") end
  return st
end

-- What the watchdog compares: a status that moved is progress.
local function fingerprint(st)
  return table.concat({ tostring(st.ipos), tostring(st.rescued), tostring(st.non_tried), tostring(st.non_trimmed),
                        tostring(st.non_scraped), tostring(st.bad_sector), tostring(st.read_errors) }, " ")
end

-- Reads what was appended to the file since pos: text, new pos.
local function read_from(path, pos)
  local f = io.open(path, "rb")
  if not f then return "", pos end
  f:seek("set", pos)
  local s = f:read(65536) or ""
  f:close()
  return s, pos + #s
end

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n or 0
end

function M.run(opts)
  if type(opts) ~= "table" or type(opts.argv) ~= "table" or type(opts.out) ~= "string" then
    error("ddrescue.run: {argv=, out=} expected", 2)
  end
  local poll = opts.poll or 0.5
  local interrupted = opts.interrupted or util.interrupted
  local pos = file_size(opts.out)
  -- (ntt killed, even by SIGKILL: ddrescue gets SIGINT, saves its map, stops)
  local p, err, code = proc.spawn { argv = opts.argv, stdout = opts.out, stderr = "stdout", stdin = "null",
                                    parent_death = SIGINT }
  if not p then return nil, err, code end
  local t0 = util.monotonic()
  local buf, last_fp, moved_at, status = "", nil, t0, nil
  local ending, ended_at             -- why we asked it to stop, and when
  local how, exit
  -- a second ^C raises out of the loop: ddrescue (in its own session) is
  -- stopped the clean way before the error goes on
  local ok, lerr = pcall(function()
    while true do
      local w, x = p:wait(poll)
      if w then how, exit = w, x; break end
      local now = util.monotonic()
      local chunk
      chunk, pos = read_from(opts.out, pos)
      if #chunk > 0 then
        buf = (buf .. chunk):sub(-4096)
        local st = M.status(buf)
        if st then
          status = st
          local fp = fingerprint(st)
          if fp ~= last_fp then last_fp, moved_at = fp, now end
          if opts.on_status then opts.on_status(st) end
        end
      end
      if not ending then
        if interrupted() then ending = "interrupted"
        elseif opts.budget and now - t0 >= opts.budget then ending = "budget"
        elseif opts.stall and now - moved_at >= opts.stall then ending = "stall" end
        if ending then
          ended_at = now
          p:kill(SIGINT)
        end
      elseif now - ended_at >= M.grace then
        p:kill(SIGKILL)
        ended_at = math.huge          -- once
      end
    end
  end)
  if not ok then
    p:kill(SIGINT)
    error(lerr, 0)
  end
  local chunk = read_from(opts.out, pos)
  if #chunk > 0 then
    buf = (buf .. chunk):sub(-4096)
    status = M.status(buf) or status
  end
  local res = { seconds = util.monotonic() - t0, status = status }
  if how == "signal" then res.signal = exit else res.exit = exit end
  if ending then
    res.outcome = ending
  elseif how == "exit" and exit == 0 then
    res.outcome = "done"
  else
    res.outcome = "failed"
    res.tail = buf:gsub("\27%[A", ""):gsub("\r", "\n"):match("([^\n]*[^\n%s][^\n]*)%s*$")
  end
  return res
end

return M
