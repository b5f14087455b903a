-- lua/ntt/lineage.lua: new rescues of one physical medium, linked to the
-- older ones (migration 009); the one owner of the SQL of medium.rescue_of
-- and medium_map.
--
--   lineage.further(old_map, new_map, size) -> true | false, why
--       The rule (docs/media.md, "A new rescue"): the new map rescued the
--       same medium further when every byte the old map marks rescued
--       (below size) the new one marks rescued too, and the new map marks
--       strictly more bytes rescued.  Pure: no database.
--   lineage.remember_map(conn, hash, path, size) -> true | false (no map
--       that parses) | nil, msg, code, state
--       keeps the map text the medium was inspected with (medium_map)
--   lineage.decide(conn, ident) -> old row | false | nil, msg, code, state
--       the known medium this image is a new rescue of, by the rule: among
--       the media sharing its sampled hash (not its content), those whose
--       map (kept, else the file at their map_path when it still gives
--       their recorded rescued %) the image's map rescues further; the one
--       rescued most.  Rows: {medium_hash=, medium_human=, image_path=}.
--   lineage.link(conn, hash, old, basis) -> true | nil, msg, code, state
--       basis "map" | "operator" | "imaged" (the first image of a device
--       ntt imaged) | "more" (a rescue more of it, migration 019); refuses (EINVAL) a medium as its own
--       rescue and a link that would make a cycle; notes rescue_of on the
--       new medium's problems, rescued_again_as (a list) on the older's
--   lineage.BASIS[basis] -> why, for people ("by its map", ...)
--   lineage.of(conn, hash) -> { rescue_of=, basis=, chain=, rescues= }
--       chain: the older media, nearest first ({medium_hash=, medium_human=,
--       basis=, depth=}); rescues: every later rescue, with its depth
--   lineage.recovered(conn, hash) -> counts | false (not a rescue)
--       counts = { rescue_of=, lost=, recovered=, not_copied=, not_found=,
--                  places=, places_read= }: the older medium's files that
--       were skipped, failed, damaged or left pending (by path), how many
--       of them are copied on this one, found here but not copied, not found
--       here; the places its walk could not read, and how many of them this
--       medium's walk read.
-- Database failures return nil, msg, "EDB", sqlstate (docs/errors.md).
local db = require "ntt.db"
local S = require "ntt.states"
local mapfile = require "ntt.mapfile"
local problems = require "ntt.problems"

local M = {}

-- Why a medium is a rescue of another, for people (rescue_basis).
M.BASIS = { map = "by its map", operator = "said by the operator", imaged = "imaged from that device",
            more = "a rescue more of the same device" }

-- The "+" ranges of map below size, and their bytes.
local function rescued(map, size)
  local out, n = {}, 0
  for _, b in ipairs(map.blocks) do
    if b.pos >= size then break end
    if b.status == "+" then
      local len = math.min(b.pos + b.size, size) - b.pos
      out[#out + 1] = { pos = b.pos, size = len }
      n = n + len
    end
  end
  return out, n
end

function M.further(old_map, new_map, size)
  if math.type(size) ~= "integer" or size < 0 then error("lineage.further: size must be an integer >= 0", 2) end
  local old_ranges, old_n = rescued(old_map, size)
  local _, new_n = rescued(new_map, size)
  local lost = new_map:overlap(old_ranges)
  if #lost > 0 then
    local n = 0
    for _, r in ipairs(lost) do n = n + r.size end
    return false, ("%d byte(s) rescued before are not rescued in the new map (first at %d)"):format(n, lost[1].pos)
  end
  if new_n <= old_n then
    return false, ("the new map rescues %d bytes, the old one %d: not further"):format(new_n, old_n)
  end
  return true, ("%d bytes rescued, %d before, none lost"):format(new_n, old_n)
end

function M.remember_map(conn, hash, path, size)
  local f = io.open(path, "rb")
  if not f then return false end
  local text = f:read("a")
  f:close()
  local map = text and mapfile.parse(text, path)
  if not map then return false end
  local _, n = rescued(map, size or map.size)
  local r, err, code, state = conn:exec([[
    INSERT INTO medium_map (medium_hash, path, map_text, rescued_bytes) VALUES ($1, $2, $3, $4)
    ON CONFLICT (medium_hash) DO UPDATE
       SET path = EXCLUDED.path, map_text = EXCLUDED.map_text, rescued_bytes = EXCLUDED.rescued_bytes,
           recorded_at = now()
     WHERE medium_map.map_text IS DISTINCT FROM EXCLUDED.map_text]], hash, path, text, n)
  if not r then return nil, err, code, state end
  return true
end

-- The map a known medium was inspected with, or false | nil, msg, code, state.
local function old_map(conn, row)
  local r, err, code, state = conn:exec("SELECT path, map_text FROM medium_map WHERE medium_hash = $1", row.medium_hash)
  if not r then return nil, err, code, state end
  if r[1] then return mapfile.parse(r[1].map_text, r[1].path) or false end
  -- inspected before migration 009: the file, if it still says what inspect saw
  if not row.map_path or not row.rescued_pct or not row.size then return false end
  local map = mapfile.read(row.map_path)
  if not map then return false end
  if math.abs(map:rescued_pct(math.max(row.size, map.size)) - row.rescued_pct) > 1e-9 then return false end
  return map
end

function M.decide(conn, ident)
  if ident.kind ~= "image" or not ident.sampled_hash or not ident.map_path or not ident.size then return false end
  local new_map = mapfile.read(ident.map_path)
  if not new_map then return false end
  local twins, err, code, state = conn:exec([[
    SELECT medium_hash, medium_human, image_path, map_path, size, rescued_pct FROM medium
     WHERE sampled_hash = $1 AND medium_hash <> $2 AND kind = 'image' AND size = $3
     ORDER BY added_at, medium_hash]], ident.sampled_hash, ident.hash, ident.size)
  if not twins then return nil, err, code, state end
  local best, best_n
  for _, row in ipairs(twins) do
    local map
    map, err, code, state = old_map(conn, row)
    if map == nil then return nil, err, code, state end
    if map and M.further(map, new_map, ident.size) then
      local _, n = rescued(map, ident.size)
      if not best or n > best_n then best, best_n = row, n end
    end
  end
  return best or false
end

-- The older media of hash, nearest first (rescue_of followed up):
-- rows | nil, msg, code, state.
local function chain(conn, hash)
  return conn:exec([[
    WITH RECURSIVE up(medium_hash, rescue_of, basis, depth) AS (
      SELECT m.rescue_of, o.rescue_of, m.rescue_basis, 1 FROM medium m JOIN medium o ON o.medium_hash = m.rescue_of
       WHERE m.medium_hash = $1
      UNION ALL
      SELECT o.medium_hash, o.rescue_of, m.rescue_basis, up.depth + 1
        FROM up JOIN medium m ON m.medium_hash = up.medium_hash JOIN medium o ON o.medium_hash = m.rescue_of
       WHERE up.depth < 1000)
    SELECT up.medium_hash, m.medium_human, up.basis, up.depth FROM up JOIN medium m USING (medium_hash)
     ORDER BY up.depth]], hash)
end

function M.link(conn, hash, old, basis)
  if basis ~= "map" and basis ~= "operator" and basis ~= "imaged" and basis ~= "more" then
    error("lineage.link: basis is 'map', 'operator', 'imaged' or 'more'", 2)
  end
  if old == hash then return nil, ("medium %s cannot be a rescue of itself"):format(hash), "EINVAL" end
  local older, err, code, state = chain(conn, old)
  if not older then return nil, err, code, state end
  for _, r in ipairs(older) do
    if r.medium_hash == hash then
      return nil, ("medium %s is already an older rescue of %s: no cycle"):format(hash, old), "EINVAL"
    end
  end
  local cur
  cur, err, code, state = conn:exec("SELECT rescue_of FROM medium WHERE medium_hash = $1", hash)
  if not cur then return nil, err, code, state end
  local before = cur[1]
  local ok
  ok, err, code, state = conn:exec("UPDATE medium SET rescue_of = $2, rescue_basis = $3 WHERE medium_hash = $1",
                                   hash, old, basis)
  if not ok then return nil, err, code, state end
  if before and before.rescue_of and before.rescue_of ~= old then
    -- the operator moved the link: the former older medium no longer lists it
    ok, err, code, state = problems.remove(conn, before.rescue_of, "rescued_again_as", hash)
    if not ok then return nil, err, code, state end
  end
  ok, err, code, state = problems.set(conn, hash, "rescue_of", old)
  if not ok then return nil, err, code, state end
  ok, err, code, state = problems.add(conn, old, "rescued_again_as", hash)
  if not ok then return nil, err, code, state end
  return true
end

function M.of(conn, hash)
  local mr, err, code, state = conn:exec("SELECT rescue_of, rescue_basis FROM medium WHERE medium_hash = $1", hash)
  if not mr then return nil, err, code, state end
  local m = mr[1]
  local later
  later, err, code, state = conn:exec([[
    WITH RECURSIVE down(medium_hash, depth) AS (
      SELECT medium_hash, 1 FROM medium WHERE rescue_of = $1
      UNION ALL
      SELECT m.medium_hash, down.depth + 1 FROM down JOIN medium m ON m.rescue_of = down.medium_hash
       WHERE down.depth < 1000)
    SELECT d.medium_hash, m.medium_human, m.rescue_of, m.rescue_basis AS basis, d.depth
      FROM down d JOIN medium m USING (medium_hash) ORDER BY d.depth, m.added_at, d.medium_hash]], hash)
  if not later then return nil, err, code, state end
  local older
  older, err, code, state = chain(conn, hash)
  if not older then return nil, err, code, state end
  return { rescue_of = m and m.rescue_of, basis = m and m.rescue_basis, chain = older, rescues = later }
end

function M.recovered(conn, hash)
  local mr, err, code, state = conn:exec("SELECT rescue_of FROM medium WHERE medium_hash = $1", hash)
  if not mr then return nil, err, code, state end
  local m = mr[1]
  if not m or not m.rescue_of then return false end
  local old = m.rescue_of
  local out = { rescue_of = old, lost = 0, recovered = 0, not_copied = 0, not_found = 0, places = 0, places_read = 0 }
  local oit, opt, nit, npt
  oit, opt, code, state = db.partitions(conn, old)
  if oit == nil then return nil, opt, code, state end
  nit, npt, code, state = db.partitions(conn, hash)
  if nit == nil then return nil, npt, code, state end
  if oit then
    -- the new medium's copied paths, or none when it has no rows yet
    local here = nit and ([[SELECT np.fs_index, np.path, ni.state FROM %s np JOIN %s ni USING (fs_index, ino)]])
                         :format(npt, nit)
                     or "SELECT NULL::int AS fs_index, NULL::bytea AS path, NULL::inode_state AS state WHERE false"
    local r
    r, err, code, state = conn:exec(([[
      WITH lost AS (
        SELECT i.fs_index, i.ino FROM %s i WHERE i.state IN ($1, $2, $3, $4, $5)),
      here AS (%s),
      judged AS (
        SELECT l.fs_index, l.ino, bool_or(h.state = $6) AS copied, bool_or(h.state IS NOT NULL) AS found
          FROM lost l LEFT JOIN %s op ON op.fs_index = l.fs_index AND op.ino = l.ino
               LEFT JOIN here h ON h.fs_index = op.fs_index AND h.path = op.path
         GROUP BY 1, 2)
      SELECT count(*) AS lost, count(*) FILTER (WHERE copied) AS recovered,
             count(*) FILTER (WHERE found AND NOT copied) AS not_copied,
             count(*) FILTER (WHERE NOT coalesce(found, false)) AS not_found FROM judged]])
      :format(oit, here, opt), S.PENDING, S.FAILED_RETRYABLE, S.SKIPPED, S.FAILED_PERMANENT, S.DAMAGED, S.COPIED)
    if not r then return nil, err, code, state end
    r = r[1]
    out.lost, out.recovered, out.not_copied, out.not_found = r.lost, r.recovered, r.not_copied, r.not_found
  end
  -- places the older walk could not read: read here when the new medium has
  -- the directory and no open failure at it
  local p
  p, err, code, state = conn:exec(([[
    SELECT count(*) AS places,
           count(*) FILTER (WHERE %s AND NOT EXISTS (
             SELECT 1 FROM enum_failure n WHERE n.medium_hash = $2 AND n.fs_index = f.fs_index
                AND n.path = f.path AND n.resolved_at IS NULL)) AS places_read
      FROM enum_failure f WHERE f.medium_hash = $1 AND f.kind = 'error' AND f.resolved_at IS NULL]])
    :format(npt and ("EXISTS (SELECT 1 FROM %s np WHERE np.fs_index = f.fs_index AND np.path = f.path)"):format(npt)
            or "false"), old, hash)
  if not p then return nil, err, code, state end
  out.places, out.places_read = p[1].places, p[1].places_read
  return out
end

return M
