-- lua/ntt/accounting.lua: where every inode and every byte of one medium
-- stands, checked against what the walk and the map recorded; the one owner
-- of the SQL of `ntt status MEDIUM` and of the run's final loss check.
--
--   accounting.resolve(conn, name) -> medium row | nil, msg, code
--       name: a full hash, a unique hash prefix, or the medium's human name
--       (an exact name wins over a prefix).  Unknown: "ENOENT"; more than
--       one medium fits: "EAMBIGUOUS" (the message lists them).
--   accounting.inodes(conn, m) -> { rows=, recorded=, paths=, no_path=,
--       states = { STATE = { n=, reasons = { REASON = n } } }, pending=,
--       terminal=, sum= }
--       rows: the inode rows; recorded: medium.enum_inodes (nil when the
--       medium was loaded before it was recorded); sum: the states' counts
--       added up; pending: pending + failed_retryable (still claimable).
--       A medium never enumerated: rows = 0, enumerated = false.
--   accounting.bytes(conn, m) -> { size=, map_size=, total=, rescued=,
--       unrescued=, by_status = { ["-"]=n, ... }, holes=, files_touched=,
--       damaged_bytes=, map_pct= } | nil when the medium is not an image (nil, msg, code on a database error)
--       total = the larger of the image's size and the map's: bytes the map
--       does not cover, and bytes past the file's end, are unrescued.
--       Without a map every byte of the image counts as rescued (map=false).
--       files_touched: inodes whose recorded damage ranges are not empty.
--       map_kept = the later rescue's hash when a later pass rewrote the
--       image and map in place: the map kept at inspect (medium_map) is read.
--   accounting.report(conn, m) -> report | nil, msg, code
--       { medium=, inodes=, bytes=, problems= (medium.problems),
--         lineage= (ntt.lineage.of, with recovered= when it is a rescue),
--         enum_failures= (ntt.enumerate.failures.state), checks = { {what=, ok=, msg=} },
--         ok= }  ok: every check held
--   accounting.loss(conn, hash) -> { pending=, lost=, unread= } | nil, msg, code
--       pending: rows still to copy; lost: skipped, failed or damaged rows;
--       unread: places the walk could not read, not yet read by a rerun.
-- Every function returns nil, msg, code [, SQLSTATE] on a database error, never raises one
-- (docs/errors.md); a map that cannot be read is a failed check, not an error.
local db = require "ntt.db"
local S = require "ntt.states"
local mapfile = require "ntt.mapfile"
local failures = require "ntt.enumerate.failures"

local M = {}

local MEDIUM_COLS = [[medium_hash, medium_human, kind, image_path, map_path, size, health, rescued_pct,
  identified_at::text, inspected_at::text, mounted_at::text, enum_done::text, copy_done::text,
  verified_at::text, archived_at::text, enum_inodes, rescue_of, rescue_basis, problems::text AS problems]]

function M.resolve(conn, name)
  if type(name) ~= "string" or name == "" then error("accounting.resolve: name must be a non-empty string", 2) end
  local found, err, code, state = conn:exec(("SELECT %s FROM medium WHERE medium_hash = $1 OR medium_human = $1 ORDER BY medium_hash")
                                            :format(MEDIUM_COLS), name)
  if not found then return nil, err, code, state end
  if #found == 0 and name:match("^[0-9a-f]+$") then
    found, err, code, state = conn:exec(("SELECT %s FROM medium WHERE left(medium_hash, $2) = $1 ORDER BY medium_hash")
                                        :format(MEDIUM_COLS), name, #name)
    if not found then return nil, err, code, state end
  end
  if #found == 0 then return nil, ("no medium named or hashed '%s'"):format(name), "ENOENT" end
  if #found > 1 then
    -- a full hash names one medium even if it is another's human name
    for _, m in ipairs(found) do if m.medium_hash == name then return m end end
    local list = {}
    for i, m in ipairs(found) do
      if i > 10 then list[#list + 1] = "..."; break end
      list[#list + 1] = ("%s (%s)"):format(m.medium_hash, tostring(m.medium_human))
    end
    return nil, ("'%s' names %d media: %s"):format(name, #found, table.concat(list, ", ")), "EAMBIGUOUS"
  end
  return found[1]
end

function M.inodes(conn, m)
  local out = { rows = 0, recorded = m.enum_inodes, paths = 0, no_path = 0, states = {}, pending = 0,
                terminal = 0, sum = 0, enumerated = m.enum_done ~= nil }
  local it, pt, code, state = db.partitions(conn, m.medium_hash)
  if it == nil then return nil, pt, code, state end
  if not it then return out end
  local res, err
  res, err, code, state = conn:exec(("SELECT state::text AS state, reason, count(*) AS n FROM %s GROUP BY 1, 2 ORDER BY 1, 2")
                                    :format(it))
  if not res then return nil, err, code, state end
  for _, r in ipairs(res) do
    local s = out.states[r.state] or { n = 0, reasons = {} }
    out.states[r.state] = s
    s.n = s.n + r.n
    if r.reason then s.reasons[r.reason] = r.n end
    out.sum = out.sum + r.n
    if r.state == S.PENDING or r.state == S.FAILED_RETRYABLE then out.pending = out.pending + r.n
    else out.terminal = out.terminal + r.n end
  end
  -- counted apart from the states, so that the two totals check each other
  res, err, code, state = conn:exec(([[SELECT (SELECT count(*) FROM %s) AS rows, (SELECT count(*) FROM %s) AS paths,
                              (SELECT count(*) FROM %s i WHERE NOT EXISTS
                                 (SELECT 1 FROM %s p WHERE p.fs_index = i.fs_index AND p.ino = i.ino)) AS no_path]])
                                    :format(it, pt, it, pt))
  if not res then return nil, err, code, state end
  local c = res[1]
  out.rows, out.paths, out.no_path = c.rows, c.paths, c.no_path
  return out
end

-- The damage recorded per inode: { files=, bytes= }.
local function damage(conn, hash)
  local it, err, code, state = db.partitions(conn, hash)
  if it == nil then return nil, err, code, state end
  if not it then return { files = 0, bytes = 0 } end
  local r
  r, err, code, state = conn:exec(([[
    SELECT count(DISTINCT (fs_index, ino)) AS files, coalesce(sum((d->>'length')::bigint), 0)::bigint AS bytes
      FROM %s, jsonb_array_elements(damage) d
     WHERE jsonb_typeof(damage) = 'array']]):format(it))
  if not r then return nil, err, code, state end
  return r[1]
end

-- nil for a medium that is not an image (false is never returned).
function M.bytes(conn, m)
  if m.kind ~= "image" or not m.size then return nil end
  local out = { size = m.size, map = false, by_status = {}, holes = 0 }
  local d, derr, dcode, dstate = damage(conn, m.medium_hash)
  if not d then return nil, derr, dcode, dstate end
  out.files_touched, out.damaged_bytes = d.files, d.bytes
  if not m.map_path then
    out.total, out.rescued, out.unrescued = m.size, m.size, 0
    return out
  end
  -- A later ddrescue pass rewrote the image and its map in place (a later
  -- rescue of this medium is at its path): the map kept at inspect is this
  -- medium's, the file's is the later one's.
  local kr, kerr, kcode, kstate = conn:exec([[
    SELECT k.path, k.map_text, l.medium_hash AS later FROM medium_map k
      JOIN medium l ON l.rescue_of = k.medium_hash AND l.image_path = $2
     WHERE k.medium_hash = $1 ORDER BY l.added_at LIMIT 1]], m.medium_hash, m.image_path)
  if not kr then return nil, kerr, kcode, kstate end
  local kept = kr[1]
  local map, err
  if kept then
    map, err = mapfile.parse(kept.map_text, kept.path)
    out.map_kept = kept.later
  else
    map, err = mapfile.read(m.map_path)
  end
  if not map then out.map_error = err; return out end
  out.map, out.map_size = true, map.size
  local total = math.max(m.size, map.size)
  out.total = total
  -- rescued: "+" bytes the image file holds; the rest of total, block by
  -- block (and past the map's end), is not rescued
  local rescued, unrescued = 0, 0
  for _, b in ipairs(map.blocks) do
    local inside = math.max(0, math.min(b.pos + b.size, m.size) - b.pos)
    if b.status == "+" then
      rescued = rescued + inside
      if b.size > inside then
        unrescued = unrescued + (b.size - inside)
        out.by_status.beyond_eof = (out.by_status.beyond_eof or 0) + (b.size - inside)
      end
    else
      unrescued = unrescued + b.size
      out.by_status[b.status] = (out.by_status[b.status] or 0) + b.size
    end
  end
  if total > map.size then
    unrescued = unrescued + (total - map.size)
    out.by_status["?"] = (out.by_status["?"] or 0) + (total - map.size)
  end
  out.rescued, out.unrescued = rescued, unrescued
  out.holes = #map:holes(total)
  out.map_pct = map:rescued_pct(total)   -- as inspect computed medium.rescued_pct
  return out
end

local function check(list, what, ok, msg)
  list[#list + 1] = { what = what, ok = ok and true or false, msg = msg }
  return ok
end

function M.report(conn, m)
  local checks = {}
  local ino, err, code, state = M.inodes(conn, m)
  if not ino then return nil, err, code, state end
  check(checks, "inode states", ino.sum == ino.rows,
        ("the states add up to %d inodes, the medium has %d inode rows"):format(ino.sum, ino.rows))
  if ino.recorded then
    check(checks, "inodes loaded", ino.rows == ino.recorded,
          ("%d inode rows, the walks recorded %d"):format(ino.rows, ino.recorded))
  elseif ino.enumerated then
    check(checks, "inodes loaded", true, "the walk's count was not recorded (loaded before migration 007)")
  end
  if ino.rows > 0 then
    check(checks, "inode paths", ino.no_path == 0, ("%d inode rows have no path"):format(ino.no_path))
  end
  local b
  b, err, code, state = M.bytes(conn, m)
  if err then return nil, err, code, state end
  if b then
    if b.map_error then
      check(checks, "image bytes", false, "the map cannot be read: " .. tostring(b.map_error))
    else
      check(checks, "image bytes", b.rescued + b.unrescued == b.total,
            ("rescued %d + unrescued %d bytes, the image is %d bytes"):format(b.rescued, b.unrescued, b.total))
      if b.map and m.rescued_pct then
        check(checks, "rescued %", math.abs(b.map_pct - m.rescued_pct) < 1e-9,
              ("the map says %.4f%% rescued, inspect recorded %.4f%%%s"):format(b.map_pct, m.rescued_pct,
                math.abs(b.map_pct - m.rescued_pct) < 1e-9 and "" or " (the map changed since: run the medium again)"))
      end
      if b.map and b.map_size ~= b.size then
        check(checks, "map size", true, ("the map covers %d bytes, the image file has %d"):format(b.map_size, b.size))
      end
    end
  end
  local json = require "ntt.json"
  local problems = json.decode(m.problems or "{}") or {}
  local fails
  fails, err, code, state = failures.state(conn, m.medium_hash)
  if not fails then return nil, err, code, state end
  fails.first, fails.first_duplicates = json.array(fails.first), json.array(fails.first_duplicates)
  local ok = true
  for _, c in ipairs(checks) do ok = ok and c.ok end
  local medium = {}
  for k, v in pairs(m) do if k ~= "problems" then medium[k] = v end end
  -- its rescues: the older ones it was linked to, the later ones, and what it recovered
  local lineage = require "ntt.lineage"
  local lin
  lin, err, code, state = lineage.of(conn, m.medium_hash)
  if not lin then return nil, err, code, state end
  lin.chain, lin.rescues = json.array(lin.chain), json.array(lin.rescues)
  local rec
  rec, err, code, state = lineage.recovered(conn, m.medium_hash)
  if rec == nil then return nil, err, code, state end
  lin.recovered = rec or nil
  -- every path a byte-identical copy of the image was found at
  local locations
  locations, err, code, state = conn:exec([[
    SELECT path, size, mtime::text, first_seen::text, last_seen::text FROM medium_location
     WHERE medium_hash = $1 ORDER BY first_seen, path]], m.medium_hash)
  if not locations then return nil, err, code, state end
  return { medium = medium, inodes = ino, bytes = b, problems = problems, enum_failures = fails,
           lineage = lin, locations = json.array(locations), checks = json.array(checks), ok = ok }
end

function M.loss(conn, hash)
  local out = { pending = 0, lost = 0, unread = 0 }
  local it, err, code, state = db.partitions(conn, hash)
  if it == nil then return nil, err, code, state end
  if it then
    local r
    r, err, code, state = conn:exec(([[
      SELECT count(*) FILTER (WHERE state IN ($1, $2)) AS pending,
             count(*) FILTER (WHERE state IN ($3, $4, $5)) AS lost
        FROM %s]]):format(it), S.PENDING, S.FAILED_RETRYABLE, S.SKIPPED, S.FAILED_PERMANENT, S.DAMAGED)
    if not r then return nil, err, code, state end
    out.pending, out.lost = r[1].pending, r[1].lost
  end
  local open
  open, err, code, state = failures.open(conn, hash)
  if not open then return nil, err, code, state end
  out.unread = #open
  return out
end

return M
