-- lua/ntt/verify/checks.lua: what `ntt verify` checks of one medium besides
-- its blobs' content (lua/ntt/verify.lua).
--
--   checks.inodes(conn, st, hash) -> bad | nil, msg, code
--       every copied inode's blob is in the store with the inode's size:
--       bad = { { blob =, size = (the inode's), have = (the store's, or
--       nil when missing), err = "ENOENT" | "EBADMSG" }, ... }, one per blob.
--   checks.tree(conn, st, hash) -> bad | nil, msg, code
--       when the medium's tree is built (tree_done): every path of a copied
--       file under tree/<medium>/p<N>/ is a link to its blob, or to one of
--       the blob's second copies (blob_copy).  Paths recorded in
--       tree_problem are left out (already reported).  bad = { { path =
--       "p<N>/<path>", why = }, ... }.
--   checks.copies(conn, st, hash, seen [, opts]) -> bad | nil, msg, code
--       every second copy (blob_copy, <store>/copies/AA/BB/<blob>.<n>) of a
--       blob the medium references is re-hashed (ntt.core.verify.files;
--       opts.threads, opts.rate) against the blob's name and size; copies
--       already in seen (keyed "<blob>.<n>") are skipped, the others added.
--       bad = { { blob =, n =, path =, size =, why = }, ... }.
--   checks.archive(conn, hash) -> result | false (no archive) | nil, msg, code
--       the recorded archive read again (ntt.core.archive.read): the file's
--       size and BLAKE3, and every member's name, size and BLAKE3, against
--       tables archive and archive_member.  result = { path =, ok = bool,
--       why = (when not ok) }; verified_at is set when ok.
local db = require "ntt.db"
local fs = require "ntt.core.fs"
local pg = require "ntt.core.pg"
local config = require "ntt.config"
local S = require "ntt.states"

local M = {}

local PAGE = 5000

function M.inodes(conn, st, hash)
  local it = db.partitions(conn, hash)
  if it == nil then return nil, "verify: partitions of " .. hash, "EDB" end
  if not it then return {} end
  local rows, err, code, state = conn:exec(([[
    SELECT DISTINCT i.blobid, i.size FROM %s i
     WHERE i.medium_hash = $1 AND i.state = $2 AND i.blobid IS NOT NULL
     ORDER BY i.blobid]]):format(it), hash, S.COPIED)
  if not rows then return nil, err, code, state end
  local bad = {}
  for _, r in ipairs(rows) do
    local have = st:has(r.blobid)
    if have ~= r.size then
      bad[#bad + 1] = { blob = r.blobid, size = r.size, have = have, err = have and "EBADMSG" or "ENOENT" }
    end
  end
  return bad
end

local function copy_path(st, blob, n)
  return ("%s/copies/%s/%s/%s.%d"):format(st:root(), blob:sub(1, 2), blob:sub(3, 4), blob, n)
end
M.copy_path = copy_path

function M.copies(conn, st, hash, seen, opts)
  local it = db.partitions(conn, hash)
  if it == nil then return nil, "verify: partitions of " .. hash, "EDB" end
  if not it then return {} end
  local rows, err, code, state = conn:exec(([[
    SELECT c.blobid, c.copy_no, b.size FROM blob_copy c JOIN blob b ON b.blobid = c.blobid
     WHERE c.blobid IN (SELECT i.blobid FROM %s i WHERE i.medium_hash = $1 AND i.blobid IS NOT NULL)
     ORDER BY c.blobid, c.copy_no]]):format(it), hash)
  if not rows then return nil, err, code, state end
  local todo, paths = {}, {}
  for _, r in ipairs(rows) do
    local key = r.blobid .. "." .. r.copy_no
    if not seen[key] then
      seen[key] = true
      todo[#todo + 1] = r
      paths[#paths + 1] = copy_path(st, r.blobid, r.copy_no)
    end
  end
  if #todo == 0 then return {} end
  opts = opts or {}
  local res
  res, err, code = require("ntt.core.verify").files(paths, { threads = opts.threads, rate = opts.rate })
  if not res then return nil, err, code end
  local bad = {}
  for i, r in ipairs(todo) do
    local h = res[i]
    if h.blake3 ~= r.blobid or h.size ~= r.size then
      bad[#bad + 1] = { blob = r.blobid, n = r.copy_no, path = paths[i], size = r.size,
                        why = h.err and h.msg or ("reads as %d bytes BLAKE3 %s"):format(h.size, h.blake3) }
    end
  end
  return bad
end

-- The inode numbers a tree path of blob may be a link to: the blob's and
-- its second copies'.
local function inos_of(conn, st, cache, blob)
  if cache[blob] then return cache[blob] end
  local set = {}
  local s = fs.stat(st:path(blob), true)
  if s then set[s.ino] = true end
  local copies = conn:exec("SELECT copy_no FROM blob_copy WHERE blobid = $1", blob) or {}
  for _, c in ipairs(copies) do
    local cp = copy_path(st, blob, c.copy_no)
    local cs = fs.stat(cp, true)
    if cs then set[cs.ino] = true end
  end
  cache[blob] = set
  return set
end

function M.tree(conn, st, hash)
  local r, err, code, state = conn:exec("SELECT tree_done IS NOT NULL AS built FROM medium WHERE medium_hash = $1", hash)
  if not r then return nil, err, code, state end
  if not (r[1] and r[1].built) then return {} end
  local it, pt = db.partitions(conn, hash)
  if it == nil then return nil, pt, "EDB" end
  if not it then return {} end
  local root = config.path("tree", hash)
  local bad, cache, after = {}, {}, { fs = -1, path = "" }
  while true do
    local rows
    rows, err, code, state = conn:exec(([[
      SELECT p.fs_index, p.path, i.blobid
        FROM %s p JOIN %s i ON i.medium_hash = p.medium_hash AND i.fs_index = p.fs_index AND i.ino = p.ino
       WHERE p.medium_hash = $1 AND i.state = $2 AND i.fs_type = 'f' AND i.blobid IS NOT NULL
         AND p.exclude_reason IS NULL AND (p.fs_index, p.path) > ($3::int, $4::bytea)
         AND NOT EXISTS (SELECT 1 FROM tree_problem t WHERE t.medium_hash = p.medium_hash
                            AND t.fs_index = p.fs_index AND t.path = p.path)
       ORDER BY p.fs_index, p.path LIMIT $5]]):format(pt, it), hash, S.COPIED, after.fs, pg.bytea(after.path), PAGE)
    if not rows then return nil, err, code, state end
    if #rows == 0 then return bad end
    for _, row in ipairs(rows) do
      local name = ("p%d/%s"):format(row.fs_index, row.path)
      local s = fs.stat(root .. "/" .. name, true)
      local why
      if not s then
        why = "missing"
      elseif s.type ~= "file" then
        why = "a " .. s.type .. ", not a link to its blob"
      elseif not inos_of(conn, st, cache, row.blobid)[s.ino] then
        why = "not a link to its blob " .. row.blobid .. " (a copy, or another file)"
      end
      if why then bad[#bad + 1] = { path = name, blob = row.blobid, why = why } end
    end
    after = { fs = rows[#rows].fs_index, path = rows[#rows].path }
  end
end

function M.archive(conn, hash)
  local rec, err, code, state = require("ntt.archive").record(conn, hash)
  if rec == nil then return nil, err, code, state end
  if not rec then return false end
  local res = { path = rec.path, ok = false }
  local back, rerr, rcode = require("ntt.core.archive").read(rec.path)
  if not back and rcode == "EINTR" then return nil, rerr, rcode end
  if not back then
    res.why = rerr
  elseif back.size ~= rec.size or back.blake3 ~= rec.blake3 then
    res.why = ("the file is %d bytes BLAKE3 %s, recorded %d bytes %s"):format(back.size, back.blake3, rec.size,
                                                                                rec.blake3)
  elseif #back.members ~= #rec.members then
    res.why = ("%d members, recorded %d"):format(#back.members, #rec.members)
  else
    for i, m in ipairs(rec.members) do
      local b = back.members[i]
      if b.name ~= m.name or b.size ~= m.size or b.blake3 ~= m.blake3 then
        res.why = ("member %s: %d bytes BLAKE3 %s, recorded %d bytes %s"):format(m.name, b.size, b.blake3,
                                                                                 m.size, m.blake3)
        break
      end
    end
  end
  res.ok = res.why == nil
  if res.ok then
    local ok
    ok, err, code, state = conn:exec("UPDATE archive SET verified_at = now() WHERE medium_hash = $1", hash)
    if not ok then return nil, err, code, state end
  end
  return res
end

return M
