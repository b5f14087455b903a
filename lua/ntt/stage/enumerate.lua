-- lua/ntt/stage/enumerate.lua: load every entry of the mounted filesystems.
--
-- Done once: a medium with enum_done set is skipped (use `ntt run --replace`
-- to enumerate it again).  Unreadable directories, duplicate names and a
-- stalled walk are recorded on the medium.
local enumerate = require "ntt.enumerate"
local problems = require "ntt.problems"
local progress = require "ntt.progress"

local M = {}

local function first(list, n)
  local out = {}
  for i = 1, math.min(#list, n) do out[i] = list[i] end
  return out
end

function M.run(ctx)
  local m = ctx.medium
  if not m then return nil, "enumerate needs identify first", "EINVAL" end
  local db = ctx.db
  local row = assert(db:exec("SELECT enum_done::text AS done FROM medium WHERE medium_hash = $1", m.hash))[1]
  if row and row.done and not ctx.replace then
    ctx.log:info("enumerate_skipped", { medium = m.hash, reason = "already enumerated", at = row.done })
    return true
  end
  if not ctx.roots or #ctx.roots == 0 then
    ctx.log:warn("enumerate_nothing", { medium = m.hash }, (m.human or m.hash) .. ": nothing mounted to enumerate")
    return true
  end
  local p = ctx.policy.enumerate or {}
  local pr = progress.new { label = "enumerate " .. (m.human or m.hash), interval = (ctx.policy.progress or {}).interval,
                            bar = (ctx.policy.progress or {}).bar }
  local summary, err, code, partial = enumerate.load(db, m.hash, ctx.roots, {
    replace = ctx.replace, ignore = require("ntt.policy").ignore_of(ctx.policy), threads = p.threads, stall_timeout = p.stall_timeout,
    progress = function(entries) pr:set(entries) end })
  pr:finish()
  local s = summary or partial or {}
  if (s.error_count or 0) > 0 then
    problems.set(db, m.hash, "enum_errors", { count = s.error_count, first = first(s.errors or {}, 20) })
  end
  if (s.duplicate_count or 0) > 0 then
    problems.set(db, m.hash, "duplicate_paths", { count = s.duplicate_count, first = first(s.duplicates or {}, 20) })
  end
  if not summary then
    if code == "ESTALLED" then
      problems.set(db, m.hash, "enum_stalled", s.stalled or { error = err })
      ctx.problems[#ctx.problems + 1] = { kind = "enum_stalled" }
    end
    return nil, err, code
  end
  ctx.enumerated = summary
  if p.raw_audit then
    -- An audit copy of the enumeration, byte-exact and compressed (docs/walk.md).
    local config = require "ntt.config"
    local walk = require "ntt.core.walk"
    local dir = config.path("raw")
    require("ntt.core.fs").mkdirp(dir)
    for _, r in ipairs(ctx.roots) do
      local file = ("%s/%s.p%d.walk.zst"):format(dir, m.hash, r.fs_index)
      local ok, aerr = walk.to_file(r.root, file, { threads = p.threads, stall_timeout = p.stall_timeout })
      if not ok then ctx.log:warn("raw_audit_failed", { medium = m.hash, file = file, error = aerr })
      else ctx.log:info("raw_audit", { medium = m.hash, file = file }) end
    end
  end
  ctx.counts.found = (ctx.counts.found or 0) + summary.files
  ctx.log:info("enumerated", { medium = m.hash, entries = summary.entries, files = summary.files,
                               inodes = summary.inodes, excluded = summary.excluded,
                               errors = summary.error_count, duplicates = summary.duplicate_count,
                               replaced = summary.replaced, seconds = summary.seconds })
  return true
end

return M
