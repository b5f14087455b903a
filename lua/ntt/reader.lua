-- lua/ntt/reader.lua: what the Sleuth Kit reader (ntt-tskfs, docs/reader.md)
-- found besides the live files of a filesystem it mounted: the volume label,
-- deleted and orphan entries, metadata that could not be read.
--
-- The reader serves them in a directory its root does not list,
-- ROOT/.ntt-tsk: "report" (one TSV line per fact) and "deleted/N" (the
-- content of deleted entry N where TSK can read it).
--
--   reader.is_reader(root)          -> true for a root {driver=} ntt-tskfs mounted
--   reader.report(path)             -> {label=, deleted={...}, damaged={...}} | nil, msg, code
--       report file at path; deleted[i] = {entry=, type=, size=, mtime_ns=, atime_ns=,
--       ctime_ns=, crtime_ns=, mode=, meta_addr=, recoverability=, path=bytes};
--       damaged[i] = {reason=, path=bytes, detail=}
--   reader.parse(text)              -> the same from a report's text
--   reader.side_report_start(image, offset, fstype) -> handle | nil, msg, code
--   reader.side_report_finish(handle [, timeout])  -> report | nil, msg, code
--   reader.side_report_cancel(handle)
--       the report of a filesystem the kernel mounted, by `ntt-tskfs --report` (no
--       mount), read in the background while the caller goes on
--   reader.record(db, hash, root [, report]) -> {deleted=n, damaged=n, label=} | nil, msg, code
--       the root's report (or the one given) into deleted_entry (the filesystem's rows replaced), its
--       label onto the filesystem row when the probe found none, its damage
--       into the medium's problems (metadata_damage)
--   reader.recover(db, store_root, hash, roots [, opts]) -> {recovered=, failed=} | nil, msg, code
--       copies the content of every recorded deleted file TSK can read into the
--       store (state 'recovered', blobid, caveat) or marks it 'unreadable'
local pg = require "ntt.core.pg"
local problems = require "ntt.problems"

local M = {}

M.SIDE = ".ntt-tsk"
M.CAVEAT = "recovered from a deleted entry: the content is what The Sleuth Kit read from the entry's "
  .. "former clusters/blocks, which may since have been reused in part"

function M.is_reader(root)
  return type(root) == "table" and root.driver == "ntt-tskfs"
end

local unescape_map = { t = "\t", n = "\n", ["\\"] = "\\" }
local function unescape(s) return (s:gsub("\\(.)", function(c) return unescape_map[c] or c end)) end

local function ns(field)
  if not field or field == "" then return nil end
  local s, f = field:match("^(%-?%d+)%.(%d+)$")
  if not s then return nil end
  return math.tointeger(tonumber(s)) * 1000000000 + math.tointeger(tonumber(f))
end

local function split(line)
  local out = {}
  for f in (line .. "\t"):gmatch("([^\t]*)\t") do out[#out + 1] = f end
  return out
end

-- The report's text -> its facts.
function M.parse(text)
  local rep = { deleted = {}, damaged = {} }
  for line in text:gmatch("([^\n]*)\n") do
    local t = split(line)
    if t[1] == "label" then
      rep.label = unescape(t[2] or "")
    elseif t[1] == "deleted" and #t >= 12 then
      rep.deleted[#rep.deleted + 1] = {
        entry = math.tointeger(tonumber(t[2])), type = t[3], size = math.tointeger(tonumber(t[4])),
        mtime_ns = ns(t[5]), atime_ns = ns(t[6]), ctime_ns = ns(t[7]), crtime_ns = ns(t[8]),
        mode = t[9] ~= "" and math.tointeger(tonumber(t[9], 8)) or nil,
        meta_addr = math.tointeger(tonumber(t[10])), recoverability = t[11], path = unescape(t[12]) }
    elseif t[1] == "damaged" and #t >= 3 then
      rep.damaged[#rep.damaged + 1] = { reason = t[2], path = unescape(t[3]), detail = unescape(t[4] or "") }
    end
  end
  return rep
end

function M.report(path)
  local f, err, errno = io.open(path, "rb")
  if not f then
    return nil, "reader report: " .. tostring(err), errno == 2 and "ENOENT" or "EIO"
  end
  local text = f:read("a")
  f:close()
  if not text then return nil, "reader report " .. path .. ": unreadable", "EIO" end
  return M.parse(text)
end

-- The filesystem types whose deleted entries TSK lists when the kernel mounted them.
M.LISTED = { ext2 = true, ext3 = true, ext4 = true, ntfs = true, hfsplus = true, exfat = true }

function M.tskfs_path()
  local helper = require("ntt.mount").helper_path()
  local dir = helper:match("^(.*)/[^/]*$")
  return dir and (dir .. "/ntt-tskfs") or "ntt-tskfs"
end

-- The report of the filesystem of type fstype at byte offset of image, read
-- by `ntt-tskfs --report` (no mount; it drops root before reading).
-- side_report_start starts it and returns at once (the reader works while
-- the caller walks); side_report_finish waits for it (timeout seconds) and
-- reads it; side_report_cancel ends one not wanted any more.
function M.side_report_start(image, offset, fstype)
  local proc = require "ntt.core.proc"
  local out = os.tmpname()
  local p, err, code = proc.spawn { argv = { M.tskfs_path(), "--report", fstype, tostring(offset or 0) },
                                    stdin = image, stdout = out, stderr = "null" }
  if not p then os.remove(out) return nil, "reader: " .. tostring(err), code end
  return { p = p, out = out, fstype = fstype }
end

function M.side_report_cancel(h)
  if h.p:wait(0) == nil then h.p:kill(9); h.p:wait() end
  os.remove(h.out)
end

function M.side_report_finish(h, timeout)
  local how, rc = h.p:wait(timeout or 600)
  if not how then M.side_report_cancel(h) return nil, "reader: timed out", "ETIMEDOUT" end
  if how ~= "exit" or rc ~= 0 then
    os.remove(h.out)
    return nil, ("reader: ntt-tskfs --report %s ended: %s %s"):format(h.fstype, tostring(how), tostring(rc)), "EIO"
  end
  local rep, rerr, rcode = M.report(h.out)
  os.remove(h.out)
  return rep, rerr, rcode
end

local function exec(db, sql, ...)
  local r, err, code, state = db:exec(sql, ...)
  if not r then return nil, "reader: " .. tostring(err), code, state end
  return r
end

function M.record(db, hash, root, rep)
  if not rep then
    local err, code
    rep, err, code = M.report(root.root .. "/" .. M.SIDE .. "/report")
    if not rep then return nil, err, code end
  end
  local ok, qerr, qcode, state = exec(db, "DELETE FROM deleted_entry WHERE medium_hash = $1 AND fs_index = $2",
                                      hash, root.fs_index)
  if not ok then return nil, qerr, qcode, state end
  for _, d in ipairs(rep.deleted) do
    ok, qerr, qcode, state = exec(db, [[
      INSERT INTO deleted_entry (medium_hash, fs_index, entry, type, path, meta_addr, size, mode,
                                 mtime_ns, atime_ns, ctime_ns, crtime_ns, recoverability)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)]],
      hash, root.fs_index, d.entry, d.type, pg.bytea(d.path), d.meta_addr,
      d.size and d.size >= 0 and d.size or nil, d.mode, d.mtime_ns, d.atime_ns, d.ctime_ns, d.crtime_ns,
      d.recoverability)
    if not ok then return nil, qerr, qcode, state end
  end
  if rep.label and rep.label ~= "" then
    ok, qerr, qcode, state = exec(db, [[
      UPDATE filesystem SET label = $3 WHERE medium_hash = $1 AND fs_index = $2 AND label IS NULL]],
      hash, root.fs_index, rep.label)
    if not ok then return nil, qerr, qcode, state end
  end
  if #rep.damaged > 0 then
    local list = {}
    for i = 1, math.min(#rep.damaged, 50) do
      local d = rep.damaged[i]
      list[i] = { fs_index = root.fs_index, reason = d.reason, path = d.path:gsub("%c", "?"), detail = d.detail }
    end
    problems.set(db, hash, "metadata_damage", { count = #rep.damaged, first = list })
  end
  return { deleted = #rep.deleted, damaged = #rep.damaged, label = rep.label }
end

-- The deleted files of one filesystem whose content the reader serves.
local function wanted(db, hash, fs_index)
  return exec(db, [[
    SELECT entry, size FROM deleted_entry
     WHERE medium_hash = $1 AND fs_index = $2 AND type = 'file' AND state = 'recorded'
       AND recoverability IN ('recoverable', 'data_reused') ORDER BY entry]], hash, fs_index)
end

function M.recover(db, store_root, hash, roots, opts)
  local copy = require "ntt.core.copy"
  local store, serr, scode = require("ntt.core.store").open(store_root)
  if not store then return nil, "reader: " .. tostring(serr), scode end
  local out = { recovered = 0, failed = 0 }
  for _, root in ipairs(roots or {}) do
    if M.is_reader(root) then
      local rows, err, code, state = wanted(db, hash, root.fs_index)
      if not rows then store:close() return nil, err, code, state end
      if #rows > 0 then
        local items = {}
        for i, r in ipairs(rows) do
          items[i] = { root = root.root, path = M.SIDE .. "/deleted/" .. r.entry, size = r.size, id = r.entry }
        end
        local results = copy.batch(store, items, { threads = (opts or {}).threads or 1 })
        for _, res in ipairs(results) do
          local ok, qerr, qcode, qstate
          if res.ok then
            ok, qerr, qcode, qstate = exec(db, [[
              INSERT INTO blob (blobid, size) VALUES ($1, $2) ON CONFLICT (blobid) DO NOTHING]], res.blob, res.bytes)
            if ok then
              ok, qerr, qcode, qstate = exec(db, [[
                UPDATE deleted_entry SET state = 'recovered', blobid = $4, caveat = $5, error = NULL
                 WHERE medium_hash = $1 AND fs_index = $2 AND entry = $3]],
                hash, root.fs_index, res.id, res.blob, M.CAVEAT)
            end
            out.recovered = out.recovered + 1
          else
            ok, qerr, qcode, qstate = exec(db, [[
              UPDATE deleted_entry SET state = 'unreadable', error = $4
               WHERE medium_hash = $1 AND fs_index = $2 AND entry = $3]],
              hash, root.fs_index, res.id, ("%s %s: %s"):format(res.phase or "", res.err or "", res.msg or ""))
            out.failed = out.failed + 1
          end
          if not ok then store:close() return nil, qerr, qcode, qstate end
        end
      end
    end
  end
  store:close()
  return out
end

return M
