-- lua/ntt/stage/report.lua: the medium's condition report (HTML, JSON) and
-- DFXML into <data root>/report/, and the index page of every medium.
--
-- Placed before unmount in a policy, the DFXML carries each file's byte
-- runs (FIEMAP of the mounted files); after unmount, everything else.
-- Policy: report = { dir = path (default <data root>/report), limit = N
-- (entries of each list in the page) }.
local M = {}

function M.run(ctx)
  local m = ctx.medium
  if not m then return true end
  local accounting = require "ntt.accounting"
  local write = require "ntt.report.write"
  local settings = ctx.policy.report or {}
  local dir = settings.dir or require("ntt.config").path("report")
  local row, err, code, state = accounting.resolve(ctx.db, m.hash)
  if not row then return nil, err, code, state end
  local roots = {}
  for _, r in ipairs(ctx.roots or {}) do
    if r.fstype ~= "directory" then roots[r.fs_index] = r.root end
  end
  local ok
  ok, err, code, state = write.one(ctx.db, row, dir, { limit = settings.limit, roots = roots })
  if not ok then return nil, err, code, state end
  ctx.log:info("report_written", { medium = m.hash, dir = dir }, ("report: %s/%s.html"):format(dir, m.hash))
  return true
end

return M
