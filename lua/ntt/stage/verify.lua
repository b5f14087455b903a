-- lua/ntt/stage/verify.lua: the blobs this medium references that were not
-- verified since its copy finished, read again and BLAKE3-hashed
-- (lua/ntt/verify.lua, scope "since").  Small media cost little: only the
-- blobs the run copied (or that were never verified) are read.  A blob that
-- does not match is repaired from the (mounted) image, else recorded lost
-- and a problem of every medium that uses it.  policy.verify:
-- after_copy = false turns it off; threads, rate (MB/s) as `ntt verify`.
local M = {}

function M.run(ctx)
  local m = ctx.medium
  if not m then return nil, "verify needs identify first", "EINVAL" end
  local opts = ctx.policy.verify or {}
  local conn, log = ctx.db, ctx.log
  if opts.after_copy == false then
    log:info("verify_skipped", { medium = m.hash, reason = "policy verify.after_copy is false" })
    return true
  end
  local r, err, code, state = conn:exec("SELECT copy_done::text AS copy_done FROM medium WHERE medium_hash = $1",
                                        m.hash)
  if not r then return nil, err, code, state end
  if not (r[1] and r[1].copy_done) then
    log:info("verify_skipped", { medium = m.hash, reason = "copy not complete" })
    return true
  end
  local pgo = ctx.policy.progress or {}
  local rep
  rep, err, code, state = require("ntt.verify").run(conn, {
    scope = "since", medium = m.hash, since = r[1].copy_done, threads = opts.threads,
    rate = opts.rate and opts.rate * 1e6, log = log, label = "verify " .. (m.human or m.hash),
    progress = { interval = pgo.interval, bar = pgo.bar } })
  if not rep then return nil, err, code, state end
  ctx.counts.verified_blobs = (ctx.counts.verified_blobs or 0) + rep.blobs
  log:info("verified", { medium = m.hash, blobs = rep.blobs, bytes = rep.bytes, good = rep.good,
                         repaired = rep.repaired, lost = rep.lost })
  if rep.lost > 0 then
    log:warn("blobs_lost", { medium = m.hash, lost = rep.lost },
             ("%s: %d blobs do not match their names and could not be repaired (see ntt verify)")
               :format(m.human or m.hash, rep.lost))
  end
  return true
end

return M
