-- lua/ntt/summary.lua: the end-of-run summary a careful tool prints.
local progress = require "ntt.progress"
local copier = require "ntt.copier"

local M = {}

-- results: pipeline results; returns the text.  The problems and
-- diagnostic events are counted as the database holds them for each
-- medium (r.ctx.recorded, from ntt.problems.count, set by `ntt run`); a
-- result without it (no medium, no database) counts its run's entries
-- (r.ctx.problems, each its `count` or 1).
function M.format(results, seconds)
  -- the enumerate stage's count, then the copier's additive ones
  local keys = { "found", table.unpack(copier.COUNTS) }
  local t = { media = 0, failed_media = 0, copy_seconds = 0, reasons = {}, problems = 0, problem_kinds = {},
              events = 0, events_run = 0, retried = 0 }
  for _, k in ipairs(keys) do t[k] = 0 end
  for _, r in ipairs(results) do
    t.media = t.media + 1
    if not r.ok then t.failed_media = t.failed_media + 1 end
    local c = r.ctx.counts
    for _, k in ipairs(keys) do
      t[k] = t[k] + (c[k] or 0)
    end
    t.copy_seconds = t.copy_seconds + (c.seconds or 0)
    for reason, n in pairs(c.reasons or {}) do t.reasons[reason] = (t.reasons[reason] or 0) + n end
    t.retried = t.retried + (c.retried or 0)
    local rec = r.ctx.recorded
    if rec then
      t.problems, t.events, t.events_run = t.problems + rec.problems, t.events + rec.events, t.events_run + rec.since
      for k, n in pairs(rec.kinds) do t.problem_kinds[k] = (t.problem_kinds[k] or 0) + n end
    else
      for _, p in ipairs(r.ctx.problems) do
        t.problems = t.problems + (p.count or 1)
        local k = p.kind or "problem"
        t.problem_kinds[k] = (t.problem_kinds[k] or 0) + (p.count or 1)
      end
    end
  end
  local lines = {}
  local function add(fmt, ...) lines[#lines + 1] = fmt:format(...) end
  add("media:        %d (%d could not be processed)", t.media, t.failed_media)
  local tc = results.targets and results.targets.counts
  if tc and tc.folders > 0 then
    -- every entry of a target folder: taken (as what) or left (why)
    t.targets = tc
    add("folders:      %d (%d as their images, %d as directory media)", tc.folders, tc.image_folders,
        tc.tree_folders)
    local ls = {}
    for reason, n in pairs(tc.left_by) do ls[#ls + 1] = ("%s %d"):format(reason:gsub("_", " "), n) end
    table.sort(ls)
    add("  entries:    %d taken (%d images, %d mapfiles and ddrescue files, %d in directory media), %d left%s",
        tc.images + tc.companions + tc.in_trees, tc.images, tc.companions, tc.in_trees, tc.left,
        #ls > 0 and (" (" .. table.concat(ls, ", ") .. ")") or "")
  end
  add("files found:  %d", t.found)
  add("copied:       %d (%d new, %d deduplicated)", t.copied, t.new, t.deduplicated)
  local rs = {}
  for reason, n in pairs(t.reasons) do rs[#rs + 1] = ("%s %d"):format(reason, n) end
  table.sort(rs)
  add("skipped:      %d%s", t.skipped, #rs > 0 and (" (" .. table.concat(rs, ", ") .. ")") or "")
  add("failed:       %d", t.failed)
  add("retried:      %d%s", t.retried, t.retried > 0 and " (left failed_retryable by an earlier run, tried again)" or "")
  add("damaged:      %d%s", t.damaged, t.salvaged > 0 and (" (%d salvaged: readable bytes stored, the rest as zeros)"):format(t.salvaged) or "")
  add("bytes:        %s", progress.bytes(t.bytes))
  local cs = t.copy_seconds
  add("copy rate:    %.0f files/s, %s/s", cs > 0 and t.copied / cs or 0, progress.bytes(cs > 0 and t.bytes / cs or 0))
  -- new rescues of known media (docs/media.md): what they hold of the older ones' losses
  local rescues, lost, recovered = 0, 0, 0
  for _, r in ipairs(results) do
    local c = r.ctx.recovered
    if c then rescues, lost, recovered = rescues + 1, lost + c.lost, recovered + c.recovered end
  end
  if rescues > 0 then
    t.rescues, t.rescue_lost, t.rescue_recovered = rescues, lost, recovered
    add("new rescues:  %d (of the %d files lost on the older media, %d copied now)", rescues, lost, recovered)
  end
  add("medium problems recorded: %d", t.problems)
  local ks = {}
  for k, n in pairs(t.problem_kinds) do ks[#ks + 1] = ("%s %d"):format(k, n) end
  table.sort(ks)
  if #ks > 0 then add("  by kind:    %s", table.concat(ks, ", ")) end
  add("diagnostic events: %d (%d by this run)", t.events, t.events_run)
  add("elapsed:      %s", progress.duration(seconds))
  return table.concat(lines, "\n") .. "\n", t
end

return M
