-- lua/ntt/browse.lua: `ntt browse`, a read-only FUSE view of the media's
-- original trees served from the database's names and the store's blobs
-- (docs/tree.md, "Browse").
--
--   browse.media(conn [, names]) -> { medium rows } | nil, msg, code
--       names: hashes, unique prefixes or names (accounting.resolve); none:
--       every medium that has entries.
--   browse.snapshot(conn, media, file [, {store=}]) -> counts | nil, msg, code
--       writes the snapshot ntt-browse serves (format: src/browse/index.c):
--       MOUNT/<hash>/p<N>/<path, byte-exact> for directories, copied files
--       (their blob paths) and symlinks; MOUNT/<hash>/damaged.txt and
--       missing.txt listing what is not shown; MOUNT/<name> a symlink to
--       <hash> for a medium whose name is unique and can be a file name.
--       counts = { media=, dirs=, files=, links=, damaged=, missing= }
--   browse.start(mountpoint, snapshot [, {foreground=, on_mounted=}]) -> true | nil, msg, code
--       runs ntt-browse; without foreground it returns once the view is
--       mounted (the daemon goes on in the background); with foreground it
--       returns when the view is unmounted (on_mounted() is called once it
--       is up).  "EIO": the daemon failed (its message).
--   browse.stop(mountpoint) -> true | nil, msg, code
--       unmounts a view; "EINVAL" when mountpoint is not an ntt-browse view.
--   browse.mounted(mountpoint) -> true | false
--   browse.binary() -> path of ntt-browse
local db = require "ntt.db"
local pg = require "ntt.core.pg"
local fs = require "ntt.core.fs"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local S = require "ntt.states"

local M = {}

local PAGE = 20000         -- rows per query
local FSTYPE = "fuse.ntt-browse"
local RECORD = "<c1I4i8I8s4s4"   -- kind, mode, mtime_ns, size, path, data

-- Escapes a path for a one-line listing as the tree stage's damaged.txt
-- does: backslash, newline, CR and tab as \\ \n \r \t.
local ESC = { ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
local function escape(s) return (s:gsub("[\\\n\r\t]", ESC)) end

function M.binary() return require("ntt.mount").program("ntt-browse", "NTT_BROWSE") end

function M.media(conn, names)
  if names and #names > 0 then
    local out, seen = {}, {}
    for _, n in ipairs(names) do
      local m, err, code, state = require("ntt.accounting").resolve(conn, n)
      if not m then return nil, err, code, state end
      if not seen[m.medium_hash] then seen[m.medium_hash] = true; out[#out + 1] = m end
    end
    return out
  end
  local rows, err, code, state = conn:exec(
    "SELECT medium_hash, medium_human FROM medium WHERE enum_done IS NOT NULL ORDER BY medium_hash")
  if not rows then return nil, err, code, state end
  return rows
end

-- One page of medium hash's paths after (fs, path), with their inodes.
local function page(conn, it, pt, hash, fs_index, path)
  return conn:exec(([[
    SELECT p.fs_index, p.path, i.fs_type, i.state::text AS state, i.reason, i.blobid, i.size, i.mode,
           i.mtime_ns, i.link_target, p.exclude_reason,
           CASE WHEN i.state = $5 THEN coalesce(i.damage::text, '[]') END AS damage
      FROM %s p JOIN %s i ON i.medium_hash = p.medium_hash AND i.fs_index = p.fs_index AND i.ino = p.ino
     WHERE p.medium_hash = $1 AND (p.fs_index, p.path) > ($2::int, $3::bytea)
     ORDER BY p.fs_index, p.path
     LIMIT $4]]):format(pt, it), hash, fs_index, pg.bytea(path), PAGE, S.DAMAGED)
end

local function shown(fs_index, path)
  return path == "" and ("p%d"):format(fs_index) or ("p%d/%s"):format(fs_index, path)
end

-- Why a row is not in the view, or nil when it is.
local function missing_why(r)
  if r.exclude_reason then return "excluded: " .. r.exclude_reason end
  if r.fs_type == "d" then return nil end
  if r.fs_type == "l" then
    if r.link_target and r.link_target ~= "" then return nil end
    return "symlink without a target"
  end
  if r.fs_type == "f" then
    if r.state == S.COPIED and r.blobid then return nil end
    return r.state .. (r.reason and (": " .. r.reason) or "")
  end
  return ("not a file, directory or symlink (type %s)"):format(tostring(r.fs_type))
end

-- The records of one medium, written to f; counts added to c.
local function medium_records(conn, store, f, m, c, now)
  local hash = m.medium_hash
  local function put(kind, mode, mtime, size, path, data)
    f:write(RECORD:pack(kind, mode & 511, mtime or now, size or 0, path == "" and hash or (hash .. "/" .. path), data or ""))
  end
  put("d", 493, now, 0, "")   -- the medium's own directory: written first, so it exists
  local fss, err, code, state = conn:exec("SELECT fs_index FROM filesystem WHERE medium_hash = $1 ORDER BY fs_index", hash)
  if not fss then return nil, err, code, state end
  local it, pt
  it, pt, code, state = db.partitions(conn, hash)
  if it == nil then return nil, pt, code, state end
  local damaged, missing, roots = {}, {}, {}
  local after_fs, after_path = -1, ""
  while it do
    local rows
    rows, err, code, state = page(conn, it, pt, hash, after_fs, after_path)
    if not rows then return nil, err, code, state end
    for _, r in ipairs(rows) do
      local name = shown(r.fs_index, r.path)
      local why = missing_why(r)
      if r.state == S.DAMAGED and not r.exclude_reason and r.fs_type == "f" then
        damaged[#damaged + 1] = escape(name) .. "\t" .. r.damage .. "\n"
      elseif why then
        missing[#missing + 1] = escape(name) .. "\t" .. escape(why) .. "\n"
      elseif r.fs_type == "d" then
        if r.path == "" then roots[r.fs_index] = true end
        put("d", r.mode or 493, r.mtime_ns, 0, name)
        c.dirs = c.dirs + 1
      elseif r.fs_type == "l" then
        put("l", 511, r.mtime_ns, #r.link_target, name, r.link_target)
        c.links = c.links + 1
      else
        put("f", r.mode or 420, r.mtime_ns, r.size, name, store:path(r.blobid))
        c.files = c.files + 1
      end
    end
    if #rows < PAGE then break end
    after_fs, after_path = rows[#rows].fs_index, rows[#rows].path
  end
  for _, x in ipairs(fss) do   -- a filesystem with no rows still shows
    if not roots[x.fs_index] then put("d", 493, now, 0, shown(x.fs_index, "")) end
  end
  if #damaged > 0 then
    local text = table.concat(damaged)
    put("t", 292, now, #text, "damaged.txt", text)
  end
  if #missing > 0 then
    local text = table.concat(missing)
    put("t", 292, now, #text, "missing.txt", text)
  end
  c.damaged, c.missing = c.damaged + #damaged, c.missing + #missing
  return true
end

-- A name that can stand for a medium in the view's root.
local function usable_name(n)
  return type(n) == "string" and n ~= "" and n ~= "." and n ~= ".." and not n:find("[/%z]")
end

function M.snapshot(conn, media, file, opts)
  opts = opts or {}
  local store, serr, scode = require("ntt.core.store").open(opts.store or require("ntt.config").path("store"))
  if not store then return nil, serr, scode end
  local f, ferr = io.open(file, "wb")
  if not f then store:close(); return nil, ferr, "EIO" end
  f:write("NTTBRW1\n")
  local now = math.floor(util.now() * 1e9)
  local c = { media = #media, dirs = 0, files = 0, links = 0, damaged = 0, missing = 0 }
  local hashes, names = {}, {}
  for _, m in ipairs(media) do
    hashes[m.medium_hash] = true
    if usable_name(m.medium_human) then names[m.medium_human] = (names[m.medium_human] or 0) + 1 end
  end
  for _, m in ipairs(media) do
    local ok, err, code, state = medium_records(conn, store, f, m, c, now)
    if not ok then f:close(); os.remove(file); store:close(); return nil, err, code, state end
  end
  for _, m in ipairs(media) do   -- names last: a hash directory always wins
    local n = m.medium_human
    if usable_name(n) and names[n] == 1 and not hashes[n] then
      f:write(RECORD:pack("l", 511, now, #m.medium_hash, n, m.medium_hash))
    end
  end
  store:close()
  local ok, werr = f:close()
  if not ok then os.remove(file); return nil, werr, "EIO" end
  return c
end

-- The mount at mountpoint, from the mount table, or nil.
local function mount_at(mountpoint)
  local real = fs.realpath(mountpoint) or mountpoint
  local found
  for _, m in ipairs(fs.mountinfo() or {}) do
    if m.target == real then found = m end   -- the last one is on top
  end
  return found
end

function M.mounted(mountpoint)
  local m = mount_at(mountpoint)
  return m ~= nil and m.fstype == FSTYPE
end

function M.start(mountpoint, snapshot, opts)
  opts = opts or {}
  if M.mounted(mountpoint) then
    -- a view whose daemon was killed answers ENOTCONN: taken down, then mounted anew
    local _, _, code = fs.readdir(mountpoint)
    if code ~= "ENOTCONN" then return nil, mountpoint .. ": a view is already mounted there", "EBUSY" end
    local ok, err, scode = M.stop(mountpoint)
    if not ok then return nil, err, scode end
  end
  local st = fs.stat(mountpoint)
  if not st or st.type ~= "directory" then
    return nil, mountpoint .. ": not a directory", st and "ENOTDIR" or "ENOENT"
  end
  local argv = { M.binary(), snapshot, mountpoint }
  if not opts.foreground then
    local r, err, code = proc.run { argv = argv, timeout = 600 }
    if not r then return nil, err, code end
    if r.code ~= 0 then
      local why = ((r.stderr or "") .. (r.stdout or "")):gsub("%s+$", "")
      return nil, ("%s: exit %s%s"):format(argv[1], tostring(r.code or r.signal), why ~= "" and (": " .. why) or ""), "EIO"
    end
    return true
  end
  table.insert(argv, 2, "-f")
  local p, err, code = proc.spawn { argv = argv }
  if not p then return nil, err, code end
  local up = false
  local function watch()   -- until the daemon ends; on_mounted() once the view is up
    while true do
      local how, rc, ecode = p:wait(0.05)
      if not how and ecode ~= "ETIMEDOUT" then return nil, rc, ecode end
      if how then
        if how == "exit" and rc == 0 then return true end
        return nil, ("%s: %s %s"):format(argv[1], how, tostring(rc)), "EIO"
      end
      if not up and M.mounted(mountpoint) then
        up = true
        if opts.on_mounted then opts.on_mounted() end
      end
    end
  end
  local pok, res, werr, wcode = pcall(watch)
  if pok and (res or wcode ~= "EINTR") then return res, werr, wcode end
  -- ^C (SIGINT raises in Lua, or a wait came back interrupted): the view goes with us
  p:kill(15)
  if not p:wait(10) then p:kill(9); p:wait(10) end
  return nil, "interrupted", "EINTR"
end

function M.stop(mountpoint)
  local m = mount_at(mountpoint)
  if not m or m.fstype ~= FSTYPE then
    return nil, mountpoint .. ": no ntt browse view is mounted there", "EINVAL"
  end
  local argv = util.euid() == 0 and { "umount", m.target } or { "fusermount3", "-u", m.target }
  local r, err, code = proc.run { argv = argv, timeout = 60 }
  if not r then return nil, err, code end
  if r.code ~= 0 then
    return nil, ("%s: %s"):format(argv[1], ((r.stderr or "") .. (r.stdout or "")):gsub("%s+$", "")), "EBUSY"
  end
  return true
end

return M
