-- lua/ntt/stage/identify.lua: give the target its medium hash and register it.
--
-- Re-running is harmless: the row is updated (paths may move), the first
-- identification time is kept.
local media = require "ntt.media"

local M = {}

function M.run(ctx)
  local ident, err, code = media.identify(ctx.target)
  if not ident then return nil, err, code end
  ctx.medium = ident
  local r, qerr, qcode = ctx.db:exec([[
    INSERT INTO medium (medium_hash, medium_human, kind, image_path, map_path, size, identified_at)
    VALUES ($1, $2, $3, $4, $5, $6, now())
    ON CONFLICT (medium_hash) DO UPDATE
       SET medium_human = coalesce(medium.medium_human, EXCLUDED.medium_human),
           image_path = EXCLUDED.image_path, map_path = EXCLUDED.map_path,
           size = EXCLUDED.size,
           identified_at = coalesce(medium.identified_at, EXCLUDED.identified_at)]],
    ident.hash, ident.human, ident.kind, ident.image_path, ident.map_path, ident.size)
  if not r then return nil, qerr, qcode end
  ctx.log:info("identified", { medium = ident.hash, kind = ident.kind, human = ident.human,
                               size = ident.size, map = ident.map_path })
  return true
end

return M
