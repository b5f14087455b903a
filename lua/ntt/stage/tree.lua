-- lua/ntt/stage/tree.lua: the medium's original names under the data root,
-- tree/<medium>/p<N>/<path, byte-exact>, as hard links to its blobs
-- (docs/tree.md).
--
-- Runs once copy_done is set.  The paths are taken in (fs_index, path)
-- order, a batch at a time, and handed to ntt.core.tree (threads, one
-- directory each); after each batch the medium's cursor (tree_fs,
-- tree_path), the second blob copies made and the paths that could not be
-- put in (tree_problem) are committed together, so a rerun after a crash
-- goes on from there.  Then the directories get the medium's mtimes, the
-- damaged files are listed in tree/<medium>/damaged.txt, and tree_done is
-- set: a later run does nothing, unless a copy finished after it (files a
-- later walk found), which makes it go over every path again.
local config = require "ntt.config"
local db = require "ntt.db"
local pg = require "ntt.core.pg"
local fs = require "ntt.core.fs"
local store_mod = require "ntt.core.store"
local core = require "ntt.core.tree"
local problems = require "ntt.problems"
local progress = require "ntt.progress"
local S = require "ntt.states"

local M = {}

-- The next batch of n paths after (fs, path), with what the tree needs of
-- their inodes.  Excluded paths are left out (the policy excluded them).
local function batch(conn, it, pt, hash, fs_index, path, n)
  return conn:exec(([[
    SELECT p.fs_index, p.path, i.state::text AS state, i.fs_type, i.blobid, i.link_target, i.mtime_ns
      FROM %s p JOIN %s i ON i.medium_hash = p.medium_hash AND i.fs_index = p.fs_index AND i.ino = p.ino
     WHERE p.medium_hash = $1 AND (p.fs_index, p.path) > ($2::int, $3::bytea) AND p.exclude_reason IS NULL
     ORDER BY p.fs_index, p.path
     LIMIT $4]]):format(pt, it), hash, fs_index, pg.bytea(path), n)
end

-- Escapes a path for a one-line listing: backslash, newline, CR and tab
-- as \\ \n \r \t; every other byte as it is.
local ESC = { ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
function M.escape(s) return (s:gsub("[\\\n\r\t]", ESC)) end

-- A path's name under tree/<medium>: the filesystem's root (path "") is p<N>.
local function tree_name(fs_index, path)
  if path == "" then return ("p%d"):format(fs_index) end
  return ("p%d/%s"):format(fs_index, path)
end

-- One entry for ntt.core.tree, or nil for a path that gets no entry.
local function entry(row)
  local name = tree_name(row.fs_index, row.path)
  if row.fs_type == "d" then return { path = name, kind = "d" } end
  if row.fs_type == "l" and row.link_target and row.link_target ~= "" then
    return { path = name, kind = "l", target = row.link_target, mtime_ns = row.mtime_ns }
  end
  if row.state == S.COPIED and row.blobid then return { path = name, kind = "f", blob = row.blobid } end
  return nil   -- damaged (listed), failed, skipped, excluded, devices...
end

-- One batch's results, committed with the cursor.
local function record(conn, hash, from, last, rows, idx, fails, copies)
  return db.tx(conn, function()
    local ok, err, code, state = conn:exec([[
      DELETE FROM tree_problem WHERE medium_hash = $1
         AND (fs_index, path) > ($2::int, $3::bytea) AND (fs_index, path) <= ($4::int, $5::bytea)]],
      hash, from.fs, pg.bytea(from.path), last.fs_index, pg.bytea(last.path))
    if not ok then return nil, err, code, state end
    for _, f in ipairs(fails) do
      local row = rows[idx[f.index]]
      ok, err, code, state = conn:exec([[
        INSERT INTO tree_problem (medium_hash, fs_index, path, err, msg) VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (medium_hash, fs_index, path) DO UPDATE SET err = EXCLUDED.err, msg = EXCLUDED.msg,
                                                                seen_at = now()]],
        hash, row.fs_index, pg.bytea(row.path), f.err, f.msg)
      if not ok then return nil, err, code, state end
    end
    for _, c in ipairs(copies) do
      ok, err, code, state = conn:exec([[
        INSERT INTO blob_copy (blobid, copy_no, reflink) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING]],
        c.blob, c.n, c.reflink)
      if not ok then return nil, err, code, state end
    end
    return conn:exec("UPDATE medium SET tree_fs = $2, tree_path = $3 WHERE medium_hash = $1",
                     hash, last.fs_index, pg.bytea(last.path))
  end)
end

-- Every directory of the medium gets its mtime, now that its entries are in.
local function dir_times(conn, it, pt, hash, root, n)
  local after, set, failed = { fs = -1, path = "" }, 0, 0
  while true do
    local rows, err, code, state = conn:exec(([[
      SELECT p.fs_index, p.path, i.mtime_ns
        FROM %s p JOIN %s i ON i.medium_hash = p.medium_hash AND i.fs_index = p.fs_index AND i.ino = p.ino
       WHERE p.medium_hash = $1 AND i.fs_type = 'd' AND i.mtime_ns IS NOT NULL AND p.exclude_reason IS NULL
         AND (p.fs_index, p.path) > ($2::int, $3::bytea)
       ORDER BY p.fs_index, p.path LIMIT $4]]):format(pt, it), hash, after.fs, pg.bytea(after.path), n)
    if not rows then return nil, err, code, state end
    if #rows == 0 then return set, failed end
    local list = {}
    for i, r in ipairs(rows) do list[i] = { path = tree_name(r.fs_index, r.path), mtime_ns = r.mtime_ns } end
    local k, fails, tcode = core.times(root, list)
    if not k then return nil, fails, tcode end
    set, failed = set + k, failed + #fails
    after = { fs = rows[#rows].fs_index, path = rows[#rows].path }
  end
end

-- tree/<medium>/damaged.txt: one line per damaged file, "p<N>/<path>" escaped
-- (M.escape), a tab, then its unreadable ranges as JSON.  Written whole
-- under a temp name; removed when the medium has none.
local function damaged_list(conn, it, pt, hash, root)
  local rows, err, code, state = conn:exec(([[
    SELECT p.fs_index, p.path, coalesce(i.damage::text, '[]') AS damage
      FROM %s p JOIN %s i ON i.medium_hash = p.medium_hash AND i.fs_index = p.fs_index AND i.ino = p.ino
     WHERE p.medium_hash = $1 AND i.state = $2 AND p.exclude_reason IS NULL
     ORDER BY p.fs_index, p.path]]):format(pt, it), hash, S.DAMAGED)
  if not rows then return nil, err, code, state end
  local file = root .. "/damaged.txt"
  if #rows == 0 then
    os.remove(file)
    return 0
  end
  local tmp = ("%s.%d.tmp"):format(file, require("ntt.core.util").pid())   -- (two runs: two temps)
  local f, ferr = io.open(tmp, "wb")
  if not f then return nil, ferr, "EIO" end
  for _, r in ipairs(rows) do
    f:write(M.escape(tree_name(r.fs_index, r.path)), "\t", r.damage, "\n")
  end
  local ok, werr = f:close()
  if not ok then os.remove(tmp); return nil, werr, "EIO" end
  local rok, rerr = os.rename(tmp, file)
  if not rok then os.remove(tmp); return nil, rerr, "EIO" end
  return #rows
end

function M.run(ctx)
  local m = ctx.medium
  if not m then return nil, "tree needs identify first", "EINVAL" end
  local conn, log, hash = ctx.db, ctx.log, m.hash
  -- A copy that finished after the tree (files a later walk found) makes
  -- the tree go over every path again: what is in place is found there.
  local r, err, code, state = conn:exec([[
    UPDATE medium SET tree_done = NULL, tree_fs = NULL, tree_path = NULL
     WHERE medium_hash = $1 AND tree_done < copy_done]], hash)
  if not r then return nil, err, code, state end
  r, err, code, state = conn:exec([[
    SELECT copy_done IS NOT NULL AS copied, tree_done IS NOT NULL AS built, tree_fs, tree_path
      FROM medium WHERE medium_hash = $1]], hash)
  if not r then return nil, err, code, state end
  if not r[1] then return nil, "tree: no medium " .. hash, "ENOENT" end
  if r[1].built then
    log:info("tree_skipped", { medium = hash, reason = "already built" })
    return true
  end
  if not r[1].copied then
    log:info("tree_skipped", { medium = hash, reason = "copy not complete" })
    return true
  end
  local it, pt = db.partitions(conn, hash)
  if not it then
    if it == nil then return nil, pt, "EDB" end
    log:info("tree_skipped", { medium = hash, reason = "not enumerated" })
    return true
  end
  local opts = ctx.policy.tree or {}
  local n = opts.batch or 5000
  local root = config.path("tree", hash)
  local ok, merr, mcode = fs.mkdirp(root)
  if not ok then return nil, merr, mcode end
  local st, serr, scode = store_mod.open(config.path("store"))
  if not st then return nil, serr, scode end
  local limit = core.link_max(root)
  local cursor = { fs = r[1].tree_fs or -1, path = r[1].tree_path or "" }
  local pgo = ctx.policy.progress or {}
  local pr = progress.new { label = "tree " .. (m.human or hash), interval = pgo.interval, bar = pgo.bar }
  local t = { links = 0, symlinks = 0, dirs = 0, existing = 0, failed = 0, copies = 0, paths = 0 }
  local function fail(...) st:close(); pr:finish(); return ... end
  while true do
    local rows, berr, bcode, bstate = batch(conn, it, pt, hash, cursor.fs, cursor.path, n)
    if not rows then return fail(nil, berr, bcode, bstate) end
    if #rows == 0 then break end
    local entries, idx = {}, {}
    for i, row in ipairs(rows) do
      local e = entry(row)
      if e then entries[#entries + 1] = e; idx[#entries] = i end
    end
    local stats, fails, copies = core.build(st, root, entries, { threads = opts.threads, link_max = opts.link_max })
    if not stats then return fail(nil, fails, copies) end
    local last = rows[#rows]
    local rok, rerr, rcode, rstate = record(conn, hash, cursor, last, rows, idx, fails, copies)
    if not rok then return fail(nil, rerr, rcode, rstate) end
    for k in pairs(t) do t[k] = t[k] + (stats[k] or 0) end
    t.copies, t.paths = t.copies + #copies, t.paths + #rows
    for _, c in ipairs(copies) do
      log:info("tree_blob_copy", { medium = hash, blob = c.blob, n = c.n, reflink = c.reflink, link_max = limit })
    end
    cursor = { fs = last.fs_index, path = last.path }
    pr:set(t.paths)
    if require("ntt.core.util").interrupted() then return fail(nil, "interrupted", "EINTR") end
  end
  st:close()
  pr:finish()
  local set, tfailed, tcode = dir_times(conn, it, pt, hash, root, n)
  if not set then return nil, tfailed, tcode end
  local damaged, derr, dcode = damaged_list(conn, it, pt, hash, root)
  if not damaged then return nil, derr, dcode end
  local pr2, perr, pcode, pstate = conn:exec("SELECT count(*) AS n FROM tree_problem WHERE medium_hash = $1", hash)
  if not pr2 then return nil, perr, pcode, pstate end
  local left = pr2[1].n
  if left > 0 then
    ok, perr, pcode, pstate = problems.set(conn, hash, "tree_problems", left)
  else
    ok, perr, pcode, pstate = problems.clear(conn, hash, "tree_problems")
  end
  if not ok then return nil, perr, pcode, pstate end
  ok, perr, pcode, pstate = conn:exec("UPDATE medium SET tree_done = now() WHERE medium_hash = $1", hash)
  if not ok then return nil, perr, pcode, pstate end
  ctx.counts.tree_links = (ctx.counts.tree_links or 0) + t.links
  log:info("tree_built", { medium = hash, root = root, links = t.links, symlinks = t.symlinks, dirs = t.dirs,
                           existing = t.existing, failed = t.failed, copies = t.copies, damaged = damaged,
                           dir_times = set, dir_times_failed = tfailed, problems = left, link_max = limit })
  if left > 0 then
    log:warn("tree_problems", { medium = hash, problems = left },
             ("%s: %d paths are not in the tree (see table tree_problem)"):format(m.human or hash, left))
  end
  return true
end

return M
