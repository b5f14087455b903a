-- lua/ntt/imaging.lua: imaging a block device in the policy's ddrescue
-- phases; the one owner of the SQL of the imaging and imaging_phase tables
-- (migration 019).
--
--   imaging.paths(dir, hash) -> { image=, map=, bak=, stall=, log= }
--       <dir>/<hash>.img, .map, .map.bak, .map.stall, <hash>-ddrescue.log
--   imaging.get(conn, device_hash) -> row | false | nil, msg, code, state
--   imaging.begin(conn, dev, paths, facts, smart, more) -> row | nil, msg, code, state
--       the device's row: created at pass 1; a finished one with `more`
--       starts the next pass (a rescue more); an unfinished one is resumed
--   imaging.phases_over(conn, hash, pass) -> set of phase names | nil, ...
--       the phases of this pass that ran to an end (done, skipped, budget,
--       stall): a resumed pass starts at the first phase not in it
--   imaging.run_phases(ctx, run) -> summary | nil, msg, code
--       runs the phases not over, in order (see docs/imaging.md)
--   imaging.finish(conn, hash, rescued) -> true | nil, ...
--   imaging.identified(conn, device_hash, medium_hash) -> true | nil, ...
--       the image medium the pass was identified as (the next pass links to it)
--   imaging.resolve(conn, name) -> row | nil, msg, code
--       the imaging of a medium named by hash, unique prefix or name: the
--       device's own, or the one an image medium was made by (ENOENT: none)
--   imaging.map_state(map, size) -> { rescued=, left=, by_status={["?"]=n,...}, pct= }
local json = require "ntt.json"
local mapfile = require "ntt.mapfile"
local ddrescue = require "ntt.ddrescue"
local problems = require "ntt.problems"
local util = require "ntt.core.util"

local M = {}

function M.paths(dir, hash)
  local base = dir .. "/" .. hash
  return { image = base .. ".img", map = base .. ".map", bak = base .. ".map.bak", stall = base .. ".map.stall",
           log = base .. "-ddrescue.log" }
end

function M.get(conn, hash)
  local r, err, code, state = conn:exec([[
    SELECT device_hash, device_path, image_path, map_path, state, pass, image_medium, rescued_bytes
      FROM imaging WHERE device_hash = $1]], hash)
  if not r then return nil, err, code, state end
  return r[1] or false
end

function M.begin(conn, dev, paths, facts, smart, more)
  local row, err, code, state = M.get(conn, dev.hash)
  if row == nil then return nil, err, code, state end
  local r
  if not row then
    r, err, code, state = conn:exec([[
      INSERT INTO imaging (device_hash, device_path, image_path, map_path, facts, smart)
      VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)]],
      dev.hash, dev.image_path, paths.image, paths.map, json.encode(facts), smart and json.encode(smart) or nil)
  elseif row.state == "finished" and more then
    r, err, code, state = conn:exec([[
      UPDATE imaging SET state = 'imaging', pass = pass + 1, device_path = $2, facts = $3::jsonb,
             smart = coalesce($4::jsonb, smart), finished_at = NULL WHERE device_hash = $1]],
      dev.hash, dev.image_path, json.encode(facts), smart and json.encode(smart) or nil)
  else
    r, err, code, state = conn:exec([[
      UPDATE imaging SET device_path = $2, facts = $3::jsonb, smart = coalesce($4::jsonb, smart)
       WHERE device_hash = $1]], dev.hash, dev.image_path, json.encode(facts), smart and json.encode(smart) or nil)
  end
  if not r then return nil, err, code, state end
  return M.get(conn, dev.hash)
end

function M.phases_over(conn, hash, pass)
  local r, err, code, state = conn:exec([[
    SELECT DISTINCT phase FROM imaging_phase
     WHERE device_hash = $1 AND pass = $2 AND outcome IN ('done', 'skipped', 'budget', 'stall')]], hash, pass)
  if not r then return nil, err, code, state end
  local out = {}
  for _, row in ipairs(r) do out[row.phase] = true end
  return out
end

function M.finish(conn, hash, rescued)
  return conn:exec([[UPDATE imaging SET state = 'finished', finished_at = now(), rescued_bytes = $2
                      WHERE device_hash = $1]], hash, rescued)
end

function M.resolve(conn, name)
  local m, err, code = require("ntt.accounting").resolve(conn, name)
  if not m then return nil, err, code end
  local r, state
  r, err, code, state = conn:exec([[
    SELECT device_hash, device_path, image_path, state, pass FROM imaging
     WHERE device_hash = $1 OR image_medium = $1
        OR device_hash IN (WITH RECURSIVE up(h, depth) AS (
             SELECT rescue_of, 1 FROM medium WHERE medium_hash = $1 AND rescue_of IS NOT NULL
             UNION ALL SELECT m.rescue_of, up.depth + 1 FROM up JOIN medium m ON m.medium_hash = up.h
              WHERE m.rescue_of IS NOT NULL AND up.depth < 1000)
           SELECT h FROM up)
     LIMIT 1]], m.medium_hash)
  if not r then return nil, err, code, state end
  if not r[1] then
    return nil, ("medium %s was not imaged by ntt (no device to image again)"):format(m.medium_hash), "ENOENT"
  end
  return r[1]
end

function M.identified(conn, device_hash, medium_hash)
  return conn:exec("UPDATE imaging SET image_medium = $2 WHERE device_hash = $1", device_hash, medium_hash)
end

function M.map_state(map, size)
  local by, rescued, left = {}, 0, 0
  local covered = 0
  for _, b in ipairs(map and map.blocks or {}) do
    if b.pos >= size then break end
    local len = math.min(b.pos + b.size, size) - b.pos
    covered = b.pos + len
    if b.status == "+" then rescued = rescued + len
    else left = left + len; by[b.status] = (by[b.status] or 0) + len end
  end
  if covered < size then   -- what the map does not cover is non-tried
    by["?"] = (by["?"] or 0) + size - covered
    left = left + size - covered
  end
  return { rescued = rescued, left = left, by_status = by, pct = size > 0 and 100 * rescued / size or 100 }
end

-- A copy of a file (the map before a phase, the map at a stall).
local function copy_file(from, to)
  local f = io.open(from, "rb")
  if not f then return false end
  local text = f:read("a")
  f:close()
  local tmp = to .. ".tmp"
  local o, err, en = io.open(tmp, "wb")
  if not o then return nil, err, util.errname(en) end
  o:write(text)
  o:close()
  return os.rename(tmp, to)
end

local function read_map(path, size)
  local map = mapfile.read(path)
  return M.map_state(map, size), map
end

-- Does the phase have anything to work on in this map?
local function has_work(phase, st)
  if st.left == 0 then return false end
  if not phase.works_on then return true end
  for s in phase.works_on:gmatch(".") do
    if (st.by_status[s] or 0) > 0 then return true end
  end
  return false
end

-- A text[] literal: every word quoted.
local function text_array(words)
  local q = {}
  for i, w in ipairs(words) do q[i] = '"' .. w:gsub('[\\"]', '\\%0') .. '"' end
  return "{" .. table.concat(q, ",") .. "}"
end

local function record_start(conn, hash, pass, phase, argv, before)
  local r, err, code, state = conn:exec([[
    INSERT INTO imaging_phase (device_hash, pass, phase, argv, rescued_before)
    VALUES ($1, $2, $3, $4::text[], $5) RETURNING id]], hash, pass, phase, text_array(argv), before)
  if not r then return nil, err, code, state end
  return r[1].id
end

local function record_end(conn, id, outcome, exit, after, seconds, note)
  return conn:exec([[
    UPDATE imaging_phase SET ended_at = now(), outcome = $2, exit_code = $3, rescued_after = $4,
           seconds = $5, note = $6 WHERE id = $1]], id, outcome, exit, after, seconds, note)
end

local function record_skip(conn, hash, pass, phase, rescued, note)
  return conn:exec([[
    INSERT INTO imaging_phase (device_hash, pass, phase, argv, rescued_before, rescued_after, ended_at,
                               outcome, seconds, note)
    VALUES ($1, $2, $3, '{}', $4, $4, now(), 'skipped', 0, $5)]], hash, pass, phase, rescued, note)
end

-- run = { dev=ident, paths=, pass=, phases=list, policy=image section }
function M.run_phases(ctx, run)
  local conn, log, dev, paths = ctx.db, ctx.log, run.dev, run.paths
  local size = dev.size
  local over, err, code, state = M.phases_over(conn, dev.hash, run.pass)
  if not over then return nil, err, code, state end
  local stopped                       -- why the remaining phases are skipped
  local out = { ran = 0, skipped = 0, stalls = 0 }
  local prog = require("ntt.progress").new { label = "image", total_bytes = size, bytes_only = true,
                                             interval = (ctx.policy.progress or {}).interval,
                                             bar = (ctx.policy.progress or {}).bar }
  for i, phase in ipairs(run.phases) do
    local name = phase.name or ("phase" .. i)
    if not over[name] then
      local st = read_map(paths.map, size)
      local why = stopped
      if not why and st.left == 0 then why = "nothing left to rescue" end
      if not why and phase.skip_above and st.pct > phase.skip_above then
        why = ("%.2f%% rescued, above %s%%: good enough"):format(st.pct, phase.skip_above)
      end
      if not why and not has_work(phase, st) then
        why = ("no area the phase works on (%s)"):format(phase.works_on)
      end
      if why then
        local ok
        ok, err, code, state = record_skip(conn, dev.hash, run.pass, name, st.rescued, why)
        if not ok then return nil, err, code, state end
        log:info("image_phase_skipped", { medium = dev.hash, pass = run.pass, phase = name, why = why },
                 ("%s: phase %s skipped: %s"):format(dev.human or dev.hash, name, why))
        out.skipped = out.skipped + 1
      else
        local bok, berr = copy_file(paths.map, paths.bak)
        if bok == nil then
          log:warn("map_backup_failed", { medium = dev.hash, path = paths.bak, error = berr },
                   ("%s: the map could not be backed up: %s"):format(dev.human or dev.hash, tostring(berr)))
        end
        local argv = ddrescue.argv(phase.args, dev.image_path, paths.image, paths.map, run.policy.binary)
        local id
        id, err, code, state = record_start(conn, dev.hash, run.pass, name, argv, st.rescued)
        if not id then return nil, err, code, state end
        log:info("image_phase", { medium = dev.hash, pass = run.pass, phase = name, argv = argv,
                                  rescued = st.rescued, left = st.left },
                 ("%s: phase %s: %s"):format(dev.human or dev.hash, name, table.concat(argv, " ")))
        prog.label = "image " .. name
        local res
        res, err, code = ddrescue.run {
          argv = argv, out = paths.log, budget = phase.budget, stall = phase.stall or run.policy.stall,
          poll = run.policy.poll, interrupted = ctx.interrupted,
          on_status = function(s) if s.rescued then prog:set(nil, s.rescued) end end,
        }
        if not res then
          record_end(conn, id, "failed", nil, st.rescued, 0, err)
          prog:finish()
          return nil, ("image: %s"):format(err), code
        end
        local after = read_map(paths.map, size)
        prog:set(nil, after.rescued)
        local note
        if res.outcome == "failed" then note = res.tail
        elseif res.outcome == "budget" then note = ("time budget of %ss spent"):format(phase.budget)
        elseif res.outcome == "stall" then
          note = ("no progress for %ss"):format(phase.stall or run.policy.stall)
          copy_file(paths.map, paths.stall)
        end
        local ok
        ok, err, code, state = record_end(conn, id, res.outcome, res.exit, after.rescued, res.seconds, note)
        if not ok then prog:finish(); return nil, err, code, state end
        out.ran = out.ran + 1
        log:info("image_phase_done", { medium = dev.hash, pass = run.pass, phase = name, outcome = res.outcome,
                                       exit = res.exit, seconds = res.seconds, rescued = after.rescued,
                                       gained = after.rescued - st.rescued, left = after.left },
                 ("%s: phase %s %s in %.1fs: %.2f%% rescued"):format(dev.human or dev.hash, name, res.outcome,
                                                                   res.seconds, after.pct))
        if res.outcome == "interrupted" then
          prog:finish()
          return nil, "interrupted", "EINTR"
        elseif res.outcome == "failed" then
          prog:finish()
          local msg = ("ddrescue failed in phase %s (exit %s): %s"):format(name, tostring(res.exit or res.signal),
                                                                           tostring(note))
          problems.note(conn, dev.hash, "imaging_failed", { phase = name, exit = res.exit, message = note })
          return nil, msg, "EIO"
        elseif res.outcome == "stall" then
          out.stalls = out.stalls + 1
          problems.add(conn, dev.hash, "imaging_stalled", { phase = name, pass = run.pass, seconds = res.seconds,
                                                            rescued = after.rescued })
          log:warn("image_stalled", { medium = dev.hash, phase = name, rescued = after.rescued },
                   ("%s: phase %s stalled (%s); the map is kept as %s"):format(dev.human or dev.hash, name, note,
                                                                              paths.stall))
        end
        if phase.give_up_below and after.pct <= phase.give_up_below then
          stopped = ("%.2f%% rescued after phase %s, at most %s%%: the medium looks dead"):format(
            after.pct, name, phase.give_up_below)
          problems.note(conn, dev.hash, "imaging_gave_up", { phase = name, rescued_pct = after.pct })
          log:warn("image_gave_up", { medium = dev.hash, phase = name, rescued_pct = after.pct },
                   ("%s: %s"):format(dev.human or dev.hash, stopped))
        end
      end
    end
    if util.interrupted() or (ctx.interrupted and ctx.interrupted()) then
      prog:finish()
      return nil, "interrupted", "EINTR"
    end
  end
  prog:finish()
  local final = read_map(paths.map, size)
  out.rescued, out.left, out.pct = final.rescued, final.left, final.pct
  return out
end

return M
