-- lua/ntt/archive.lua: a medium's image set as one verified tar.zst.
--
-- The image set of a medium (M.image_set, docs/operations.md) is named by
-- one rule from the medium's image_path and map_path, the same rule that
-- tells an image's ddrescue files in a folder of targets: the image; its
-- map (the recorded map_path, else the map identify would find beside the
-- image), the map's ".bak" and ".stall"; "<image name>-ddrescue.log" and
-- "<image stem>-ddrescue.log" beside the image.  Only those that exist as
-- regular files (never through a symlink) are members, under their own
-- names.
--
-- The steps, each usable alone (the specs drive them one by one):
--   archive.image_set(m)             -> { { src =, name = }, ... } | nil, msg, code
--   archive.write(m [, opts])        -> w | nil, msg, code
--       packs the set into <data root>/archive/<hash>.tar.zst.tmp.<host>:<pid>:<boot>:<start>
--       (temps of this medium that killed processes of this host left are
--       removed first: archive.sweep(dir, hash))
--       (opts: threads =, level = for zstd, root = the data root, default
--       config.home()); w = { tmp =, path = (final), medium = m,
--       members = image set, written = ntt.core.archive.write's result }.
--   archive.verify(w)                -> true | nil, msg, code
--       reads w.tmp back (w.back: every member's BLAKE3 and the file's):
--       its size as written, and every member's BLAKE3 and size equal to
--       what its source holds now: the BLAKE3 of the bytes write read from
--       it, when the source is still the same file with the same size,
--       mtime and ctime as when write opened it and was last changed more
--       than M.RACY_NS before the write began; else the source hashed
--       again.  A
--       difference, or a zstd frame or tar header that does not check,
--       fails "EBADMSG"; the image must still hold this medium (its BLAKE3
--       is the medium hash): one rewritten in place by a later rescue
--       fails "ESTALE".  On failure the temp is removed.
--   archive.commit(conn, m, w [, level]) -> record | nil, msg, code
--       (w verified) renames the temp to its final name, then records the
--       archive and its members with the BLAKE3 read back (tables archive,
--       archive_member) and medium.archived_at.
--   archive.record(conn, hash)       -> record (with .members) | false | nil, msg, code
--   archive.remove_sources(conn, m)  -> removed (list of paths) | nil, msg, code
--       only for a recorded, verified archive; never while the medium is
--       mounted or has a loop device ("EBUSY", asked of ntt-mount-helper
--       status); a source that is no longer the size it was archived at is
--       kept ("ESTALE").
--   archive.run(conn, m, settings, log) -> true | nil, msg, code
--       the stage: write, verify, commit, then remove the sources when
--       settings.remove_sources.  A medium already archived (record and
--       file of the recorded size present) is not written again.
local config = require "ntt.config"
local fs = require "ntt.core.fs"
local util = require "ntt.core.util"
local car = require "ntt.core.archive"

local M = {}

-- A source last changed less than this before the write began is hashed
-- again by verify (a change within one tick of the filesystem's clock
-- leaves its times as they were).
M.RACY_NS = 2 * 1000000000

local function basename(p) return (p:match("([^/]*)$")) end
local function dirname(p) return p:match("^(.*)/[^/]*$") or "." end

local function regular(p)
  local st = fs.stat(p, true)
  return st and st.type == "file"
end

function M.image_set(m)
  if not m.image_path then return nil, ("medium %s has no image file"):format(m.medium_hash), "ENOENT" end
  local img = m.image_path
  if not regular(img) then
    return nil, ("%s: the image of medium %s is not there as a regular file"):format(img, m.medium_hash), "ENOENT"
  end
  local dir, name = dirname(img), basename(img)
  local stem = name:match("^(.+)%.[^.]*$")
  local map = m.map_path or require("ntt.media").find_map(img)
  local cands = { img }
  if map and map ~= img then
    cands[#cands + 1] = map
    cands[#cands + 1] = map .. ".bak"
    cands[#cands + 1] = map .. ".stall"
  end
  cands[#cands + 1] = dir .. "/" .. name .. "-ddrescue.log"
  if stem then cands[#cands + 1] = dir .. "/" .. stem .. "-ddrescue.log" end
  local out, names = {}, {}
  for _, c in ipairs(cands) do
    local n = basename(c)
    if not names[n] and regular(c) then
      names[n] = true
      out[#out + 1] = { src = c, name = n }
    end
  end
  return out
end

-- Does the image member still hold medium m?  The medium hash of an image
-- is the first 16 bytes of its BLAKE3 (an image named by its hash is taken
-- as it is named).
local function holds(m, member)
  local h, name = m.medium_hash, basename(m.image_path)
  if (name:match("^(.+)%.[^.]*$") or name) == h then return true end
  return member.blake3:sub(1, #h) == h
end

-- The temps of hash's archive in dir that a process of this host left
-- when it was killed (<final>.tmp.<host>:<pid>:<boot>:<start>, or the older
-- <final>.tmp.<pid>): removed, lest a killed run's half archive -- as large
-- as the image -- stay for good.  A live process's temp, or another host's
-- (a data root seen by several), stays.  -> the names removed
function M.sweep(dir, hash)
  local liveness = require "ntt.liveness"
  local prefix = hash .. ".tar.zst.tmp."
  local gone = {}
  for _, name in ipairs(fs.readdir(dir) or {}) do
    if name:sub(1, #prefix) == prefix then
      local rest = name:sub(#prefix + 1)
      local host, pid, boot, start = rest:match("^(.*):(%d+):(%x*):(%d*)$")
      if not host then host, pid = util.hostname() or "host", rest:match("^(%d+)$") end
      if pid and liveness.dead { host = host, pid = tonumber(pid), boot = boot, start = tonumber(start or "") } then
        if os.remove(dir .. "/" .. name) then gone[#gone + 1] = name end
      end
    end
  end
  return gone
end

function M.write(m, opts)
  opts = opts or {}
  local set, err, code = M.image_set(m)
  if not set then return nil, err, code end
  local dir = opts.root and (opts.root .. "/archive") or config.path("archive")
  local ok
  ok, err, code = fs.mkdirp(dir, 493)   -- 0755
  if not ok then return nil, err, code end
  local final = ("%s/%s.tar.zst"):format(dir, m.medium_hash)
  M.sweep(dir, m.medium_hash)
  local me = require("ntt.liveness").me()
  local tmp = ("%s.tmp.%s:%d:%s:%s"):format(final, me.host, me.pid, me.boot:sub(1, 8), tostring(me.start or ""))
  os.remove(tmp)
  local threads = opts.threads
  if threads == nil then threads = require("ntt").cores() end
  local res
  res, err, code = car.write(tmp, set, { threads = threads, level = opts.level or 3 })
  if not res then return nil, "archive: " .. err, code end
  return { tmp = tmp, path = final, members = set, written = res, medium = m }
end

function M.verify(w)
  local function bad(msg, c)
    os.remove(w.tmp)
    return nil, "archive: " .. msg, c or "EBADMSG"
  end
  local back, err, code = car.read(w.tmp)
  if not back then return bad(err, code) end
  local wr = w.written
  if back.size ~= wr.size then
    return bad(("%s: read back as %d bytes, written as %d"):format(w.tmp, back.size, wr.size))
  end
  if #back.members ~= #w.members then
    return bad(("%s: %d members read back, %d written"):format(w.tmp, #back.members, #w.members))
  end
  if w.medium and not holds(w.medium, back.members[1]) then
    return bad(("%s no longer holds medium %s (rewritten by a later rescue?): not archived")
               :format(w.medium.image_path, w.medium.medium_hash), "ESTALE")
  end
  local hash = require "ntt.core.hash"
  for i, src in ipairs(w.members) do
    local got, put = back.members[i], wr.members[i]
    if got.name ~= src.name then
      return bad(("%s: member %d is '%s', want '%s'"):format(w.tmp, i, got.name, src.name))
    end
    -- The source as it was read (hashed then) unless it may have changed
    -- since: another file, size or time now, or last changed too close to
    -- the read for its times to tell (then it is hashed again).
    local hex, size = put.blake3, put.size
    local now = fs.stat(src.src, true)
    if not (now and now.type == "file" and now.size == put.size and now.mtime_ns == put.mtime_ns
            and now.ctime_ns == put.ctime_ns and now.ino == put.ino and now.dev == put.dev)
       or put.ctime_ns >= wr.started_ns - M.RACY_NS then
      local hcode
      hex, size, hcode = hash.file(src.src)
      if not hex then return bad(size, hcode) end
    end
    if got.blake3 ~= hex or got.size ~= size or put.size ~= size or put.blake3 ~= got.blake3 then
      return bad(("%s: member %s does not match its source %s (archive %d bytes %s, source %d bytes %s)")
                 :format(w.tmp, got.name, src.src, got.size, got.blake3, size, hex))
    end
  end
  w.back = back
  return true
end

function M.commit(conn, m, w, level)
  local ok, err = os.rename(w.tmp, w.path)
  if not ok then
    os.remove(w.tmp)
    return nil, "archive: " .. tostring(err), "EIO"
  end
  local wr = w.back
  if not wr then error("archive.commit: the archive was not verified", 2) end
  local r, code
  r, err, code = require("ntt.db").tx(conn, function()
    local q, e, c = conn:exec([[
      INSERT INTO archive (medium_hash, path, size, blake3, zstd_level, verified_at)
      VALUES ($1, $2, $3, $4, $5, now())
      ON CONFLICT (medium_hash) DO UPDATE
         SET path = EXCLUDED.path, size = EXCLUDED.size, blake3 = EXCLUDED.blake3,
             zstd_level = EXCLUDED.zstd_level, created_at = now(), verified_at = now(),
             sources_removed_at = NULL]],
      m.medium_hash, w.path, wr.size, wr.blake3, level or 3)
    if not q then return nil, e, c end
    q, e, c = conn:exec("DELETE FROM archive_member WHERE medium_hash = $1", m.medium_hash)
    if not q then return nil, e, c end
    for i, mem in ipairs(wr.members) do
      q, e, c = conn:exec([[INSERT INTO archive_member (medium_hash, seq, name, source_path, size, blake3)
                             VALUES ($1, $2, $3, $4, $5, $6)]],
                          m.medium_hash, i, mem.name, w.members[i].src, mem.size, mem.blake3)
      if not q then return nil, e, c end
    end
    return conn:exec("UPDATE medium SET archived_at = now() WHERE medium_hash = $1", m.medium_hash)
  end)
  if not r then return nil, err, code end
  return M.record(conn, m.medium_hash)
end

function M.record(conn, hash)
  local r, err, code, state = conn:exec([[
    SELECT medium_hash, path, size, blake3, zstd_level, created_at::text, verified_at::text,
           sources_removed_at::text FROM archive WHERE medium_hash = $1]], hash)
  if not r then return nil, err, code, state end
  if #r == 0 then return false end
  local rec = r[1]
  r, err, code, state = conn:exec([[SELECT seq, name, source_path, size, blake3 FROM archive_member
                                     WHERE medium_hash = $1 ORDER BY seq]], hash)
  if not r then return nil, err, code, state end
  rec.members = r
  return rec
end

-- Is anything of medium m mounted or attached?  Asked of the helper (the
-- one that mounts), and of the mount table for its mount points.
local function in_use(m)
  local st, err, code = require("ntt.mount").status(m.medium_hash, m.image_path)
  if not st then return nil, err, code end
  if (st.state and st.state ~= "unmounted") or #(st.loops or {}) > 0 then
    return true, ("medium %s is %s (%d loop devices)"):format(m.medium_hash, st.state or "attached", #(st.loops or {}))
  end
  for _, mi in ipairs(fs.mountinfo() or {}) do
    if mi.target:find("/" .. m.medium_hash .. "/", 1, true) or mi.target:sub(-#m.medium_hash - 1) == "/" .. m.medium_hash then
      return true, ("medium %s is mounted at %s"):format(m.medium_hash, mi.target)
    end
  end
  return false
end

function M.remove_sources(conn, m)
  local rec, err, code = M.record(conn, m.medium_hash)
  if rec == nil then return nil, err, code end
  if not rec or not rec.verified_at then
    return nil, ("medium %s has no verified archive: its sources are kept"):format(m.medium_hash), "ENOENT"
  end
  local st = fs.stat(rec.path)
  if not st or st.size ~= rec.size then
    return nil, ("%s: the archive is missing or not its recorded size: sources kept"):format(rec.path), "ENOENT"
  end
  local busy, why, bcode = in_use(m)
  if busy == nil then return nil, why, bcode end
  if busy then return nil, why .. ": sources kept", "EBUSY" end
  for _, mem in ipairs(rec.members) do
    local s = fs.stat(mem.source_path, true)
    if s and (s.type ~= "file" or s.size ~= mem.size) then
      return nil, ("%s: changed since it was archived: sources kept"):format(mem.source_path), "ESTALE"
    end
  end
  local removed = {}
  for _, mem in ipairs(rec.members) do
    if fs.stat(mem.source_path, true) then
      local ok, rerr = os.remove(mem.source_path)
      if not ok then return nil, tostring(rerr), "EIO" end
      removed[#removed + 1] = mem.source_path
    end
  end
  local r
  r, err, code = conn:exec("UPDATE archive SET sources_removed_at = now() WHERE medium_hash = $1", m.medium_hash)
  if not r then return nil, err, code end
  return removed
end

function M.run(conn, m, settings, log)
  settings = settings or {}
  local rec, err, code = M.record(conn, m.medium_hash)
  if rec == nil then return nil, err, code end
  local st = rec and fs.stat(rec.path)
  if not (rec and st and st.size == rec.size) then
    log:info("archiving", { medium = m.medium_hash, image = m.image_path })
    local w
    w, err, code = M.write(m, { threads = settings.threads, level = settings.level })
    if not w then return nil, err, code end
    local ok
    ok, err, code = M.verify(w)
    if not ok then return nil, err, code end
    rec, err, code = M.commit(conn, m, w, settings.level)
    if not rec then return nil, err, code end
    log:info("archived", { medium = m.medium_hash, path = rec.path, size = rec.size, members = #rec.members })
  end
  if settings.remove_sources and not rec.sources_removed_at then
    local removed
    removed, err, code = M.remove_sources(conn, m)
    if not removed then return nil, err, code end
    log:info("archive_sources_removed", { medium = m.medium_hash, removed = removed })
  end
  return true
end

return M
