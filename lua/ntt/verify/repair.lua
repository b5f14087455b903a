-- lua/ntt/verify/repair.lua: a blob that no longer matches its name, put
-- right from a medium that holds its content (`ntt verify`, the verify
-- stage; lua/ntt/verify.lua).
--
--   repair.uses(conn, blob [, limit]) -> uses | nil, msg, code
--       every medium whose inodes reference blob, with the paths that do:
--       { { medium =, human =, image_path =, map_path =, kind =,
--           paths = { { fs_index =, path = }, ... } }, ... }
--       (at most `limit` paths per medium, default 1000).
--   repair.from_images(conn, st, blob, size, uses, log) -> how | nil, why, code
--       each medium's image is mounted (ntt.mount; read-only, through the
--       helper), the file read by one of its paths and hashed; the first
--       that hashes to blob is written into the store through its temp and
--       rename (st:put), after the damaged blob was moved aside to
--       <store>/quarantine/<blob>.<time> (a blob is never overwritten and
--       nothing is deleted); the medium's tree links to the old file are
--       made again to the new one.  A mount this call made is taken down
--       again unless a run holds a lease on it.  how = "image <hash>
--       p<N>/<path>".  A medium that is a directory is read in place.  No
--       medium can give it back: nil, why, "ENOENT".  Extracting an image
--       from its archive is not tried (unpacking a whole image for one file
--       is not cheap): say so in why.
--   repair.tree_links(st, blob, old_ino, uses) -> relinked count: tree paths of
--       uses that were links to old_ino (the damaged file) made links to
--       blob; old_ino false (the blob was missing): every path of uses that
--       is not a link to the blob now
local config = require "ntt.config"
local fs = require "ntt.core.fs"
local hash = require "ntt.core.hash"
local db = require "ntt.db"

local M = {}

local MAX_READ = 1 << 30   -- a repair reads the file whole (st:put takes a string)

function M.uses(conn, blob, limit)
  local media, err, code, state = conn:exec([[
    SELECT medium_hash, medium_human, image_path, map_path, kind FROM medium ORDER BY medium_hash]])
  if not media then return nil, err, code, state end
  local out = {}
  for _, m in ipairs(media) do
    local it, pt = db.partitions(conn, m.medium_hash)
    if it == nil then return nil, pt, "EDB" end
    if it then
      local rows
      rows, err, code, state = conn:exec(([[
        SELECT p.fs_index, p.path
          FROM %s p JOIN %s i ON i.medium_hash = p.medium_hash AND i.fs_index = p.fs_index AND i.ino = p.ino
         WHERE i.blobid = $1
         ORDER BY p.fs_index, p.path LIMIT $2]]):format(pt, it), blob, limit or 1000)
      if not rows then return nil, err, code, state end
      if #rows > 0 then
        out[#out + 1] = { medium = m.medium_hash, human = m.medium_human, image_path = m.image_path,
                          map_path = m.map_path, kind = m.kind, paths = rows }
      end
    end
  end
  return out
end

local function read_all(path, size)
  if size > MAX_READ then return nil, ("%s: %d bytes, more than a repair reads"):format(path, size), "EFBIG" end
  local f, err = io.open(path, "rb")
  if not f then return nil, err, "EIO" end
  local data = f:read("a")
  f:close()
  if not data then return nil, path .. ": unreadable", "EIO" end
  return data
end

-- The roots of medium u: mounted (or already mounted) through the helper,
-- and whether this call mounted it.
local function roots(conn, u)
  if u.kind == "directory" then return { [0] = u.image_path }, false end
  if not u.image_path or not fs.stat(u.image_path) then
    return nil, ("medium %s: its image %s is not there"):format(u.medium, tostring(u.image_path)), "ENOENT"
  end
  local mount = require "ntt.mount"
  local before = mount.status(u.medium, u.image_path)
  local was = before and before.state and before.state ~= "unmounted"
  local res, err, code = mount.mount(u.medium, u.image_path, { map = u.map_path })
  if not res then return nil, err, code end
  local out = {}
  for _, r in ipairs(mount.roots_of(res)) do out[r.fs_index] = r.root end
  return out, not was
end

local function unmount_if_ours(conn, u, ours)
  if not ours then return end
  local holders = require("ntt.lease").holders(conn, u.medium)
  if holders and #holders == 0 then require("ntt.mount").unmount(u.medium, u.image_path) end
end

-- Moves the damaged blob aside and writes data in its place.
local function replace(st, blob, data)
  local p = st:path(blob)
  local old = fs.stat(p, true)
  if old then
    local q = st:root() .. "/quarantine"
    local ok, err, code = fs.mkdirp(q, 493)
    if not ok then return nil, err, code end
    local rok, rerr = os.rename(p, ("%s/%s.%d"):format(q, blob, os.time()))
    if not rok then return nil, rerr, "EIO" end
  end
  local got, err, code = st:put(data)
  if not got then return nil, err, code end
  if got ~= blob then return nil, ("wrote %s, want %s"):format(got, blob), "EBADMSG" end
  return old and old.ino or false
end

function M.tree_links(st, blob, old_ino, uses)
  local tree = require "ntt.core.tree"
  local n = 0
  local new = fs.stat(st:path(blob), true)
  local new_ino = new and new.ino
  for _, u in ipairs(uses) do
    local root = config.path("tree", u.medium)
    if fs.stat(root) then
      local entries = {}
      for _, r in ipairs(u.paths) do
        local name = ("p%d/%s"):format(r.fs_index, r.path)
        local s = fs.stat(root .. "/" .. name, true)
        if s and s.type == "file" and (s.ino == old_ino or (not old_ino and s.ino ~= new_ino)) then
          os.remove(root .. "/" .. name)
          entries[#entries + 1] = { path = name, kind = "f", blob = blob }
        end
      end
      if #entries > 0 then
        local stats = tree.build(st, root, entries, { threads = 1 })
        if stats then n = n + (stats.links or 0) end
      end
    end
  end
  return n
end

function M.from_images(conn, st, blob, size, uses, log)
  local why = {}
  for _, u in ipairs(uses) do
    local rs, ours = roots(conn, u)
    if not rs then
      why[#why + 1] = ours
    else
      for _, r in ipairs(u.paths) do
        local root = rs[r.fs_index]
        if root then
          local file = r.path == "" and root or (root .. "/" .. r.path)
          local data, rerr = read_all(file, size)
          if data and hash.sum(data) == blob and #data == size then
            local old, perr, pcode = replace(st, blob, data)
            unmount_if_ours(conn, u, ours)
            if old == nil then return nil, perr, pcode end
            local relinked = M.tree_links(st, blob, old, uses)
            local how = ("image %s p%d/%s"):format(u.medium, r.fs_index, r.path)
            if log then log:info("blob_repaired", { blob = blob, from = how, tree_relinked = relinked }) end
            return how
          end
          why[#why + 1] = data and ("%s p%d/%s: holds other content now"):format(u.medium, r.fs_index, r.path)
                          or rerr
        end
      end
      unmount_if_ours(conn, u, ours)
    end
  end
  local arch = conn:exec("SELECT count(*) AS n FROM archive WHERE medium_hash = ANY($1::text[])",
                         db.array((function() local l = {} for i, u in ipairs(uses) do l[i] = u.medium end return l end)()))
  if arch and arch[1] and arch[1].n > 0 then
    why[#why + 1] = "an archived image was not unpacked to repair it (not cheap: ntt verify does not)"
  end
  return nil, #why > 0 and table.concat(why, "; ") or "no medium references it", "ENOENT"
end

return M
