-- lua/ntt/plan.lua: what `ntt run` would do, without doing it (--dry-run).
--
--   plan.medium(target, policy, opts) -> plan | nil, msg, code
--     opts: conn= (a read-only connection, or nil: stages and the content
--     hash cache unknown), workers=, log=
--   plan.run(policy, targets, opts) -> plans, exit code   (ntt run --dry-run)
--   plan.text(plans) -> string
--
-- A plan identifies the medium (its content hash: read from the hash cache
-- when the image is unchanged, else computed, never stored), inspects it,
-- mounts it read-only through the helper (and unmounts what it mounted;
-- a medium another run has mounted is read where it is), walks every
-- filesystem and counts what the enumerate and copy stages would do: entries
-- by kind, the inodes the walk would record, files and bytes to copy, files
-- the ignore patterns exclude, files the map says are damaged and files
-- past the end of a cut image, the stages that would run and which are done,
-- and the copy threads the policy gives each filesystem.  It writes nothing:
-- no database row (the connection is read-only), no blob, no log file.
local cwalk = require "ntt.core.walk"
local fs = require "ntt.core.fs"
local media = require "ntt.media"
local mount = require "ntt.mount"
local policy_mod = require "ntt.policy"
local json = require "ntt.json"

local M = {}

local STAGE_COLS = { identify = "identified_at", inspect = "inspected_at", mount = "mounted_at",
                     enumerate = "enum_done", copy = "copy_done", verify = "verified_at", archive = "archived_at" }

local KIND = { f = "file", d = "directory", l = "symlink", b = "block device", c = "char device", p = "fifo",
               s = "socket" }

local function readonly_cache(conn)
  if not conn then return nil end
  local real = require("ntt.hashcache").new(conn)
  return setmetatable({ put = function() return true end }, { __index = real })
end

local function stages_of(policy, row)
  local out = {}
  for _, s in ipairs(policy.stages or {}) do
    if type(s) == "string" then
      local col = STAGE_COLS[s]
      out[#out + 1] = { name = s, done = (row and col and row[col]) and true or false,
                        at = row and col and row[col] or nil }
    else
      out[#out + 1] = { name = "(function)", done = false }
    end
  end
  return json.array(out)
end

local function ignored(patterns, path)
  for _, rx in ipairs(patterns) do if rx:match(path) then return true end end
  return false
end

-- One filesystem, walked: counts as the loader and the copier would make them.
local function walk_fs(root, fsi, p, patterns, damage_of, view_of, threads)
  local w, err, code = cwalk.open(root.root, { threads = threads })
  if not w then return nil, err, code end
  local seen = {}        -- ino -> { kept = bool, size =, path = } (regular files)
  local all, inodes = {}, 0
  while true do
    local batch, berr, bcode = w:next()
    if not batch then
      if berr then w:close(); return nil, berr, bcode end
      break
    end
    for _, r in ipairs(batch) do
      p.entries = p.entries + 1
      local k = KIND[r.type] or "unknown"
      p.by_kind[k] = (p.by_kind[k] or 0) + 1
      if not all[r.ino] then all[r.ino] = true; inodes = inodes + 1 end
      local excluded = r.path ~= "" and ignored(patterns, r.path)
      if excluded then p.excluded_paths = p.excluded_paths + 1 end
      if r.type == "f" then
        local s = seen[r.ino]
        if not s then
          seen[r.ino] = { kept = not excluded, size = r.size, path = not excluded and r.path or nil }
        elseif not excluded and not s.kept then
          s.kept, s.path = true, r.path
        end
      end
    end
  end
  local res = w:result()
  w:close()
  p.walk_errors = p.walk_errors + (res.error_count or 0)
  p.inodes = p.inodes + inodes
  for _, s in pairs(seen) do
    do
      if not s.kept then
        p.excluded_files = p.excluded_files + 1
      else
        p.files = p.files + 1
        p.bytes = p.bytes + (s.size or 0)
        local item = { root = root.root, path = s.path, fs_index = fsi, size = s.size }
        local ranges = damage_of and damage_of(item)
        if ranges and #ranges > 0 then
          p.damaged = p.damaged + 1
          for _, d in ipairs(ranges) do p.damaged_bytes = p.damaged_bytes + d.length end
        end
        if view_of then
          for _, f in ipairs(view_of(item)) do
            if f == "view:beyond_eof" then p.beyond_eof = p.beyond_eof + 1 end
          end
        end
      end
    end
  end
  return true
end

function M.medium(target, policy, opts)
  opts = opts or {}
  local conn = opts.conn
  local ident, err, code = media.identify(target, { cache = readonly_cache(conn) })
  if not ident then return nil, err, code end
  local p = { target = target, hash = ident.hash, kind = ident.kind, name = ident.human, size = ident.size,
              image_path = ident.image_path, map_path = ident.map_path, known = false,
              entries = 0, by_kind = {}, inodes = 0, files = 0, bytes = 0, excluded_paths = 0,
              excluded_files = 0, damaged = 0, damaged_bytes = 0, beyond_eof = 0, walk_errors = 0,
              filesystems = {}, workers = opts.workers or policy.workers or 1 }
  local row
  if conn then
    local r = conn:exec(("SELECT %s FROM medium WHERE medium_hash = $1"):format(
      "identified_at::text, inspected_at::text, mounted_at::text, enum_done::text, copy_done::text, "
      .. "verified_at::text, archived_at::text"), ident.hash)
    row = r and r[1]
    p.known = row ~= nil
  end
  p.stages = stages_of(policy, row)
  local report = media.inspect(ident, policy.inspect)
  p.health, p.rescued_pct = report.health, report.rescued_pct
  p.holes = report.holes and #report.holes or 0
  local problems = {}
  for _, pr in ipairs(report.problems or {}) do problems[#problems + 1] = pr.kind or pr[1] or tostring(pr) end
  p.problems = json.array(problems)
  -- the filesystems, mounted read-only (or read where another run has them)
  local roots, mres, mounted_here = {}, nil, false
  if ident.kind == "directory" then
    roots = { { fs_index = 0, root = ident.image_path, fstype = "directory" } }
  elseif ident.kind == "image" then
    local st = mount.status(ident.hash, ident.image_path)
    if st and st.ok and #mount.roots_of(st) > 0 then
      mres = st
    else
      local mp = policy.mount or {}
      mres = mount.mount(ident.hash, ident.image_path, { map = ident.map_path, timeout = mp.timeout, reader = mp.reader,
                                                         expect = ident.stat })
      mounted_here = true
    end
    roots = mount.roots_of(mres)
  end
  local ok, werr = pcall(function()
    for _, f in ipairs((mres or {}).filesystems or {}) do
      p.filesystems[#p.filesystems + 1] = { fs_index = f.fs_index, fstype = f.fstype, offset = f.offset, size = f.size,
                                            status = f.status, reader = f.driver or (f.status == "mounted" and "kernel") }
    end
    local setup = require("ntt.stage.copy").setup {
      medium = { hash = ident.hash, kind = ident.kind, image_path = ident.image_path, size = ident.size,
                 map_path = ident.map_path },
      mount_result = mres, inspection = report, policy = policy, roots = roots }
    local patterns = policy_mod.ignore_of(policy)
    local cp = policy.copy or {}
    for _, root in ipairs(roots) do
      local probe = fs.probe(root.root, { network_fuse = cp.network_fuse }) or { kind = "unknown" }
      local threads = cp.threads
      if type(threads) == "function" then threads = threads(probe) end
      threads = math.max(1, math.tointeger(threads) or require("ntt.concurrency").default(probe))
      if ident.kind == "directory" then
        p.filesystems[#p.filesystems + 1] = { fs_index = 0, fstype = probe.kind, status = "read in place" }
      end
      for _, f in ipairs(p.filesystems) do
        if f.fs_index == root.fs_index then f.copy_threads = threads; f.source = probe.kind end
      end
      local okw, e, c = walk_fs(root, root.fs_index, p, patterns, setup.damage_of, setup.view,
                                (policy.enumerate or {}).threads)
      if not okw then error({ e, c }, 0) end
    end
  end)
  if mounted_here then
    -- a run that took its lease meanwhile reads that mount: it stays
    local live = conn and require("ntt.lease").holders(conn, ident.hash)
    if not (live and #live > 0) then mount.unmount(ident.hash, ident.image_path) end
  end
  if not ok then
    if type(werr) == "table" then return nil, werr[1], werr[2] end
    error(werr, 0)
  end
  p.filesystems = json.array(p.filesystems)
  return p
end

local function n(x) return tostring(math.tointeger(x) or x) end

function M.text(plans)
  local out = {}
  local function say(fmt, ...) out[#out + 1] = fmt:format(...) end
  for _, p in ipairs(plans) do
    if p.error then
      say("%s: cannot be planned: %s", p.target, p.error)
    else
      say("%s: medium %s (%s, %s%s)", p.target, p.hash, p.kind, p.name or "?", p.known and ", known" or ", new")
      if p.health then say("  health %s, rescued %.4f%%, %d unrescued ranges", p.health, p.rescued_pct or 100, p.holes) end
      for _, f in ipairs(p.filesystems) do
        say("  p%d %s at %s: %s%s, copy threads %s", f.fs_index, f.fstype or "?", n(f.offset or 0), f.status or "?",
            f.reader and (" (" .. f.reader .. ")") or "", f.copy_threads and n(f.copy_threads) or "-")
      end
      local kinds = {}
      for k, v in pairs(p.by_kind) do kinds[#kinds + 1] = ("%s %d"):format(k, v) end
      table.sort(kinds)
      say("  entries %d (%s), inodes %d", p.entries, table.concat(kinds, ", "), p.inodes)
      say("  files to copy %d, %s bytes; excluded by ignore patterns %d files (%d paths)", p.files, n(p.bytes),
          p.excluded_files, p.excluded_paths)
      say("  damaged per the map %d files (%s bytes); past the end of the image %d files", p.damaged,
          n(p.damaged_bytes), p.beyond_eof)
      if p.walk_errors > 0 then say("  places the walk could not read: %d", p.walk_errors) end
      local st = {}
      for _, s in ipairs(p.stages) do st[#st + 1] = s.name .. (s.done and " (done)" or "") end
      say("  stages: %s; workers %d", table.concat(st, ", "), p.workers)
    end
  end
  say("dry run: nothing was written")
  return table.concat(out, "\n") .. "\n"
end

-- Every target, planned.  -> plans, exit code (0 every target planned, 2 not)
function M.run(policy, targets, opts)
  opts = opts or {}
  local conn = opts.conn
  -- a database without ntt's schema (a first run would make it) knows no medium
  if conn and not require("ntt.db").check(conn) then conn = nil end
  if conn then conn:exec("SET default_transaction_read_only = on") end
  local list = require("ntt.targets").expand(targets, {})
  local plans, code = {}, 0
  for _, t in ipairs(list) do
    if t.error then
      plans[#plans + 1] = { target = t.path, error = t.error }
      code = 2
    else
      local p, err = M.medium(t.path, policy, { conn = conn, workers = opts.workers })
      if not p then p = { target = t.path, error = tostring(err) }; code = 2 end
      plans[#plans + 1] = p
    end
  end
  return plans, code
end

return M
