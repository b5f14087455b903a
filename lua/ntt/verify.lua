-- lua/ntt/verify.lua: proving years later that nothing rotted (`ntt verify`,
-- the verify stage; docs/operations.md "Verifying").
--
--   verify.run(conn, opts) -> report | nil, msg, code
--     opts.scope: which blobs are re-hashed --
--       "all"     every blob of the store (default);
--       "sample"  opts.n blobs chosen at random;
--       "oldest"  the opts.n blobs verified longest ago (never first);
--       "medium"  every blob medium opts.medium references;
--       "since"   the blobs medium opts.medium references that were not
--                 verified since opts.since (a timestamptz; the stage).
--     Each blob is read again and BLAKE3-hashed (ntt.core.verify.files:
--     several at once, the big ones tree-hashed; opts.threads, opts.rate
--     in bytes per second); a match sets blob.last_verified (and clears
--     blob.lost_at).  For "all" and "medium", each medium in scope is
--     checked further (lua/ntt/verify/checks.lua): every copied inode's
--     blob exists with the inode's size, the second copies of its blobs
--     (blob_copy) hash to their blob (a bad one made again from the blob,
--     the tree's links moved to it: "blob_copy_repaired", else
--     "blob_copy_bad"), its tree paths are links to their blobs (when its
--     tree is built), its archive reads back as recorded.
--     A blob that does not match (or is missing, or the wrong size) is a
--     problem of every medium that references it, with their paths: unless
--     opts.repair == false it is repaired from a medium's image
--     (lua/ntt/verify/repair.lua; one whose image is gone, from its archive
--     unpacked under the data root) and recorded on those media under
--     "blob_repaired"; else recorded under "blob_mismatch" and the blob
--     marked lost (blob.lost_at).  A bad tree is "tree_links_bad", a bad
--     archive "archive_mismatch"; each is cleared by a later verify that
--     finds it right.  A medium in scope with nothing wrong left gets
--     medium.verified_at.
--     report = { blobs =, bytes =, good =, repaired =, lost =,
--                bad = { { blob =, size =, err =, msg =, uses =, repaired =,
--                          how =, why = }, ... },
--                tree = { { medium =, path =, why = }, ... },
--                archives = { { medium =, path =, ok =, why = }, ... },
--                copies = { { medium =, blob =, n =, path =, why =, repaired =,
--                             relinked =, fix = }, ... } (the bad ones),
--                media = n checked, unrepaired = count }
--     report.unrepaired counts the lost blobs, bad tree paths, bad
--     archives and unrepaired copies: `ntt verify` exits non-zero when it is not 0.
--     opts.progress = { interval =, bar = } (progress.new); opts.log.
local db = require "ntt.db"
local config = require "ntt.config"
local cverify = require "ntt.core.verify"
local problems = require "ntt.problems"
local progress = require "ntt.progress"
local repair = require "ntt.verify.repair"
local checks = require "ntt.verify.checks"

local M = {}

M.PAGE = 1000   -- blobs handed to ntt.core.verify.files at once

-- The pages of blobs in scope: a function returning the next page ({} at the end).
local function pager(conn, opts)
  local scope = opts.scope or "all"
  if scope == "sample" or scope == "oldest" then
    local order = scope == "sample" and "random()" or "last_verified NULLS FIRST, first_seen, blobid"
    local rows, err, code, state = conn:exec(
      ("SELECT blobid, size FROM blob ORDER BY %s LIMIT $1"):format(order), opts.n)
    if not rows then return nil, err, code, state end
    local i = 0
    return function()
      local page = {}
      for k = i + 1, math.min(i + M.PAGE, #rows) do page[#page + 1] = rows[k] end
      i = i + #page
      return page
    end
  end
  local sql, args
  if scope == "all" then
    sql, args = "SELECT blobid, size FROM blob WHERE blobid > $1 ORDER BY blobid LIMIT $2", {}
  elseif scope == "medium" or scope == "since" then
    local it, pt = db.partitions(conn, opts.medium)
    if it == nil then return nil, pt, "EDB" end
    if not it then return function() return {} end end
    sql = ([[
      SELECT DISTINCT b.blobid, b.size FROM %s i JOIN blob b ON b.blobid = i.blobid
       WHERE b.blobid > $1 AND i.medium_hash = $3
         AND ($4::timestamptz IS NULL OR b.last_verified IS NULL OR b.last_verified < $4::timestamptz)
       ORDER BY b.blobid LIMIT $2]]):format(it)
    args = { opts.medium, scope == "since" and opts.since or nil }
  else
    error("verify.run: unknown scope " .. tostring(scope), 3)
  end
  local after = ""
  return function()
    local rows, err, code, state
    if #args == 0 and scope == "all" then
      rows, err, code, state = conn:exec(sql, after, M.PAGE)
    else
      rows, err, code, state = conn:exec(sql, after, M.PAGE, args[1], args[2])
    end
    if not rows then return nil, err, code, state end
    if #rows > 0 then after = rows[#rows].blobid end
    return rows
  end
end

-- Drops the "blob_mismatch" entries of blob from every medium.
local function forget_mismatch(conn, blob)
  return conn:exec([[
    UPDATE medium SET problems = CASE WHEN jsonb_array_length(x.arr) = 0 THEN medium.problems - 'blob_mismatch'
                                      ELSE jsonb_set(medium.problems, '{blob_mismatch}', x.arr) END
      FROM (SELECT m.medium_hash AS h,
                   coalesce((SELECT jsonb_agg(e) FROM jsonb_array_elements(m.problems->'blob_mismatch') e
                              WHERE e->>'blob' <> $1), '[]'::jsonb) AS arr
              FROM medium m
             WHERE jsonb_typeof(m.problems->'blob_mismatch') = 'array'
               AND m.problems->'blob_mismatch' @> jsonb_build_array(jsonb_build_object('blob', $1::text))) x
     WHERE medium.medium_hash = x.h]], blob)
end

local function path_names(u)
  local out = {}
  for i, r in ipairs(u.paths) do out[i] = ("p%d/%s"):format(r.fs_index, r.path) end
  return out
end

-- A blob that is not what its name says: who uses it, repaired or lost.
local function handle_bad(conn, st, b, opts, report, hurt, unpacked)
  local uses, err, code, state = repair.uses(conn, b.blob)
  if not uses then return nil, err, code, state end
  b.uses = uses
  if opts.repair ~= false then
    local how, why = repair.from_images(conn, st, b.blob, b.size, uses, opts.log, unpacked)
    b.repaired, b.how, b.why = how ~= nil, how, why
  else
    b.repaired, b.why = false, "not repaired (asked not to)"
  end
  local ok
  ok, err, code, state = forget_mismatch(conn, b.blob)
  if not ok then return nil, err, code, state end
  for _, u in ipairs(uses) do
    if b.repaired then
      ok, err, code, state = problems.add(conn, u.medium, "blob_repaired",
        { blob = b.blob, found = b.err, paths = path_names(u), from = b.how })
    else
      hurt[u.medium] = true
      ok, err, code, state = problems.add(conn, u.medium, "blob_mismatch",
        { blob = b.blob, found = b.err, paths = path_names(u), why = b.why })
    end
    if not ok then return nil, err, code, state end
  end
  if b.repaired then
    report.repaired = report.repaired + 1
    ok, err, code, state = conn:exec("UPDATE blob SET last_verified = now(), lost_at = NULL WHERE blobid = $1",
                                     b.blob)
  else
    report.lost = report.lost + 1
    ok, err, code, state = conn:exec("UPDATE blob SET lost_at = coalesce(lost_at, now()) WHERE blobid = $1",
                                     b.blob)
  end
  if not ok then return nil, err, code, state end
  if opts.log then
    opts.log:detail(b.repaired and "info" or "error", b.repaired and "blob_repaired" or "blob_lost",
      { blob = b.blob, found = b.err, from = b.how, why = b.why },
      ("blob %s: %s; %s"):format(b.blob, b.msg, b.repaired and ("repaired from " .. b.how) or ("LOST: " .. b.why)))
  end
  report.bad[#report.bad + 1] = b
  return true
end

-- The good blobs of a page: last_verified, and any record of them as lost undone.
local function mark_good(conn, good)
  if #good == 0 then return true end
  local arr = db.array(good)
  local lost, err, code, state = conn:exec(
    "SELECT blobid FROM blob WHERE blobid = ANY($1::text[]) AND lost_at IS NOT NULL", arr)
  if not lost then return nil, err, code, state end
  for _, r in ipairs(lost) do
    local ok
    ok, err, code, state = forget_mismatch(conn, r.blobid)
    if not ok then return nil, err, code, state end
  end
  return conn:exec("UPDATE blob SET last_verified = now(), lost_at = NULL WHERE blobid = ANY($1::text[])", arr)
end

local function blobs_pass(conn, st, opts, report, hurt, seen, unpacked)
  local next_page, err, code, state = pager(conn, opts)
  if not next_page then return nil, err, code, state end
  local pgo = opts.progress or {}
  local pr = progress.new { label = opts.label or "verify", interval = pgo.interval, bar = pgo.bar }
  while true do
    local page
    page, err, code, state = next_page()
    if not page then pr:finish(); return nil, err, code, state end
    if #page == 0 then break end
    local paths, bytes = {}, 0
    for i, r in ipairs(page) do paths[i] = st:path(r.blobid); bytes = bytes + r.size end
    local res
    res, err, code = cverify.files(paths, { threads = opts.threads, rate = opts.rate })
    if not res then pr:finish(); return nil, err, code end
    local good = {}
    for i, r in ipairs(page) do
      local h = res[i]
      seen[r.blobid] = true
      if h.blake3 == r.blobid and h.size == r.size then
        good[#good + 1] = r.blobid
      else
        local msg = h.err and h.msg
                    or ("reads as %d bytes BLAKE3 %s, not %d bytes %s"):format(h.size, h.blake3, r.size, r.blobid)
        local ok
        ok, err, code, state = handle_bad(conn, st, { blob = r.blobid, size = r.size, err = h.err or "EBADMSG",
                                                      msg = msg }, opts, report, hurt, unpacked)
        if not ok then pr:finish(); return nil, err, code, state end
      end
    end
    local ok
    ok, err, code, state = mark_good(conn, good)
    if not ok then pr:finish(); return nil, err, code, state end
    report.blobs, report.bytes, report.good = report.blobs + #page, report.bytes + bytes, report.good + #good
    pr:add(#page, bytes)
  end
  pr:finish()
  return true
end

-- The second copies of the blobs of medium h: re-hashed, a bad one made
-- again from its blob and the tree's links to it moved to the new one.
local function copies_pass(conn, st, h, opts, report, hurt, seen)
  local bad, err, code, state = checks.copies(conn, st, h, seen, opts)
  if not bad then return nil, err, code, state end
  local left, ok = {}, nil
  for _, c in ipairs(bad) do
    c.medium = h
    if opts.repair ~= false then
      c.relinked, c.fix = repair.copy(conn, st, c)
      c.repaired = c.relinked ~= nil
    else
      c.fix = "not repaired (asked not to)"
    end
    report.copies[#report.copies + 1] = c
    if c.repaired then
      ok, err, code, state = problems.add(conn, h, "blob_copy_repaired",
                                          { blob = c.blob, n = c.n, found = c.why, relinked = c.relinked })
      if not ok then return nil, err, code, state end
    else
      left[#left + 1] = ("%s.%d: %s; %s"):format(c.blob, c.n, c.why, c.fix)
    end
    if opts.log then
      opts.log:detail(c.repaired and "info" or "error", c.repaired and "blob_copy_repaired" or "blob_copy_bad",
        { blob = c.blob, n = c.n, found = c.why, relinked = c.relinked, why = not c.repaired and c.fix or nil },
        ("copy %d of blob %s: %s; %s"):format(c.n, c.blob, c.why,
          c.repaired and ("made again, %d tree links moved to it"):format(c.relinked) or ("NOT REPAIRED: " .. c.fix)))
    end
  end
  if #left > 0 then
    hurt[h] = true
    return problems.set(conn, h, "blob_copy_bad", { count = #left, copies = { table.unpack(left, 1, math.min(#left, 20)) } })
  end
  return problems.clear(conn, h, "blob_copy_bad")
end

-- The further checks of one medium: inodes, second copies, tree, archive.
local function medium_pass(conn, st, h, opts, report, hurt, seen, unpacked)
  local bad, err, code, state = checks.inodes(conn, st, h)
  if not bad then return nil, err, code, state end
  for _, b in ipairs(bad) do
    if not seen[b.blob] then
      seen[b.blob] = true
      local msg = b.have and ("is %d bytes in the store, the inode %d"):format(b.have, b.size) or "is not in the store"
      local ok
      ok, err, code, state = handle_bad(conn, st, { blob = b.blob, size = b.size, err = b.err, msg = msg },
                                        opts, report, hurt, unpacked)
      if not ok then return nil, err, code, state end
    end
  end
  local ok
  ok, err, code, state = copies_pass(conn, st, h, opts, report, hurt, seen)
  if not ok then return nil, err, code, state end
  local tree
  tree, err, code, state = checks.tree(conn, st, h)
  if not tree then return nil, err, code, state end
  if #tree > 0 then
    hurt[h] = true
    local first = {}
    for i = 1, math.min(#tree, 20) do
      first[i] = tree[i].path .. ": " .. tree[i].why
      report.tree[#report.tree + 1] = { medium = h, path = tree[i].path, why = tree[i].why }
    end
    for i = 21, #tree do report.tree[#report.tree + 1] = { medium = h, path = tree[i].path, why = tree[i].why } end
    ok, err, code, state = problems.set(conn, h, "tree_links_bad", { count = #tree, paths = first })
  else
    ok, err, code, state = problems.clear(conn, h, "tree_links_bad")
  end
  if not ok then return nil, err, code, state end
  local ar
  ar, err, code, state = checks.archive(conn, h)
  if ar == nil then return nil, err, code, state end
  if ar then
    ar.medium = h
    report.archives[#report.archives + 1] = ar
    if ar.ok then
      ok, err, code, state = problems.clear(conn, h, "archive_mismatch")
    else
      hurt[h] = true
      ok, err, code, state = problems.set(conn, h, "archive_mismatch", { path = ar.path, why = ar.why })
    end
    if not ok then return nil, err, code, state end
  end
  return true
end

function M.run(conn, opts)
  opts = opts or {}
  local st, err, code = require("ntt.core.store").open(opts.store or config.path("store"))
  if not st then return nil, err, code end
  local report = { blobs = 0, bytes = 0, good = 0, repaired = 0, lost = 0, bad = {}, tree = {}, archives = {},
                   copies = {}, media = 0, unrepaired = 0 }
  local hurt, seen, unpacked = {}, {}, {}   -- unpacked: archives unpacked for repairs, until the end
  local function fail(...) repair.release(unpacked); st:close(); return ... end
  local ok, state
  ok, err, code, state = blobs_pass(conn, st, opts, report, hurt, seen, unpacked)
  if not ok then return fail(nil, err, code, state) end
  local scope = opts.scope or "all"
  local media = {}
  if scope == "all" then
    local rows
    rows, err, code, state = conn:exec("SELECT medium_hash FROM medium ORDER BY medium_hash")
    if not rows then return fail(nil, err, code, state) end
    for i, r in ipairs(rows) do media[i] = r.medium_hash end
  elseif scope == "medium" or scope == "since" then
    media[1] = opts.medium
  end
  local further = scope == "all" or scope == "medium"
  for _, h in ipairs(media) do
    if further then
      ok, err, code, state = medium_pass(conn, st, h, opts, report, hurt, seen, unpacked)
      if not ok then return fail(nil, err, code, state) end
    end
    if not hurt[h] then
      ok, err, code, state = conn:exec("UPDATE medium SET verified_at = now() WHERE medium_hash = $1", h)
      if not ok then return fail(nil, err, code, state) end
    end
    report.media = report.media + 1
  end
  repair.release(unpacked)
  st:close()
  local left = 0
  for _, a in ipairs(report.archives) do if not a.ok then left = left + 1 end end
  for _, c in ipairs(report.copies) do if not c.repaired then left = left + 1 end end
  report.unrepaired = report.lost + #report.tree + left
  return report
end

return M
