-- lua/ntt/report.lua: what a condition report says about one medium.
--
--   report.model(conn, m [, opts]) -> model | nil, msg, code [, SQLSTATE]
--     m: a medium row (ntt.accounting.resolve); opts.limit: how many
--     entries of each list the model carries (default 200; the lists'
--     counts are always whole).  The model is the JSON report without its
--     lists' tails: docs/report.md, docs/report.schema.json.
--   report.each(conn, m, list, fn [, opts]) -> count | nil, msg, code [, SQLSTATE]
--     streams every entry of one list ("damaged", "unread") to fn(entry),
--     a server-side cursor at a time: memory stays flat however long the
--     list (opts.limit stops early; opts.raw: each entry as JSON text)
--
-- Everything comes from the database (and the medium's ddrescue map): a
-- report can be written for any medium ntt knows, mounted or not.
local db = require "ntt.db"
local json = require "ntt.json"
local S = require "ntt.states"

local M = {}

-- A name as reports print it (HTML, DFXML): valid UTF-8 stays as it is,
-- but for three escapes that keep it reversible and legal in XML 1.0 --
-- a backslash is written "\\", a control byte (0x00-0x1F, 0x7F) and every
-- byte that is not part of valid UTF-8 "\xNN" (two lowercase hex digits).
local function control(c) return ("\\x%02x"):format(c:byte()) end

function M.name(s)
  if s == nil then return nil end
  -- most names: plain ASCII, or valid UTF-8 (utf8.len is strict in Lua 5.4:
  -- no overlong forms, no surrogates) with at most an escape or two
  if not s:find("[%z\1-\31\127\\\128-\255]") then return s end
  if utf8.len(s) then return (s:gsub("\\", "\\\\"):gsub("[%z\1-\31\127]", control)) end
  local out, i, n = {}, 1, #s
  while i <= n do
    local c = s:byte(i)
    local len = c < 0x80 and 1 or (c >= 0xC2 and c <= 0xDF) and 2 or (c >= 0xE0 and c <= 0xEF) and 3
                or (c >= 0xF0 and c <= 0xF4) and 4 or 0
    local ok = len > 0 and i + len - 1 <= n and utf8.len(s, i, i + len - 1) == 1
    if ok and len > 1 then
      -- utf8.len accepts surrogates and overlongs are excluded by the lead
      -- byte ranges only in part: check the code point
      local cp = utf8.codepoint(s, i)
      ok = not (cp >= 0xD800 and cp <= 0xDFFF) and cp <= 0x10FFFF
           and not (len == 3 and cp < 0x800) and not (len == 4 and cp < 0x10000)
    end
    if ok and len == 1 then
      if c == 0x5C then out[#out + 1] = "\\\\"
      elseif c < 0x20 or c == 0x7F then out[#out + 1] = ("\\x%02x"):format(c)
      else out[#out + 1] = string.char(c) end
      i = i + 1
    elseif ok then
      out[#out + 1] = s:sub(i, i + len - 1)
      i = i + len
    else
      out[#out + 1] = ("\\x%02x"):format(c)
      i = i + 1
    end
  end
  return table.concat(out)
end

M.SCHEMA = "ntt-report/1"
M.LISTS = { "damaged", "unread" }

local STAGE_COLS = { "identified_at", "inspected_at", "mounted_at", "enum_done", "copy_done",
                     "verified_at", "archived_at" }

-- The query of one list over the medium's partitions (it, pt).  The first
-- path of each inode names it (hardlinks: the smallest).
local LIST_SQL = {
  damaged = [[
    SELECT i.fs_index, i.ino, i.size, i.state::text AS state, i.reason, i.damage::text AS damage,
           (SELECT p.path FROM %s p WHERE p.fs_index = i.fs_index AND p.ino = i.ino ORDER BY p.path LIMIT 1) AS path,
           jsonb_build_object('fs_index', i.fs_index, 'ino', i.ino, 'size', i.size, 'state', i.state, 'reason', i.reason,
             'ranges', coalesce(i.damage, '[]'::jsonb),
             'damaged_bytes', (SELECT coalesce(sum((d->>'length')::bigint), 0) FROM jsonb_array_elements(
                                 CASE WHEN jsonb_typeof(i.damage) = 'array' THEN i.damage ELSE '[]'::jsonb END) d))::text AS j
      FROM %s i WHERE i.state = '%s' ORDER BY i.fs_index, i.ino]],
  unread = [[
    SELECT i.fs_index, i.ino, i.size, i.state::text AS state, i.reason, i.attempts,
           i.errors -> -1 AS last_error_json,
           (SELECT p.path FROM %s p WHERE p.fs_index = i.fs_index AND p.ino = i.ino ORDER BY p.path LIMIT 1) AS path,
           jsonb_strip_nulls(jsonb_build_object('fs_index', i.fs_index, 'ino', i.ino, 'size', i.size, 'state', i.state,
             'reason', i.reason, 'attempts', i.attempts, 'last_error', i.errors -> -1))::text AS j
      FROM %s i WHERE i.state IN ('%s', '%s', '%s') ORDER BY i.fs_index, i.ino]],
}

local function list_sql(name, it, pt)
  if name == "damaged" then return LIST_SQL.damaged:format(pt, it, S.DAMAGED) end
  if name == "unread" then
    return LIST_SQL.unread:format(pt, it, S.SKIPPED, S.FAILED_PERMANENT, S.FAILED_RETRYABLE)
  end
  error(("report: no list named %q"):format(tostring(name)), 3)
end

-- One row of a list as the report gives it (opts.raw: as JSON text, the
-- database's object of every field but the path, which is ntt.json's --
-- bytes are not text -- so a long list costs no Lua table per entry).
local function entry(name, r, raw)
  if raw then
    return r.path and ('{"path":' .. json.encode(r.path) .. "," .. r.j:sub(2)) or r.j
  end
  local e = { fs_index = r.fs_index, ino = r.ino, path = r.path, size = r.size, state = r.state, reason = r.reason }
  if name == "damaged" then
    local ranges = r.damage and json.decode(r.damage)
    e.ranges = json.array(type(ranges) == "table" and ranges or {})
    local bytes = 0
    for _, d in ipairs(e.ranges) do bytes = bytes + (tonumber(d.length) or 0) end
    e.damaged_bytes = bytes
  else
    e.attempts = r.attempts
    local last = r.last_error_json and json.decode(r.last_error_json)
    if type(last) == "table" then e.last_error = last end
  end
  return e
end

function M.each(conn, m, name, fn, opts)
  local it, pt, code, state = db.partitions(conn, m.medium_hash)
  if it == nil then return nil, pt, code, state end
  if not it then return 0 end
  local limit = opts and opts.limit
  local sql = list_sql(name, it, pt)
  local n = 0
  local ok, err
  ok, err, code, state = db.tx(conn, function()
    local r, e, c, s = conn:exec("DECLARE ntt_report_list NO SCROLL CURSOR FOR " .. sql)
    if not r then return nil, e, c, s end
    while true do
      r, e, c, s = conn:exec("FETCH 2000 FROM ntt_report_list")
      if not r then return nil, e, c, s end
      if #r == 0 then break end
      for _, row in ipairs(r) do
        if limit and n >= limit then return true end
        n = n + 1
        fn(entry(name, row, opts and opts.raw))
      end
    end
    return true
  end)
  if not ok then return nil, err, code, state end
  return n
end

-- The map as bands for the picture: merged runs of one status, and the
-- byte counts by status.
local function map_of(acc_bytes, m)
  if not m.map_path or not acc_bytes or not acc_bytes.map then return nil end
  local mapfile = require "ntt.mapfile"
  local map = mapfile.read(m.map_path)
  if not map then return nil end
  local runs = {}
  for _, b in ipairs(map.blocks) do
    local last = runs[#runs]
    if last and last.status == b.status and last.pos + last.size == b.pos then
      last.size = last.size + b.size
    else
      runs[#runs + 1] = { pos = b.pos, size = b.size, status = b.status }
    end
  end
  return { path = m.map_path, size = map.size, runs = json.array(runs), rescued_pct = map:rescued_pct(acc_bytes.total),
           current_pos = map.current_pos, current_status = map.current_status, pass = map.pass }
end

-- Diagnostic events by action and by finding, and the first few.
local function diagnostics(problems, limit)
  local events = type(problems.diagnostic_events) == "table" and problems.diagnostic_events or {}
  local out = { events = #events, by_action = {}, by_finding = {}, first = {} }
  for i, ev in ipairs(events) do
    if type(ev) == "table" then
      local a = tostring(ev.action or ev.action_taken or "?")
      out.by_action[a] = (out.by_action[a] or 0) + 1
      for _, f in ipairs(type(ev.findings) == "table" and ev.findings or {}) do
        local k = type(f) == "table" and tostring(f.source or f.name or f.kind or "?") or tostring(f)
        out.by_finding[k] = (out.by_finding[k] or 0) + 1
      end
      if i <= limit then out.first[#out.first + 1] = ev end
    end
  end
  out.first = json.array(out.first)
  return out
end

local function count_list(conn, m, name)
  local it, pt, code, state = db.partitions(conn, m.medium_hash)
  if it == nil then return nil, pt, code, state end
  if not it then return 0 end
  local states = name == "damaged" and { S.DAMAGED } or { S.SKIPPED, S.FAILED_PERMANENT, S.FAILED_RETRYABLE }
  local r, err
  r, err, code, state = conn:exec(("SELECT count(*) AS n FROM %s WHERE state::text = ANY ($1::text[])"):format(it),
                                  db.array(states, #states))
  if not r then return nil, err, code, state end
  return r[1].n
end

function M.model(conn, m, opts)
  local limit = opts and opts.limit or 200
  local accounting = require "ntt.accounting"
  local acc, err, code, state = accounting.report(conn, m)
  if not acc then return nil, err, code, state end
  local stages = {}
  for _, c in ipairs(STAGE_COLS) do stages[c] = m[c] end
  local medium = { hash = m.medium_hash, name = m.medium_human, kind = m.kind, image_path = m.image_path,
                   map_path = m.map_path, size = m.size, health = m.health, rescued_pct = m.rescued_pct,
                   stages = stages, rescue_of = m.rescue_of }
  local fss
  fss, err, code, state = conn:exec([[
    SELECT fs_index, byte_offset, size, fstype, label, uuid, mount_status, mount_options, problems::text AS problems
      FROM filesystem WHERE medium_hash = $1 ORDER BY fs_index]], m.medium_hash)
  if not fss then return nil, err, code, state end
  for _, f in ipairs(fss) do f.problems = json.decode(f.problems or "{}") or {} end
  local problems = {}
  for k, v in pairs(acc.problems or {}) do if k ~= "diagnostic_events" then problems[k] = v end end
  local model = {
    schema = M.SCHEMA,
    generated_at = os.date("!%Y-%m-%dT%H:%M:%SZ"),
    ntt_version = require("ntt.version"),
    medium = medium,
    locations = acc.locations,
    lineage = acc.lineage,
    partitions = json.array(fss),
    map = map_of(acc.bytes, m) or json.null,
    accounting = { inodes = acc.inodes, bytes = acc.bytes or json.null, checks = acc.checks, ok = acc.ok },
    enum_failures = acc.enum_failures,
    diagnostics = diagnostics(acc.problems or {}, limit),
    problems = problems,
    lists = {},
  }
  for _, name in ipairs(M.LISTS) do
    local n
    n, err, code, state = count_list(conn, m, name)
    if not n then return nil, err, code, state end
    local first = {}
    local ok
    ok, err, code, state = M.each(conn, m, name, function(e) first[#first + 1] = e end, { limit = limit })
    if not ok then return nil, err, code, state end
    model.lists[name] = { count = n, first = json.array(first), complete = n <= limit }
  end
  return model
end

return M
