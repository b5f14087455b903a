-- lua/ntt/report/write.lua: a medium's reports into files or a stream.
--
--   write.medium(conn, m, fmt, out, opts) -> true | nil, msg, code [, SQLSTATE]
--     fmt "html" | "json" | "dfxml"; out a file handle; opts.limit (lists
--     in the page), opts.roots (DFXML byte runs: ntt.report.dfxml)
--   write.all(conn, dir, opts) -> { media=, files= } | nil, msg, code [, SQLSTATE]
--     every medium's three reports and index.html under dir (made if absent),
--     each written to a temporary name and renamed into place
--   write.index_rows(conn) -> rows | nil, msg, code [, SQLSTATE]
--
-- The JSON report is the model (ntt.report) with each list whole: the lists
-- are streamed into it from the database, so its size costs no memory.
local fs = require "ntt.core.fs"
local json = require "ntt.json"
local report = require "ntt.report"

local M = {}

local function json_report(conn, m, out, opts)
  local model, err, code, state = report.model(conn, m, { limit = 0 })
  if not model then return nil, err, code, state end
  local lists = model.lists
  model.lists = nil
  local head = json.encode(model)
  out:write(head:sub(1, -2), ',"lists":{')
  for k, name in ipairs(report.LISTS) do
    out:write(k > 1 and "," or "", json.encode(name), ':{"count":', tostring(lists[name].count), ',"entries":[')
    local n = 0
    local ok
    ok, err, code, state = report.each(conn, m, name, function(e)
      out:write(n > 0 and "," or "", e)
      n = n + 1
    end, { raw = true })
    if not ok then return nil, err, code, state end
    out:write("]}")
  end
  out:write("}}\n")
  return true
end

function M.medium(conn, m, fmt, out, opts)
  opts = opts or {}
  if fmt == "json" then return json_report(conn, m, out, opts) end
  if fmt == "dfxml" then
    local n, err, code, state = require("ntt.report.dfxml").write(conn, m, out, opts)
    if not n then return nil, err, code, state end
    return true
  end
  if fmt == "html" then
    local model, err, code, state = report.model(conn, m, { limit = opts.limit })
    if not model then return nil, err, code, state end
    out:write(require("ntt.report.html").page(model))
    return true
  end
  return nil, ("unknown report format '%s' (html, json, dfxml)"):format(tostring(fmt)), "EINVAL"
end

-- Writes path by fn(handle), through path.<pid>.tmp and a rename (two runs
-- of one medium may write its report at once: each its own temp).
local function into(path, fn)
  local tmp = ("%s.%d.tmp"):format(path, require("ntt.core.util").pid())
  local f, ferr, errno = io.open(tmp, "wb")
  if not f then return nil, ferr, require("ntt.core.util").errname(errno) end
  local ok, err, code, state = fn(f)
  local closed, cerr = f:close()
  if ok and not closed then ok, err, code = nil, ("%s: %s"):format(tmp, tostring(cerr)), "EIO" end
  if not ok then os.remove(tmp); return nil, err, code, state end
  local moved, merr = os.rename(tmp, path)
  if not moved then os.remove(tmp); return nil, merr, "EIO" end
  return true
end
M.into = into

function M.index_rows(conn)
  local media, err, code, state = conn:exec([[
    SELECT medium_hash AS hash, medium_human AS name, kind, health, rescued_pct,
           (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(problems) k
             WHERE k <> ALL (]] .. require("ntt.problems").NOT_KINDS_SQL .. [[)) AS problem_keys
      FROM medium ORDER BY added_at, medium_hash]])
  if not media then return nil, err, code, state end
  local counts
  counts, err, code, state = conn:exec("SELECT medium_hash, state::text AS state, count(*) AS n FROM inode GROUP BY 1, 2")
  if not counts then return nil, err, code, state end
  local by = {}
  for _, r in ipairs(counts) do
    by[r.medium_hash] = by[r.medium_hash] or {}
    by[r.medium_hash][r.state] = r.n
  end
  for _, m in ipairs(media) do
    m.files = by[m.hash] or {}
    m.href = m.hash .. ".html"
  end
  return media
end

-- Files of one medium's reports in dir.
function M.files_of(dir, hash)
  return { html = ("%s/%s.html"):format(dir, hash), json = ("%s/%s.json"):format(dir, hash),
           dfxml = ("%s/%s.dfxml"):format(dir, hash) }
end

-- One medium's three reports, then the index (dir made if absent).
function M.one(conn, m, dir, opts)
  local ok, err, code = fs.mkdirp(dir)
  if not ok then return nil, err, code end
  local files = M.files_of(dir, m.medium_hash)
  for _, fmt in ipairs { "html", "json", "dfxml" } do
    local state
    ok, err, code, state = into(files[fmt], function(f) return M.medium(conn, m, fmt, f, opts) end)
    if not ok then return nil, err, code, state end
  end
  return M.index(conn, dir)
end

function M.index(conn, dir)
  local rows, err, code, state = M.index_rows(conn)
  if not rows then return nil, err, code, state end
  return into(dir .. "/index.html", function(f)
    f:write(require("ntt.report.html").index(rows))
    return true
  end)
end

function M.all(conn, dir, opts)
  local accounting = require "ntt.accounting"
  local rows, err, code, state = M.index_rows(conn)
  if not rows then return nil, err, code, state end
  local ok
  ok, err, code = fs.mkdirp(dir)
  if not ok then return nil, err, code end
  for _, r in ipairs(rows) do
    local m
    m, err, code, state = accounting.resolve(conn, r.hash)
    if not m then return nil, err, code, state end
    local files = M.files_of(dir, m.medium_hash)
    for _, fmt in ipairs { "html", "json", "dfxml" } do
      ok, err, code, state = into(files[fmt], function(f) return M.medium(conn, m, fmt, f, opts) end)
      if not ok then return nil, err, code, state end
    end
  end
  ok, err, code, state = M.index(conn, dir)
  if not ok then return nil, err, code, state end
  return { media = #rows, files = #rows * 3 + 1 }
end

return M
