-- lua/ntt/console.lua: the operator's helpers -- plain functions over a
-- database connection, so `ntt repl` offline (and a console attached to a
-- run) offer the same names, and `ntt find`, `ntt blob`, `ntt problems`
-- answer with the same queries.  A medium `h` is a hash, a unique hash
-- prefix or a name (ntt.accounting.resolve).  Expected failures return
-- nil, msg, code (docs/errors.md).
--
--   media(conn)               -> { {hash=, name=, kind=, health=, stages=, files={state=n}} }
--   medium(conn, h)           -> one medium: stages (stage -> time), files by state, problem keys
--   problems(conn [, h])      -> { {medium=, name=, problem=, detail=} } what medium.problems holds
--   failing(conn, h [, limit])-> { {path=, fs_index=, ino=, state=, reason=, attempts=, errors=,
--                                   findings=, action=} } files with attempts, not copied
--   kernel(conn, h)           -> { {fs_index=, ino=, path=, at=, findings=, lines=} } the kernel
--                                lines recorded with the medium's diagnostic events
--   find(conn, pattern [, {medium=, regex=}]) -> { {medium=, name=, fs_index=, path=, state=, blob=, size=} }
--   blob(conn, hash)          -> { blob=, size=, known=, store_path=, exists=, stored_size=,
--                                  holders = { {medium=, name=, fs_index=, path=, state=} } }
--   retry(conn, h, path [, {policy=}]) -> { state=, blob=, size=, path= } | nil, msg, code
--   remount(conn, h)          -> roots | nil, msg, code
--   explain(policy, findings) -> which diagnose rule decides, and its action
--   shown(bytes)              -> a path for a terminal (control bytes as \xNN, as `ntt status`)
--   HELP                      -> { {name, text} } what help() lists
local accounting = require "ntt.accounting"
local db = require "ntt.db"
local json = require "ntt.json"
local pg = require "ntt.core.pg"
local S = require "ntt.states"

local M = {}

M.STAGES = { { "identified_at", "identify" }, { "inspected_at", "inspect" }, { "mounted_at", "mount" },
             { "enum_done", "enumerate" }, { "copy_done", "copy" }, { "verified_at", "verify" },
             { "archived_at", "archive" } }

M.HELP = {
  { "help()", "this list" },
  { "media()", "every medium: hash, name, kind, health, stages done, files by state" },
  { "medium(h)", "one medium: its stages with their times, files by state, problems" },
  { "problems(h)", "the problems recorded on medium h (every medium without h)" },
  { "failing(h [, limit])", "files not copied after attempts: state, reason, attempts, last errors, findings" },
  { "kernel(h)", "kernel lines recorded with the medium's diagnostic events" },
  { "find(pattern [, {regex=true, medium=h}])", "original paths matching a glob (or regex): medium, path, state, blob" },
  { "blob(hash)", "every medium and path holding a blob, and where it is in the store" },
  { "retry(h, path)", "reset one file and copy it now (mounts the medium if needed, unmounts what it mounted)" },
  { "remount(h)", "unmount and mount medium h again; returns its roots" },
  { "explain(findings)", "which diagnose rule of the policy decides on findings, and its action" },
}

-- A path or name for a terminal: control bytes shown as \xNN.
function M.shown(s)
  return (tostring(s):gsub("[%c\127]", function(c) return ("\\x%02x"):format(c:byte()) end))
end

local function resolve(conn, h)
  if type(h) ~= "string" or h == "" then return nil, "name a medium (hash, hash prefix or name)", "EINVAL" end
  return accounting.resolve(conn, h)
end

-- The medium's two partitions, quoted, or nil when it has none yet.
local function parts(conn, hash)
  local it, pt = db.partition_names(hash)
  local r, err, code, st = conn:exec("SELECT to_regclass($1) IS NOT NULL AS i, to_regclass($2) IS NOT NULL AS p", it, pt)
  if not r then return nil, err, code, st end
  if not (r[1].i and r[1].p) then return false end
  return conn:escape_identifier(it), conn:escape_identifier(pt)
end

local function state_counts(conn)
  local r, err, code, st = conn:exec("SELECT medium_hash, state::text AS state, count(*) AS n FROM inode GROUP BY 1, 2")
  if not r then return nil, err, code, st end
  local out = {}
  for _, row in ipairs(r) do
    out[row.medium_hash] = out[row.medium_hash] or {}
    out[row.medium_hash][row.state] = row.n
  end
  return out
end

local function stages_of(m)
  local done = {}
  for _, s in ipairs(M.STAGES) do if m[s[1]] then done[#done + 1] = s[2] end end
  return done
end

function M.media(conn)
  local r, err, code, st = conn:exec([[
    SELECT medium_hash, medium_human, kind, health, rescued_pct, identified_at::text, inspected_at::text,
           mounted_at::text, enum_done::text, copy_done::text, verified_at::text, archived_at::text
      FROM medium ORDER BY added_at, medium_hash]])
  if not r then return nil, err, code, st end
  local counts, cerr, ccode, cst = state_counts(conn)
  if not counts then return nil, cerr, ccode, cst end
  local out = json.array {}
  for i, m in ipairs(r) do
    out[i] = { hash = m.medium_hash, name = m.medium_human, kind = m.kind, health = m.health,
               rescued_pct = m.rescued_pct, stages = table.concat(stages_of(m), ","),
               files = counts[m.medium_hash] or {} }
  end
  return out
end

function M.medium(conn, h)
  local m, err, code, st = resolve(conn, h)
  if not m then return nil, err, code, st end
  local stages = {}
  for _, s in ipairs(M.STAGES) do stages[s[2]] = m[s[1]] or false end
  local files = {}
  local it = parts(conn, m.medium_hash)
  if it then
    local r, qerr, qcode, qst = conn:exec(("SELECT state::text AS state, count(*) AS n FROM %s GROUP BY 1"):format(it))
    if not r then return nil, qerr, qcode, qst end
    for _, row in ipairs(r) do files[row.state] = row.n end
  end
  local keys, p = {}, json.decode(m.problems or "{}") or {}
  for k in pairs(p) do keys[#keys + 1] = k end
  table.sort(keys)
  return { hash = m.medium_hash, name = m.medium_human, kind = m.kind, image = m.image_path, map = m.map_path,
           size = m.size, health = m.health, rescued_pct = m.rescued_pct, stages = stages, files = files,
           problems = json.array(keys), events = type(p.diagnostic_events) == "table" and #p.diagnostic_events or 0 }
end

-- medium.problems of one medium (or all), one entry per key; the
-- diagnostic events are counted, not listed (failing() and kernel() show them).
function M.problems(conn, h)
  local sql, args = "SELECT medium_hash, medium_human, problems::text AS p FROM medium", {}
  if h ~= nil then
    local m, err, code, st = resolve(conn, h)
    if not m then return nil, err, code, st end
    sql, args = sql .. " WHERE medium_hash = $1", { m.medium_hash }
  end
  local r, err, code, st = conn:exec(sql .. " ORDER BY added_at, medium_hash", table.unpack(args))
  if not r then return nil, err, code, st end
  local out = json.array {}
  for _, m in ipairs(r) do
    local p = json.decode(m.p or "{}") or {}
    local keys = {}
    for k in pairs(p) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local v = p[k]
      if k == "diagnostic_events" and type(v) == "table" then v = { count = #v } end
      out[#out + 1] = { medium = m.medium_hash, name = m.medium_human, problem = k, detail = v }
    end
  end
  return out
end

-- The medium's diagnostic events, by "fs_index:ino" (the last one wins).
local function events_of(conn, hash)
  local r, err, code, st = conn:exec(
    "SELECT coalesce(problems->'diagnostic_events', '[]'::jsonb)::text AS e FROM medium WHERE medium_hash = $1", hash)
  if not r then return nil, err, code, st end
  local list = json.decode(r[1] and r[1].e or "[]") or {}
  return type(list) == "table" and list or {}
end

function M.failing(conn, h, limit)
  local m, err, code, st = resolve(conn, h)
  if not m then return nil, err, code, st end
  local it, pt = parts(conn, m.medium_hash)
  if not it then return json.array {} end
  local r, qerr, qcode, qst = conn:exec(([[
    SELECT i.fs_index, i.ino, i.state::text AS state, i.reason, i.attempts, i.errors::text AS errors,
           (SELECT p.path FROM %s p WHERE p.medium_hash = $1 AND p.fs_index = i.fs_index AND p.ino = i.ino
             ORDER BY p.path LIMIT 1) AS path
      FROM %s i
     WHERE i.medium_hash = $1 AND i.state NOT IN ('%s', '%s', '%s')
       AND (i.attempts > 0 OR i.state <> '%s' OR jsonb_array_length(coalesce(i.errors, '[]'::jsonb)) > 0)
     ORDER BY i.fs_index, i.ino LIMIT $2]]):format(pt, it, S.COPIED, S.EXCLUDED, S.NON_FILE, S.PENDING),
    m.medium_hash, math.tointeger(limit) or 1000)
  if not r then return nil, qerr, qcode, qst end
  local events = events_of(conn, m.medium_hash)
  local last = {}
  for _, e in ipairs(events) do
    if type(e) == "table" and e.ino then last[(e.fs_index or 0) .. ":" .. e.ino] = e end
  end
  local out = json.array {}
  for i, row in ipairs(r) do
    local errs = json.decode(row.errors or "[]") or {}
    local recent = json.array {}
    for k = math.max(1, #errs - 2), #errs do
      local e = errs[k]
      if type(e) == "table" then recent[#recent + 1] = ("%s %s"):format(tostring(e.err), tostring(e.msg or "")) end
    end
    local ev = last[row.fs_index .. ":" .. row.ino]
    out[i] = { path = row.path, fs_index = row.fs_index, ino = row.ino, state = row.state, reason = row.reason,
               attempts = row.attempts, errors = recent,
               findings = json.array(ev and type(ev.checks) == "table" and ev.checks or {}), action = ev and ev.action }
  end
  return out
end

function M.kernel(conn, h)
  local m, err, code, st = resolve(conn, h)
  if not m then return nil, err, code, st end
  local out, want = json.array {}, {}
  for _, e in ipairs(events_of(conn, m.medium_hash)) do
    local dmesg = {}
    for _, c in ipairs(type(e) == "table" and type(e.checks) == "table" and e.checks or {}) do
      if tostring(c):find("^dmesg:") then dmesg[#dmesg + 1] = c end
    end
    if type(e) == "table" and (#dmesg > 0 or type(e.kernel) == "table") then
      out[#out + 1] = { fs_index = e.fs_index, ino = e.ino, at = e.timestamp, findings = json.array(dmesg),
                        lines = json.array(type(e.kernel) == "table" and e.kernel or {}) }
      want[#want + 1] = out[#out]
    end
  end
  local _, pt = parts(conn, m.medium_hash)
  if pt and #want > 0 then
    for _, e in ipairs(want) do
      local r = conn:exec(("SELECT path FROM %s WHERE medium_hash = $1 AND fs_index = $2 AND ino = $3 ORDER BY path LIMIT 1")
                          :format(pt), m.medium_hash, e.fs_index or 0, e.ino)
      e.path = r and r[1] and r[1].path
    end
  end
  return out
end

-- A glob as a LIKE pattern on bytes: * any bytes (/ too), ? one byte.
local function like_of(glob)
  return (glob:gsub("[%%_\\*?]", { ["%"] = "\\%", ["_"] = "\\_", ["\\"] = "\\\\", ["*"] = "%", ["?"] = "_" }))
end

-- The media a lookup reads: one named, or every medium with its partitions.
local function lookup_media(conn, h)
  if h then
    local m, err, code, st = resolve(conn, h)
    if not m then return nil, err, code, st end
    return { m }
  end
  return conn:exec("SELECT medium_hash, medium_human FROM medium ORDER BY added_at, medium_hash")
end

-- Original paths matching pattern on every medium (or opts.medium): a glob
-- by LIKE on the path bytes in SQL, or a POSIX extended regex (opts.regex)
-- run over the partition's paths through a cursor, 20,000 at a time.  A
-- glob without "/" matches the last name of a path, with "/" the whole path
-- (relative to its filesystem's root, no leading "/").
function M.find(conn, pattern, opts)
  if type(pattern) ~= "string" or pattern == "" then return nil, "find: a pattern is needed", "EINVAL" end
  opts = opts or {}
  local rx
  if opts.regex then
    local err, code
    rx, err, code = require("ntt.core.util").regex(pattern)
    if not rx then return nil, err, code end
  end
  local list, err, code, st = lookup_media(conn, opts.medium)
  if not list then return nil, err, code, st end
  local out = json.array {}
  for _, m in ipairs(list) do
    local it, pt = parts(conn, m.medium_hash)
    if it then
      local sel = ([[SELECT p.fs_index, p.path, i.state::text AS state, i.blobid, i.size
                       FROM %s p JOIN %s i ON i.medium_hash = p.medium_hash AND i.fs_index = p.fs_index AND i.ino = p.ino
                      WHERE p.medium_hash = $1]]):format(pt, it)
      local function add(r)
        out[#out + 1] = { medium = m.medium_hash, name = m.medium_human, fs_index = r.fs_index, path = r.path,
                          state = r.state, blob = r.blobid, size = r.size }
      end
      if rx then
        local ok, ferr, fcode, fst = db.tx(conn, function()
          local c, cerr, ccode, cst = conn:exec("DECLARE ntt_find NO SCROLL CURSOR FOR " .. sel ..
                                                " ORDER BY p.fs_index, p.path", m.medium_hash)
          if not c then return nil, cerr, ccode, cst end
          repeat
            local r, rerr, rcode, rst = conn:exec("FETCH 20000 FROM ntt_find")
            if not r then return nil, rerr, rcode, rst end
            for _, row in ipairs(r) do if rx:match(row.path) then add(row) end end
          until #r == 0
          return true
        end)
        if not ok then rx:close(); return nil, ferr, fcode, fst end
      else
        local like = like_of(pattern)
        local whole = pattern:find("/", 1, true)
        local cond = whole and "p.path LIKE $2" or "(p.path LIKE $2 OR p.path LIKE $3)"
        local args = { m.medium_hash, pg.bytea(like) }
        if not whole then args[3] = pg.bytea("%/" .. like) end
        local r, qerr, qcode, qst = conn:exec(sel .. " AND " .. cond .. " ORDER BY p.fs_index, p.path", table.unpack(args))
        if not r then return nil, qerr, qcode, qst end
        for _, row in ipairs(r) do add(row) end
      end
    end
  end
  if rx then rx:close() end
  return out
end

-- Who holds a blob (every medium and path whose inode names it) and where
-- it is in the store (config.path("store")), its size there and whether
-- the file exists.
function M.blob(conn, hash)
  if type(hash) ~= "string" or not hash:match("^[0-9a-f]+$") or #hash ~= 64 then
    return nil, "blob: a blob is 64 lowercase hex digits (BLAKE3)", "EINVAL"
  end
  local b, err, code, st = conn:exec("SELECT size FROM blob WHERE blobid = $1", hash)
  if not b then return nil, err, code, st end
  local config, fs = require "ntt.config", require "ntt.core.fs"
  local path = config.path("store", "by-hash", hash:sub(1, 2), hash:sub(3, 4), hash)
  local sf = fs.stat(path)
  local out = { blob = hash, known = b[1] ~= nil, size = b[1] and b[1].size, store_path = path,
                exists = sf ~= nil and sf.type == "file", stored_size = sf and sf.size, holders = json.array {} }
  local list, lerr, lcode, lst = lookup_media(conn)
  if not list then return nil, lerr, lcode, lst end
  for _, m in ipairs(list) do
    local it, pt = parts(conn, m.medium_hash)
    if it then
      -- the parent's (blobid) index finds the inodes; each one's paths by key
      local r, qerr, qcode, qst = conn:exec(([[
        SELECT p.fs_index, p.path, i.state::text AS state
          FROM %s i JOIN %s p ON p.medium_hash = i.medium_hash AND p.fs_index = i.fs_index AND p.ino = i.ino
         WHERE i.medium_hash = $1 AND i.blobid = $2 ORDER BY p.fs_index, p.path]]):format(it, pt), m.medium_hash, hash)
      if not r then return nil, qerr, qcode, qst end
      for _, row in ipairs(r) do
        out.holders[#out.holders + 1] = { medium = m.medium_hash, name = m.medium_human, fs_index = row.fs_index,
                                          path = row.path, state = row.state }
      end
    end
  end
  return out
end

-- The roots of a medium: a directory medium is its own root; an image is
-- mounted through the helper unless it is mounted already.  Returns the
-- roots and whether this call mounted it.
local function roots_of(m, again)
  if m.kind == "directory" then return { { fs_index = 0, root = m.image_path } }, false end
  local mount = require "ntt.mount"
  if again then mount.unmount(m.medium_hash, m.image_path)
  else
    local s = mount.status(m.medium_hash, m.image_path)
    local roots = s and mount.roots_of(s) or {}
    if #roots > 0 then return roots, false end
  end
  local res, err, code = mount.mount(m.medium_hash, m.image_path, { map = m.map_path })
  if not res then return nil, err, code end
  return mount.roots_of(res), true
end

function M.remount(conn, h)
  local m, err, code, st = resolve(conn, h)
  if not m then return nil, err, code, st end
  return (roots_of(m, true))
end

-- Resets one file (any state: pending, attempts 0, reason and damage
-- cleared, claimed by this call) and copies it now with the copy engine;
-- the result is written as the copier writes it (copied with its blob, or
-- failed_retryable with the error pushed on the row's history).
function M.retry(conn, h, path, opts)
  opts = opts or {}
  local m, err, code, st = resolve(conn, h)
  if not m then return nil, err, code, st end
  if type(path) ~= "string" or path == "" then return nil, "retry: a path is needed", "EINVAL" end
  path = path:gsub("^/+", "")
  local it, perr, pcode, pst = parts(conn, m.medium_hash)
  if it == nil then return nil, perr, pcode, pst end
  if not it then return nil, ("medium %s is not enumerated: no file %q on it"):format(m.medium_hash, path), "ENOENT" end
  local rows_mod = require "ntt.copier.rows"
  local rows = rows_mod.open(conn, m.medium_hash)
  local worker = require("ntt.copier").worker_id()
  local row, rerr, rcode, rst = rows:take_path(path, worker, 600)
  if not row then return nil, rerr, rcode, rst end
  local roots, mounted, mcode = roots_of(m)
  local function release()
    rows:write({ { fs_index = row.fs_index, ino = row.ino, state = S.PENDING, release = true } }, worker)
  end
  if not roots then release(); return nil, mounted, mcode end
  local root
  for _, r in ipairs(roots) do if r.fs_index == row.fs_index then root = r.root end end
  local res
  if root then
    local store, serr, scode = require("ntt.core.store").open(require("ntt.config").path("store"))
    if not store then release(); return nil, serr, scode end
    res = require("ntt.core.copy").batch(store, { { root = root, path = path, size = row.size, id = 1 } },
                                         { threads = 1 })[1]
    store:close()
  else
    res = { ok = false, err = "ENOENT", msg = S.REASONS.not_mounted:format(row.fs_index) }
  end
  local final
  if res.ok then
    final = { fs_index = row.fs_index, ino = row.ino, state = S.COPIED, blobid = res.blob, size = res.bytes }
  else
    local keep = ((opts.policy or {}).retry or {}).history or 10
    rows:count_attempts({ row }, { { err = res.err, msg = res.msg, at = require("ntt.log").timestamp(
      require("ntt.core.util").now()), retried_by = "operator" } }, keep)
    final = { fs_index = row.fs_index, ino = row.ino, state = S.FAILED_RETRYABLE,
              reason = S.REASONS.after_attempts:format(tostring(res.err), 1, tostring(res.msg)) }
  end
  local ok, werr, wcode, wst = rows:write({ final }, worker)
  if mounted then require("ntt.mount").unmount(m.medium_hash, m.image_path) end   -- what it mounted
  if not ok then return nil, werr, wcode, wst end
  if res.ok and rows:pending() == 0 then rows:copy_done() end
  if not res.ok then return nil, ("%s: %s"):format(M.shown(path), tostring(res.msg)), res.err end
  return { path = path, state = final.state, blob = final.blobid, size = final.size, new = res.new }
end

function M.explain(policy, findings)
  if type(policy) ~= "table" then return nil, "explain: no policy loaded (ntt repl POLICY)", "EINVAL" end
  return require("ntt.repl").explain(policy, findings or {})
end

return M
