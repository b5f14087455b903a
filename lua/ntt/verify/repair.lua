-- lua/ntt/verify/repair.lua: a blob that no longer matches its name, put
-- right from a medium that holds its content (`ntt verify`, the verify
-- stage; lua/ntt/verify.lua).
--
--   repair.uses(conn, blob [, limit]) -> uses | nil, msg, code
--       every medium whose inodes reference blob, with the paths that do:
--       { { medium =, human =, image_path =, map_path =, kind =,
--           paths = { { fs_index =, path = }, ... } }, ... }
--       (at most `limit` paths per medium, default 1000).
--   repair.from_images(conn, st, blob, size, uses, log [, unpacked]) -> how | nil, why, code
--       each medium's image is mounted (ntt.mount; read-only, through the
--       helper), the file read by one of its paths and hashed; the first
--       that hashes to blob is written into the store through its temp and
--       rename (st:put), after the damaged blob was moved aside to
--       <store>/quarantine/<blob>.<time> (a blob is never overwritten and
--       nothing is deleted); the medium's tree links to the old file are
--       made again to the new one.  A mount this call made is taken down
--       again unless a run holds a lease on it.  how = "image <hash>
--       p<N>/<path>".  A medium that is a directory is read in place.
--       A medium whose image is gone but which has a recorded archive
--       (archive/<hash>.tar.zst) is unpacked (M.unpack) and that image set
--       mounted instead: how = "archive <archive path> p<N>/<path>".  With
--       a table unpacked, an unpacked set and its mount are kept there for
--       the next blob of the same medium (M.release ends them); without,
--       they end before this returns.  No medium can give it back: nil,
--       why, "ENOENT".
--   repair.unpack(conn, hash) -> { dir =, image =, map =, archive = } | nil, why, code
--       the archive of medium hash unpacked into <data root>/unpack/<hash>.<pid>/
--       (ntt.core.archive.extract, streamed) after checking the data root
--       has room for every member ("ENOSPC"); the archive's size and BLAKE3
--       and every member's name, size and BLAKE3 must be as recorded
--       ("EBADMSG"; the folder is removed).  image and map are the unpacked
--       members that were the medium's image_path and map_path.
--       The sets of verifies that were killed go first (M.sweep(top)).
--   repair.release(unpacked) unmounts and removes every set in unpacked
--   repair.copy(conn, st, c) -> relinked count | nil, why, code
--       a second copy c = { blob =, n =, path = } (checks.copies) that does
--       not match: moved aside to <store>/quarantine/<blob>.<n>.<time>
--       (when there), made again from the blob (ntt.core.tree.copy,
--       re-hashed: a blob that is itself bad fails), and every tree path of
--       the media using the blob that was a link to the old file made a
--       link to the new one (a link beside it renamed over it).
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

-- The roots of medium u from image (its own, or one unpacked from its
-- archive): mounted (or already mounted) through the helper, and whether
-- this call mounted it.
local function roots(u, image, map)
  if u.kind == "directory" then return { [0] = u.image_path }, false end
  if not image or not fs.stat(image) then
    return nil, ("medium %s: its image %s is not there"):format(u.medium, tostring(image)), "ENOENT"
  end
  local mount = require "ntt.mount"
  local before = mount.status(u.medium, image)
  local was = before and before.state and before.state ~= "unmounted"
  local res, err, code = mount.mount(u.medium, image, { map = map })
  if not res then return nil, err, code end
  local out = {}
  for _, r in ipairs(mount.roots_of(res)) do out[r.fs_index] = r.root end
  return out, not was
end

local function unmount_if_ours(conn, u, ours, image)
  if not ours then return end
  local holders = require("ntt.lease").holders(conn, u.medium)
  if holders and #holders == 0 then require("ntt.mount").unmount(u.medium, image) end
end

-- The unpacked sets (<data root>/unpack/<hash>.<pid>) of verifies that were
-- killed: the medium's mount from that set, when the helper still has one,
-- taken down (a later run mounting the medium from its own image would be
-- refused, "mounted from ..."), then the folder removed -- an image's worth
-- of space each.  A live process's set stays.  -> the folders removed
function M.sweep(top)
  local liveness = require "ntt.liveness"
  local mount = require "ntt.mount"
  local out = {}
  for _, name in ipairs(fs.readdir(top) or {}) do
    local hash, pid = name:match("^(%x+)%.(%d+)$")
    local dir = top .. "/" .. name
    if hash and #hash >= 16 and liveness.dead { host = require("ntt.core.util").hostname() or "host", pid = tonumber(pid) } then
      local st = mount.status(hash)
      if st and type(st.image) == "string" and st.image:sub(1, #dir + 1) == dir .. "/" then mount.unmount(hash, st.image) end
      if fs.rmtree(dir) then out[#out + 1] = dir end
    end
  end
  return out
end

function M.unpack(conn, hash)
  local rec, err, code = require("ntt.archive").record(conn, hash)
  if rec == nil then return nil, err, code end
  if not rec then return nil, ("medium %s has no archive"):format(hash), "ENOENT" end
  local st = fs.stat(rec.path)
  if not (st and st.size == rec.size) then
    return nil, ("%s: the archive is missing or not its recorded size"):format(rec.path), "ENOENT"
  end
  local top = config.path("unpack")
  local ok
  ok, err, code = fs.mkdirp(top, 448)   -- 0700
  if not ok then return nil, err, code end
  M.sweep(top)   -- (before the room is measured: a killed verify's set frees it)
  local need = 0
  for _, m in ipairs(rec.members) do need = need + m.size end
  local space
  space, err, code = fs.space(top)
  if not space then return nil, err, code end
  if space.avail < need then
    return nil, ("%s: %d bytes free, unpacking %s needs %d"):format(top, space.avail, rec.path, need), "ENOSPC"
  end
  local dir = ("%s/%s.%d"):format(top, hash, require("ntt.core.util").pid())
  fs.rmtree(dir)
  ok, err, code = fs.mkdirp(dir, 448)
  if not ok then return nil, err, code end
  local back
  back, err, code = require("ntt.core.archive").extract(rec.path, dir)
  local why
  if not back then
    why = err
  elseif back.size ~= rec.size or back.blake3 ~= rec.blake3 or #back.members ~= #rec.members then
    why = ("%s: reads back as %d bytes BLAKE3 %s with %d members, recorded %d bytes %s with %d"):format(
      rec.path, back.size, back.blake3, #back.members, rec.size, rec.blake3, #rec.members)
  else
    for i, m in ipairs(rec.members) do
      local b = back.members[i]
      if b.name ~= m.name or b.size ~= m.size or b.blake3 ~= m.blake3 then
        why = ("%s: member %s is not as recorded"):format(rec.path, m.name)
        break
      end
    end
  end
  if why then
    fs.rmtree(dir)
    return nil, why, back and "EBADMSG" or code
  end
  local out = { dir = dir, archive = rec.path, image = dir .. "/" .. rec.members[1].name }
  local r = conn:exec("SELECT map_path FROM medium WHERE medium_hash = $1", hash)
  local map = r and r[1] and r[1].map_path
  for _, m in ipairs(rec.members) do
    if map and m.source_path == map then out.map = dir .. "/" .. m.name end
  end
  return out
end

function M.release(unpacked)
  for h, u in pairs(unpacked or {}) do
    if u.mounted then require("ntt.mount").unmount(h, u.image) end
    if u.dir then fs.rmtree(u.dir) end
    unpacked[h] = nil
  end
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

function M.copy(conn, st, c)
  local old = fs.stat(c.path, true)
  if old then
    local q = st:root() .. "/quarantine"
    local ok, err, code = fs.mkdirp(q, 493)
    if not ok then return nil, err, code end
    local rok, rerr = os.rename(c.path, ("%s/%s.%d.%d"):format(q, c.blob, c.n, os.time()))
    if not rok then return nil, tostring(rerr), "EIO" end
  end
  local made, err, code = require("ntt.core.tree").copy(st, c.blob, c.n)
  if made == nil then return nil, err, code end
  if not old then return 0 end
  local uses
  uses, err, code = M.uses(conn, c.blob, math.maxinteger)
  if not uses then return nil, err, code end
  local n = 0
  for _, u in ipairs(uses) do
    local root = config.path("tree", u.medium)
    for _, r in ipairs(fs.stat(root) and u.paths or {}) do
      local name = ("%s/p%d/%s"):format(root, r.fs_index, r.path)
      local s = fs.stat(name, true)
      if s and s.type == "file" and s.ino == old.ino and s.dev == old.dev then
        local tmp = name .. ".ntt-relink"
        os.remove(tmp)
        local ok
        ok, err, code = fs.link(c.path, tmp)
        if not ok then return nil, err, code end
        ok, err = os.rename(tmp, name)
        if not ok then os.remove(tmp); return nil, tostring(err), "EIO" end
        n = n + 1
      end
    end
  end
  return n
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

-- The roots to read medium u by: its image, else its archive unpacked
-- (kept in unpacked).  roots, release(), from (a word for how).
local function open_medium(conn, u, unpacked)
  if u.kind == "directory" or (u.image_path and fs.stat(u.image_path)) then
    local rs, ours, code = roots(u, u.image_path, u.map_path)
    if not rs then return nil, ours, code end
    return rs, function() unmount_if_ours(conn, u, ours, u.image_path) end, "image " .. u.medium
  end
  local set = unpacked[u.medium]
  if not set then
    local err, code
    set, err, code = M.unpack(conn, u.medium)
    -- a failure is kept too: the next bad blob of this medium does not unpack it again
    set = set or { failed = ("medium %s: its image %s is not there; %s"):format(u.medium, tostring(u.image_path), err),
                   code = code }
    unpacked[u.medium] = set
  end
  if set.failed then return nil, set.failed, set.code end
  if not set.roots then
    local rs, ours, code = roots(u, set.image, set.map)
    if not rs then
      set.failed, set.code = ("medium %s: its archive unpacked does not mount: %s"):format(u.medium, ours), code
      return nil, set.failed, code
    end
    set.roots, set.mounted = rs, ours
  end
  return set.roots, function() end, "archive " .. set.archive
end

function M.from_images(conn, st, blob, size, uses, log, unpacked)
  local mine = unpacked == nil
  unpacked = unpacked or {}
  local why = {}
  local function done(...)
    if mine then M.release(unpacked) end
    return ...
  end
  for _, u in ipairs(uses) do
    local rs, release, from = open_medium(conn, u, unpacked)
    if not rs then
      why[#why + 1] = release
    else
      for _, r in ipairs(u.paths) do
        local root = rs[r.fs_index]
        if root then
          local file = r.path == "" and root or (root .. "/" .. r.path)
          local data, rerr = read_all(file, size)
          if data and hash.sum(data) == blob and #data == size then
            local old, perr, pcode = replace(st, blob, data)
            release()
            if old == nil then return done(nil, perr, pcode) end
            local relinked = M.tree_links(st, blob, old, uses)
            local how = ("%s p%d/%s"):format(from, r.fs_index, r.path)
            if log then log:info("blob_repaired", { blob = blob, from = how, tree_relinked = relinked }) end
            return done(how)
          end
          why[#why + 1] = data and ("%s p%d/%s: holds other content now"):format(u.medium, r.fs_index, r.path)
                          or rerr
        end
      end
      release()
    end
  end
  return done(nil, #why > 0 and table.concat(why, "; ") or "no medium references it", "ENOENT")
end

return M
