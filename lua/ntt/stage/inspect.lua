-- lua/ntt/stage/inspect.lua: mapfile health, erased media, partition table
-- and filesystems; every finding is recorded on the medium.
local media = require "ntt.media"
local problems = require "ntt.problems"
local json = require "ntt.json"
local lineage = require "ntt.lineage"

local M = {}

function M.run(ctx)
  local m = ctx.medium
  if not m then return nil, "inspect needs identify first", "EINVAL" end
  if m.kind == "directory" then return true end
  local p = ctx.policy.inspect or {}
  local report = media.inspect(m, { health = p.health, erased_bytes = p.erased_bytes })
  ctx.inspection = report
  local db, hash = ctx.db, m.hash
  local r, err, code = db:exec([[UPDATE medium SET health = $2, rescued_pct = $3 WHERE medium_hash = $1]],
                         hash, report.health ~= "unknown" and report.health or nil, report.rescued_pct)
  if not r then return nil, err, code end
  -- the map inspected with: ddrescue may later update the file in place
  if report.map and report.map_path then
    r, err, code = lineage.remember_map(db, hash, report.map_path, m.size)
    if r == nil then return nil, err, code end
  end
  for _, pr in ipairs(report.problems or {}) do
    local key = pr.kind or "problem"
    local ok, perr, pcode = problems.note(db, hash, key, pr)
    if not ok then return nil, perr, pcode end
    ctx.problems[#ctx.problems + 1] = pr
    ctx.log:warn("medium_problem", { medium = hash, problem = key, detail = pr },
                 ("%s: %s"):format(m.human or hash, key:gsub("_", " ")))
  end
  local probe = report.probe or {}
  local fss = probe.partitions or {}
  if #fss == 0 and probe.fstype then
    fss = { { fs_index = 0, offset = probe.offset or 0, size = probe.size, fstype = probe.fstype,
              label = probe.label, uuid = probe.uuid } }
  end
  for _, fs in ipairs(fss) do
    local extra = {}
    if fs.container then extra.container = true end
    if fs.truncated then extra.truncated = true end
    r, err, code = db:exec([[
      INSERT INTO filesystem (medium_hash, fs_index, byte_offset, size, fstype, label, uuid, problems)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)
      ON CONFLICT (medium_hash, fs_index) DO UPDATE
         SET byte_offset = EXCLUDED.byte_offset, size = EXCLUDED.size, fstype = EXCLUDED.fstype,
             label = EXCLUDED.label, uuid = EXCLUDED.uuid, problems = EXCLUDED.problems]],
      hash, fs.fs_index, fs.offset or 0, fs.size, fs.fstype or fs.type, fs.label, fs.uuid, json.encode(extra))
    if not r then return nil, err, code end
  end
  r, err, code = db:exec("UPDATE medium SET inspected_at = now() WHERE medium_hash = $1", hash)
  if not r then return nil, err, code end
  ctx.log:info("inspected", { medium = hash, health = report.health, rescued_pct = report.rescued_pct,
                              filesystems = #fss, pttype = probe.pttype })
  return true
end

return M
