-- lua/ntt/export.lua: a medium's files, or one path of it, written out as
-- real files (`ntt export`, docs/operations.md).
--
--   export.parse(spec) -> name, path   "MEDIUM[:PATH]"; path "" is the whole medium
--   export.run(conn, m, path, dest [, opts]) -> summary | nil, msg, code
--       m: a medium row (accounting.resolve); path: "" (the whole medium:
--       dest/p<N>/... for each filesystem N), "p<N>" (that filesystem's
--       root is dest) or "p<N>/some/path" (that directory is dest, or that
--       file is dest).  dest must not exist or be an empty directory.
--       Regular files that were copied are written from their blobs, each
--       re-hashed (BLAKE3) on the way: a blob that no longer matches its
--       name stops that file (listed in summary.mismatched).  Names are the
--       original bytes; modes without setuid/setgid; mtimes; symlinks as
--       symlinks; each directory's mode and mtime once its content is in.
--       Files with no blob (damaged, skipped, failed, pending, excluded)
--       and entries that are neither file, directory nor symlink are not
--       written: summary.not_exported lists them with why.
--       opts.bagit: dest becomes a BagIt bag (lua/ntt/bagit.lua), the
--       payload under dest/data, names escaped by bagit.name.
--       opts.store: the store root (default <data root>/store).
--       summary = { files =, bytes =, dirs =, links =, not_exported = {},
--                   mismatched = {}, failed = {}, renamed = {}, oxum = }
--       ("ENOENT": no such path on the medium or the medium was never
--       enumerated; "EEXIST": dest is not empty; "EINTR": ^C.)
local db = require "ntt.db"
local pg = require "ntt.core.pg"
local fs = require "ntt.core.fs"
local cexport = require "ntt.core.export"
local bagit = require "ntt.bagit"

local M = {}

local BATCH = 2000    -- entries per ntt.core.export.write call
local PAGE = 20000    -- rows per query

function M.parse(spec)
  local name, path = spec:match("^([^:]+):(.*)$")
  if not name then return spec, "" end
  return name, (path:gsub("^/+", ""):gsub("/+$", ""))
end

-- One page of the rows of medium m under path (fs_index or nil for every
-- one; sub is the path inside it, "" for its root), parents before
-- children, after the row `after` (keyset paging on the partition's key:
-- a medium of millions of paths is never held whole).
local function rows(conn, m, fsi, sub, after)
  local it, pt, code, state = db.partitions(conn, m.medium_hash)
  if it == nil then return nil, pt, code, state end
  if not it then return nil, ("medium %s has no entries (not enumerated)"):format(m.medium_hash), "ENOENT" end
  return conn:exec(([[
    SELECT p.fs_index, p.path, i.fs_type, i.state::text AS state, i.reason, i.blobid, i.size, i.mode,
           i.mtime_ns, i.link_target, p.exclude_reason
      FROM %s p JOIN %s i ON i.fs_index = p.fs_index AND i.ino = p.ino
     WHERE ($1::integer IS NULL OR p.fs_index = $1)
       AND ($2::bytea = ''::bytea OR p.path = $2::bytea
            OR substring(p.path FROM 1 FOR length($2::bytea) + 1) = $2::bytea || '\x2f'::bytea)
       AND ($3::integer IS NULL OR (p.fs_index, p.path) > ($3::integer, $4::bytea))
     ORDER BY p.fs_index, p.path
     LIMIT $5]]):format(pt, it), fsi, pg.bytea(sub or ""), after and after.fs_index, pg.bytea(after and after.path or ""),
    PAGE)
end

local function filesystems(conn, m)
  return conn:exec("SELECT fs_index FROM filesystem WHERE medium_hash = $1 ORDER BY fs_index", m.medium_hash)
end

local function empty_dest(dest)
  local st = fs.stat(dest, true)
  if not st then return true end
  if st.type ~= "directory" then return nil, dest .. ": exists and is not a directory", "EEXIST" end
  local list = fs.readdir(dest)
  if list and #list > 0 then return nil, dest .. ": not empty", "EEXIST" end
  return true
end

-- Where each row goes: rel (under the payload root) for the whole medium,
-- a filesystem or a sub path.
local function placer(fsi, sub)
  if not fsi then
    return function(r) return r.path == "" and ("p%d"):format(r.fs_index) or ("p%d/%s"):format(r.fs_index, r.path) end
  end
  if sub == "" then return function(r) return r.path end end
  return function(r)
    if r.path == sub then return "" end
    return r.path:sub(#sub + 2)
  end
end

-- The payload name of rel in a bag: each component by bagit.name, and a
-- name that collides with one already given (an escaped name can equal a
-- name the medium has) gets "~N"; every path that differs from the
-- original is listed for ntt-renamed.txt.
local function bag_namer(summary)
  local used, dirmap = {}, { [""] = "" }
  return function(rel)
    if dirmap[rel] then return dirmap[rel] end   -- "" and a filesystem's root named twice
    local parent, base = rel:match("^(.*)/([^/]*)$")
    if not parent then parent, base = "", rel end
    local pdir = dirmap[parent] or parent
    local name, changed = bagit.name(base)
    local full = pdir == "" and name or (pdir .. "/" .. name)
    local n = 1
    while used[full] do   -- an escaped name may equal a name the medium has
      n = n + 1
      full = (pdir == "" and "" or (pdir .. "/")) .. name .. "~" .. n
    end
    used[full] = true
    dirmap[rel] = full
    if changed or n > 1 or pdir ~= parent then
      summary.renamed[#summary.renamed + 1] = { bag = "data/" .. full, original = rel }
    end
    return full
  end
end

function M.run(conn, m, path, dest, opts)
  opts = opts or {}
  local fsi, sub
  if path ~= "" then
    local n, rest = path:match("^p(%d+)/?(.*)$")
    if not n then
      return nil, ("'%s': a path on a medium starts with its filesystem, p<N> (e.g. p1/docs)"):format(path), "EINVAL"
    end
    fsi, sub = tonumber(n), rest
  end
  local ok, err, code = empty_dest(dest)
  if not ok then return nil, err, code end
  local list, state
  list, err, code, state = rows(conn, m, fsi, sub)
  if not list then return nil, err, code, state end
  local single_file = sub and sub ~= "" and #list == 1 and list[1].path == sub and list[1].fs_type ~= "d"
  if sub and sub ~= "" and #list == 0 then
    return nil, ("p%d/%s: no such path on medium %s"):format(fsi, sub, m.medium_hash), "ENOENT"
  end
  local summary = { files = 0, bytes = 0, dirs = 0, links = 0, not_exported = {}, mismatched = {},
                    failed = {}, renamed = {}, manifest = {} }
  local root = opts.bagit and (dest .. "/data") or dest
  local place = placer(fsi, sub or "")
  if single_file then   -- dest is the file itself (in a bag: data/<its name>)
    local d, b = dest:match("^(.*)/([^/]+)$")
    local base = opts.bagit and sub:match("([^/]*)$") or (b or dest)
    if not opts.bagit then root = d or "." end
    place = function() return base end
  end
  ok, err, code = fs.mkdirp(root, 493)
  if not ok then return nil, err, code end
  local store, serr, scode = require("ntt.core.store").open(opts.store or require("ntt.config").path("store"))
  if not store then return nil, serr, scode end
  local bagname = opts.bagit and bag_namer(summary) or function(rel) return rel end
  local entries, dirs, origin = {}, {}, {}
  if not fsi then   -- the whole medium: one directory per filesystem
    local fss
    fss, err, code, state = filesystems(conn, m)
    if not fss then store:close(); return nil, err, code, state end
    local seen = {}
    for _, r in ipairs(list) do seen[r.fs_index] = true end
    for _, f in ipairs(fss) do seen[f.fs_index] = true end
    local idx = {}
    for k in pairs(seen) do idx[#idx + 1] = k end
    table.sort(idx)
    for _, k in ipairs(idx) do
      local rel = bagname(("p%d"):format(k))
      entries[#entries + 1] = { path = rel, type = "d" }
      origin[#entries] = { path = ("p%d"):format(k) }
      dirs[#dirs + 1] = { path = rel, mode = 493, mtime_ns = nil }
    end
  end
  local function flush()
    if #entries == 0 then return true end
    local res, ferr, fcode = cexport.write(root, entries, { sha256 = opts.bagit and true or false })
    if not res then return nil, ferr, fcode end
    for i, r in ipairs(res) do
      local e, o = entries[i], origin[i]
      if type(r) == "table" and r.err then
        local list_ = r.err == "EBADMSG" and summary.mismatched or summary.failed
        list_[#list_ + 1] = { path = o.path, blob = e.blake3, err = r.err, msg = r.msg }
      elseif e.type == "f" then
        summary.files, summary.bytes = summary.files + 1, summary.bytes + r.size
        if opts.bagit then summary.manifest[#summary.manifest + 1] = { path = "data/" .. e.path, sha256 = r.sha256 } end
      elseif e.type == "l" then
        summary.links = summary.links + 1
      elseif e.path ~= "" then
        summary.dirs = summary.dirs + 1
      end
    end
    entries, origin = {}, {}
    return true
  end
  local function shown_of(r) return ("p%d/%s"):format(r.fs_index, r.path) end
  -- one row: a directory, symlink or file entry, or a line of not_exported
  local function take(r)
    local rel = bagname(place(r))
    local e
    if r.fs_type == "d" then
      e = { path = rel, type = "d" }
      dirs[#dirs + 1] = { path = rel, mode = r.mode or 493, mtime_ns = r.mtime_ns }
    elseif r.fs_type == "l" and r.link_target then
      e = { path = rel, type = "l", target = r.link_target, mtime_ns = r.mtime_ns }
    elseif r.fs_type == "f" and r.state == "copied" and r.blobid then
      e = { path = rel, type = "f", src = store:path(r.blobid), blake3 = r.blobid, size = r.size,
            mode = r.mode, mtime_ns = r.mtime_ns }
    else
      local why = r.fs_type == "f" and (r.state .. (r.reason and (": " .. r.reason) or ""))
                  or ("not a file, directory or symlink (type %s)"):format(tostring(r.fs_type))
      summary.not_exported[#summary.not_exported + 1] = { path = shown_of(r), why = why }
      return true
    end
    entries[#entries + 1] = e
    origin[#entries] = { path = shown_of(r) }
    if #entries >= BATCH then return flush() end
    return true
  end
  local page = list
  while true do
    for _, r in ipairs(page) do
      ok, err, code = take(r)
      if not ok then store:close(); return nil, err, code end
    end
    if #page < PAGE then break end
    page, err, code, state = rows(conn, m, fsi, sub, page[#page])
    if not page then store:close(); return nil, err, code, state end
  end
  ok, err, code = flush()
  store:close()
  if not ok then return nil, err, code end
  -- deepest first: a directory's mtime is set after everything inside it
  local finish, done = {}, {}
  for i = #dirs, 1, -1 do
    local d = dirs[i]
    if not done[d.path] and (d.mtime_ns or d.path ~= "") then
      done[d.path] = true
      finish[#finish + 1] = { path = d.path, mode = d.mode, mtime_ns = d.mtime_ns or (os.time() * 1000000000) }
    end
  end
  ok, err, code = cexport.finish(root, finish)
  if not ok then return nil, err, code end
  if opts.bagit then
    local lost = {}
    for _, l in ipairs(summary.not_exported) do lost[#lost + 1] = l end
    for _, l in ipairs(summary.mismatched) do lost[#lost + 1] = { path = l.path, why = "blob does not match: " .. l.msg } end
    for _, l in ipairs(summary.failed) do lost[#lost + 1] = { path = l.path, why = l.err .. ": " .. l.msg } end
    local oxum
    oxum, err, code = bagit.write_tags(dest, {
      files = summary.manifest, bytes = summary.bytes, hash = m.medium_hash,
      description = ("medium %s%s"):format(m.medium_human or m.medium_hash, path ~= "" and (", " .. path) or ""),
      renamed = summary.renamed, not_exported = lost })
    if not oxum then return nil, err, code end
    summary.oxum = oxum
  end
  summary.manifest = nil
  return summary
end

return M
