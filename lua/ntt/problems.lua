-- lua/ntt/problems.lua: what went wrong with a medium, in medium.problems.
--
-- medium.problems is a jsonb object.  It keeps what the seed design's queries
-- read: "diagnostic_events" (an array of per-file decisions) and one entry per
-- medium-level finding ("beyond_eof_detected", "high_error_rate",
-- "boot_sector_bad", "erased_disk", "mount_failed", "enum_stalled", ...).
--   note(conn, hash, key, value)        set a finding once (kept if already there)
--   set(conn, hash, key, value)         set or replace a finding
--   event(conn, hash, ev, max_events)   append a diagnostic event; past
--                                       max_events only "events_dropped" counts
--   add(conn, hash, key, value)         append value to the list at key
--                                       (made when missing; kept once)
--   remove(conn, hash, key, value)      drop value from the list at key (and
--                                       the key with the last one)
--   clear(conn, hash, key)             drop a finding that no longer holds
--                                       (enum_errors once every place is read)
--   beyond_eof(conn, hash, s)          the seed's beyond-EOF summary, at the top
--       level of problems: beyond_eof_detected = true, first_fs_index,
--       first_ino, skip_count, detected_at, worker_id (s = { fs_index=,
--       ino=, count=, at=, worker= }).  The first call writes it; every
--       later one, from any worker, adds s.count to skip_count in the same
--       UPDATE, so concurrent workers never lose a count.
--   high_error_rate(conn, hash, s)     the seed's high-error-rate summary, once
--       per medium: high_error_rate = true, error_rate, errors, processed,
--       threshold, detected_at, worker_id (s = { error_rate=, errors=,
--       processed=, threshold=, at=, worker= }).  detected_at and worker_id
--       are shared by the two summaries: the later one's stay (the seed's
--       shape: each summary is merged into problems as it is).
--   get(conn, hash) -> table
-- All return true | nil, msg, "EDB", sqlstate (docs/errors.md).
--   count(conn, hash [, since]) -> { problems=, kinds = { kind = n }, events=, since= }
--     what medium.problems holds: each finding counts its `count` field, a
--     list its entries, anything else 1; events: the diagnostic events
--     stored and dropped; since: those stamped at or after `since` (a
--     log.timestamp string).  The end-of-run summary counts from here.
-- Each problem recorded is one line in the logs (errors.jsonl):
-- "problem_recorded" (warn; stderr from -v); a diagnostic event is an
-- info line "diagnostic_event" (the files' own lines say skipped or failed).
--   watch(fn) -> the previous watcher: fn(hash, kind, detail) is called
--     each time a problem is recorded -- a finding newly noted or set (kind
--     = its key), or an event appended (kind = "diagnostic_event"); nil
--     for none.  A run watches with its policy's hooks.on_problem.
local json = require "ntt.json"

local M = {}

local watcher

function M.watch(fn)
  local prev = watcher
  watcher = fn
  return prev
end

local function recorded(hash, kind, detail)
  local log = require("ntt.log").default()
  if kind == "diagnostic_event" then
    log:info("diagnostic_event", { medium = hash, event = detail })
  else
    log:detail("warn", "problem_recorded", { medium = hash, problem = kind, detail = detail },
               ("medium %s: problem recorded: %s"):format(hash, kind))
  end
  if watcher then watcher(hash, kind, detail) end
  return true
end

function M.note(conn, hash, key, value)
  local r, err, code, state = conn:exec([[
    UPDATE medium SET problems = coalesce(problems, '{}'::jsonb) || jsonb_build_object($2::text, $3::jsonb)
     WHERE medium_hash = $1 AND NOT (coalesce(problems, '{}'::jsonb) ? $2)]],
    hash, key, json.encode(value == nil and true or value))
  if not r then return nil, err, code, state end
  if (r.n or 0) == 0 then return true end   -- already there (or no such medium)
  return recorded(hash, key, value == nil and true or value)
end

function M.set(conn, hash, key, value)
  local r, err, code, state = conn:exec([[
    UPDATE medium SET problems = coalesce(problems, '{}'::jsonb) || jsonb_build_object($2::text, $3::jsonb)
     WHERE medium_hash = $1]], hash, key, json.encode(value == nil and true or value))
  if not r then return nil, err, code, state end
  return recorded(hash, key, value == nil and true or value)
end

function M.event(conn, hash, ev, max_events)
  local r, err, code, state = conn:exec([[
    UPDATE medium SET problems =
      CASE WHEN jsonb_array_length(coalesce(problems->'diagnostic_events', '[]'::jsonb)) < $3
           THEN coalesce(problems, '{}'::jsonb) || jsonb_build_object('diagnostic_events',
                  coalesce(problems->'diagnostic_events', '[]'::jsonb) || jsonb_build_array($2::jsonb))
           ELSE coalesce(problems, '{}'::jsonb) || jsonb_build_object('events_dropped',
                  coalesce((problems->>'events_dropped')::int, 0) + 1)
      END
     WHERE medium_hash = $1]], hash, json.encode(ev), max_events or 1000)
  if not r then return nil, err, code, state end
  return recorded(hash, "diagnostic_event", ev)
end

function M.add(conn, hash, key, value)
  local v = json.encode(value)
  local r, err, code, state = conn:exec([[
    UPDATE medium SET problems = coalesce(problems, '{}'::jsonb) || jsonb_build_object($2::text,
             CASE WHEN jsonb_typeof(problems->$2) = 'array' THEN problems->$2 ELSE '[]'::jsonb END
             || jsonb_build_array($3::jsonb))
     WHERE medium_hash = $1
       AND NOT coalesce(jsonb_typeof(problems->$2) = 'array' AND problems->$2 @> jsonb_build_array($3::jsonb),
                        false)]],
    hash, key, v)
  if not r then return nil, err, code, state end
  if (r.n or 0) == 0 then return true end
  return recorded(hash, key, value)
end

function M.remove(conn, hash, key, value)
  local r, err, code, state = conn:exec([[
    UPDATE medium SET problems = CASE
             WHEN jsonb_array_length((problems->$2) - $3::text) = 0 THEN problems - $2::text
             ELSE jsonb_set(problems, ARRAY[$2::text], (problems->$2) - $3::text) END
     WHERE medium_hash = $1 AND jsonb_typeof(problems->$2) = 'array']], hash, key, value)
  if not r then return nil, err, code, state end
  return true
end

function M.clear(conn, hash, key)
  local r, err, code, state = conn:exec("UPDATE medium SET problems = problems - $2::text WHERE medium_hash = $1",
                                   hash, key)
  if not r then return nil, err, code, state end
  return true
end

-- keys that are not problems of their own: the events, and the fields the
-- seed's summaries keep at the top level beside their flag
local NOT_FINDINGS = { diagnostic_events = true, events_dropped = true, first_fs_index = true, first_ino = true,
                       skip_count = true, detected_at = true, worker_id = true, error_rate = true, errors = true,
                       processed = true, threshold = true }

-- The same keys for SQL: `... FROM jsonb_object_keys(problems) k WHERE k <> ALL (problems.NOT_KINDS_SQL)`
-- lists the kinds of problem a medium has.
do
  local keys = {}
  for k in pairs(NOT_FINDINGS) do keys[#keys + 1] = "'" .. k .. "'" end
  table.sort(keys)
  M.NOT_KINDS_SQL = "ARRAY[" .. table.concat(keys, ", ") .. "]"
end

function M.count(conn, hash, since)
  local p, err, code, state = M.get(conn, hash)
  if not p then return nil, err, code, state end
  local out = { problems = 0, kinds = {}, events = 0, since = 0 }
  for k, v in pairs(p) do
    if not NOT_FINDINGS[k] then
      local n = 1
      if type(v) == "table" then
        if math.tointeger(v.count) then n = math.tointeger(v.count)
        elseif #v > 0 then n = #v end
      end
      out.kinds[k] = n
      out.problems = out.problems + n
    end
  end
  local evs = type(p.diagnostic_events) == "table" and p.diagnostic_events or {}
  out.events = #evs + (math.tointeger(p.events_dropped) or 0)
  for _, ev in ipairs(evs) do
    if since and type(ev) == "table" and type(ev.timestamp) == "string" and ev.timestamp >= since then
      out.since = out.since + 1
    end
  end
  return out
end

function M.beyond_eof(conn, hash, s)
  local r, err, code, state = conn:exec([[
    UPDATE medium SET problems = CASE
        WHEN coalesce(problems, '{}'::jsonb) ? 'beyond_eof_detected'
        THEN problems || jsonb_build_object('skip_count',
               CASE WHEN jsonb_typeof(problems->'skip_count') = 'number'
                    THEN (problems->>'skip_count')::bigint ELSE 0 END + $4::bigint)
        ELSE coalesce(problems, '{}'::jsonb) || jsonb_build_object('beyond_eof_detected', true,
               'first_fs_index', $2::int, 'first_ino', $3::bigint, 'skip_count', $4::bigint,
               'detected_at', $5::text, 'worker_id', $6::text)
      END
     WHERE medium_hash = $1
    RETURNING (problems->>'skip_count')::bigint AS skip_count]],
    hash, s.fs_index, s.ino, s.count, s.at, s.worker)
  if not r then return nil, err, code, state end
  if not r[1] or r[1].skip_count ~= s.count then return true end   -- counted on top of an earlier one
  return recorded(hash, "beyond_eof_detected", { beyond_eof_detected = true, first_fs_index = s.fs_index,
    first_ino = s.ino, skip_count = s.count, detected_at = s.at, worker_id = s.worker })
end

function M.high_error_rate(conn, hash, s)
  local r, err, code, state = conn:exec([[
    UPDATE medium SET problems = coalesce(problems, '{}'::jsonb) || jsonb_build_object('high_error_rate', true,
             'error_rate', $2::float8, 'errors', $3::bigint, 'processed', $4::bigint, 'threshold', $5::float8,
             'detected_at', $6::text, 'worker_id', $7::text)
     WHERE medium_hash = $1 AND NOT (coalesce(problems, '{}'::jsonb) ? 'high_error_rate')]],
    hash, s.error_rate, s.errors, s.processed, s.threshold, s.at, s.worker)
  if not r then return nil, err, code, state end
  if (r.n or 0) == 0 then return true end
  return recorded(hash, "high_error_rate", { high_error_rate = true, error_rate = s.error_rate, errors = s.errors,
    processed = s.processed, threshold = s.threshold, detected_at = s.at, worker_id = s.worker })
end

function M.get(conn, hash)
  local r, err, code, state = conn:exec("SELECT problems::text AS p FROM medium WHERE medium_hash = $1", hash)
  if not r then return nil, err, code, state end
  if not r[1] or not r[1].p then return {} end
  return json.decode(r[1].p)
end

return M
