-- lua/ntt/stage/archive.lua: the medium's image set into
-- <data root>/archive/<hash>.tar.zst, read back and verified, recorded;
-- its sources removed only when policy archive.remove_sources says so
-- (lua/ntt/archive.lua).  A directory medium has no image set: nothing to do.
local M = {}

function M.run(ctx)
  local m = ctx.medium
  if not m then return nil, "archive needs identify first", "EINVAL" end
  if m.kind ~= "image" then return true end
  local rec, err, code = require("ntt.accounting").resolve(ctx.db, m.hash)
  if not rec then return nil, err, code end
  return require("ntt.archive").run(ctx.db, rec, ctx.policy.archive or {}, ctx.log)
end

return M
