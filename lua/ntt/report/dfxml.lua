-- lua/ntt/report/dfxml.lua: a medium's file list as DFXML, streamed.
--
--   dfxml.write(conn, m, out, opts) -> count | nil, msg, code [, SQLSTATE]
--     m: a medium row; out: a file handle (anything with :write);
--     opts.roots: { [fs_index] = mounted root } -- where the medium is
--     mounted, each file's extents (FIEMAP) give its <byte_runs> with
--     img_offset; without, no byte runs are written.
--     count: the fileobjects written.
--
-- Valid against the DFXML schema (version 1.2.0 elements, in the order its
-- fileobject sequence requires).  One <volume> per filesystem, with its
-- offset in the image; one <fileobject> per path (a hardlinked file once per
-- name, as fiwalk does).  Names go through ntt.report.name (valid UTF-8 as
-- is; "\\", control bytes and invalid bytes escaped as "\\" and "\xNN").
-- SHA-256 where the copy pass took it (policy copy.digests) is a plain
-- <hashdigest type="sha256">.  BLAKE3, which the schema's digest types lack, is a <hashdigest
-- type="OTHER" ntt:algorithm="blake3">; ntt's state and reason of the file
-- are ntt:state / ntt:reason attributes of its fileobject.  Rows come from a
-- server-side cursor a few thousand at a time: memory stays flat.
local db = require "ntt.db"
local report = require "ntt.report"

local M = {}

M.NS = "http://www.forensicswiki.org/wiki/Category:Digital_Forensics_XML"
M.NTT_NS = "urn:x-ntt:dfxml:1"

local NAME_TYPE = { f = "r", d = "d", l = "l", b = "b", c = "c", p = "p", s = "s" }
local META_TYPE = { f = 1, d = 2, p = 3, c = 4, b = 5, l = 6, s = 8 }

local function x(s)
  return (tostring(s):gsub("[&<>\"]", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;" }))
end

-- nanoseconds since the epoch -> xs:dateTime in UTC
local function iso(ns)
  if not ns then return nil end
  local s, frac = ns // 1000000000, ns % 1000000000
  local t = os.date("!%Y-%m-%dT%H:%M:%S", s)
  if frac ~= 0 then t = t .. ("%09d"):format(frac):gsub("0+$", ""):gsub("^", ".") end
  return t .. "Z"
end

local FILE_SQL = [[
  SELECT p.path, p.ino, i.size, i.mode, i.nlink, i.mtime_ns, i.fs_type, i.link_target, i.state::text AS state,
         i.reason, i.blobid, b.sha256
    FROM %s p JOIN %s i ON i.fs_index = p.fs_index AND i.ino = p.ino
    LEFT JOIN blob b ON b.blobid = i.blobid
   WHERE p.fs_index = $1 AND p.path <> ''::bytea ORDER BY p.path]]

-- The file's extents, the last cut at the file's size (an extent is whole
-- blocks; a byte run is the file's bytes, as fiwalk gives them).
local function byte_runs(root, path, fs_offset, size)
  if not root then return nil end
  local extents = require("ntt.core.media").fiemap(root .. "/" .. path)
  if not extents or #extents == 0 then return nil end
  local out = { "<byte_runs>" }
  for _, e in ipairs(extents) do
    local len = size and math.min(e.length, size - e.logical) or e.length
    if len > 0 then
      out[#out + 1] = ('<byte_run file_offset="%d" fs_offset="%d" img_offset="%d" len="%d"/>')
        :format(e.logical, e.physical, e.physical + fs_offset, len)
    end
  end
  out[#out + 1] = "</byte_runs>"
  return table.concat(out)
end

local function fileobject(r, fs, root)
  local t = r.fs_type or "?"
  local parts = {
    ('<fileobject ntt:state="%s"%s>'):format(x(r.state), r.reason and (' ntt:reason="%s"'):format(x(r.reason)) or ""),
    "<filename>" .. x(report.name(r.path)) .. "</filename>",
    fs.fs_index > 0 and ("<partition>%d</partition>"):format(fs.fs_index) or "",
    NAME_TYPE[t] and ("<name_type>%s</name_type>"):format(NAME_TYPE[t]) or "",
    r.size and ("<filesize>%d</filesize>"):format(r.size) or "",
    "<alloc>1</alloc>",
    ("<inode>%d</inode>"):format(r.ino),
    META_TYPE[t] and ("<meta_type>%d</meta_type>"):format(META_TYPE[t]) or "",
    r.mode and ("<mode>%d</mode>"):format(r.mode) or "",
    r.nlink and ("<nlink>%d</nlink>"):format(r.nlink) or "",
    r.mtime_ns and ("<mtime>%s</mtime>"):format(iso(r.mtime_ns)) or "",
    r.link_target and ("<link_target>%s</link_target>"):format(x(report.name(r.link_target))) or "",
    t == "f" and byte_runs(root, r.path, fs.byte_offset or 0, r.size) or "",
    r.sha256 and ('<hashdigest type="sha256">%s</hashdigest>'):format(r.sha256) or "",
    r.blobid and ('<hashdigest type="OTHER" ntt:algorithm="blake3">%s</hashdigest>'):format(r.blobid) or "",
    "</fileobject>\n",
  }
  return table.concat(parts)
end

function M.write(conn, m, out, opts)
  opts = opts or {}
  local fss, err, code, state = conn:exec([[
    SELECT fs_index, byte_offset, size, fstype FROM filesystem WHERE medium_hash = $1 ORDER BY fs_index]], m.medium_hash)
  if not fss then return nil, err, code, state end
  local it, pt
  it, pt, code, state = db.partitions(conn, m.medium_hash)
  if it == nil then return nil, pt, code, state end
  out:write(('<?xml version="1.0" encoding="UTF-8"?>\n<dfxml xmlns="%s" xmlns:dc="http://purl.org/dc/elements/1.1/" '
             .. 'xmlns:ntt="%s" version="1.2.0">\n'):format(M.NS, M.NTT_NS))
  out:write(("<metadata><dc:type>File list of medium %s</dc:type><ntt:medium>%s</ntt:medium></metadata>\n")
              :format(x(m.medium_hash), x(m.medium_hash)))
  out:write(("<creator version=\"1.0\"><program>ntt</program><version>%s</version>"
             .. "<execution_environment><start_time>%s</start_time></execution_environment></creator>\n")
              :format(x(require("ntt.version")), os.date("!%Y-%m-%dT%H:%M:%SZ")))
  if m.image_path then
    out:write(("<source><image_filename>%s</image_filename></source>\n"):format(x(report.name(m.image_path))))
  end
  local n = 0
  -- a filesystem the walk loaded but inspect did not record still gets a volume
  local known = {}
  for _, f in ipairs(fss) do known[f.fs_index] = true end
  if it then
    local more = conn:exec(("SELECT DISTINCT fs_index FROM %s ORDER BY 1"):format(it))
    for _, r in ipairs(more or {}) do
      if not known[r.fs_index] then fss[#fss + 1] = { fs_index = r.fs_index, byte_offset = 0 } end
    end
    table.sort(fss, function(a, b) return a.fs_index < b.fs_index end)
  end
  for _, fs in ipairs(fss) do
    out:write(('<volume offset="%d">\n<partition_offset>%d</partition_offset>'):format(fs.byte_offset or 0,
                                                                                      fs.byte_offset or 0))
    if fs.fstype then out:write(("<ftype_str>%s</ftype_str>"):format(x(fs.fstype))) end
    out:write("\n")
    if it then
      local root = opts.roots and opts.roots[fs.fs_index]
      local ok
      ok, err, code, state = db.tx(conn, function()
        local r, e, c, s = conn:exec("DECLARE ntt_dfxml NO SCROLL CURSOR FOR " .. FILE_SQL:format(pt, it), fs.fs_index)
        if not r then return nil, e, c, s end
        while true do
          r, e, c, s = conn:exec("FETCH 5000 FROM ntt_dfxml")
          if not r then return nil, e, c, s end
          if #r == 0 then return true end
          local buf = {}
          for i, row in ipairs(r) do buf[i] = fileobject(row, fs, root) end
          out:write(table.concat(buf))
          n = n + #r
        end
      end)
      if not ok then return nil, err, code, state end
    end
    out:write("</volume>\n")
  end
  out:write("</dfxml>\n")
  return n
end

return M
