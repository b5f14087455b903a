-- lua/ntt/cmd/report.lua: `ntt report` -- condition reports an archivist can hand on.
local usage = [[
usage: ntt report [--format html|json|dfxml] [-o FILE] MEDIUM
       ntt report --all [-o DIR]

MEDIUM (a hash, a unique hash prefix, or the medium's name): its condition
report, on standard output or into FILE.
  html   one self-contained page: identity and lineage, the map of the
         image (ddrescueview's colours, partitions, a mark on each damaged
         file), the accounting of every inode and every byte, damaged files
         with their ranges, skipped and failed files with their reasons,
         diagnostic events and problems (the default)
  json   the same content with every list whole (docs/report.schema.json)
  dfxml  the file list as DFXML (validates against the DFXML schema)
--all: every medium's three reports and an index page (index.html) into
DIR (default <data root>/report).

Exit status: 0 written; 2 a MEDIUM is unknown or ambiguous, or the
database or the output cannot be used; 64 usage.]]

local function main(args)
  local fmt, out, all, name = "html", nil, false, nil
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--format" or a == "-f" then fmt = args[i + 1]; i = i + 1
    elseif a:match("^%-%-format=") then fmt = a:match("=(.*)$")
    elseif a == "-o" or a == "--output" then out = args[i + 1]; i = i + 1
    elseif a == "--all" then all = true
    elseif a:match("^%-") or name then io.stderr:write(usage, "\n"); return 64
    else name = a end
    i = i + 1
  end
  if (all and name) or (not all and not name) or not fmt or (out == nil and args[#args] == "-o") then
    io.stderr:write(usage, "\n")
    return 64
  end
  if fmt ~= "html" and fmt ~= "json" and fmt ~= "dfxml" then
    io.stderr:write(("ntt report: unknown format '%s' (html, json, dfxml)\n"):format(fmt))
    return 64
  end
  local db = require "ntt.db"
  local write = require "ntt.report.write"
  local conn, err = db.connect { autostart = true }
  if not conn then io.stderr:write("ntt: cannot use the database: ", tostring(err), "\n"); return 2 end
  local ok, cerr = db.check(conn)
  if not ok then io.stderr:write("ntt: ", cerr, "\n"); conn:close(); return 2 end
  local code = 0
  if all then
    local dir = out or require("ntt.config").path("report")
    local r, werr = write.all(conn, dir)
    if not r then io.stderr:write("ntt report: ", tostring(werr), "\n"); code = 2
    else io.stderr:write(("ntt report: %d media, %d files in %s (open %s/index.html)\n"):format(r.media, r.files, dir, dir)) end
  else
    local m, rerr = require("ntt.accounting").resolve(conn, name)
    if not m then
      io.stderr:write("ntt report: ", tostring(rerr), "\n")
      code = 2
    elseif out then
      ok, err = write.into(out, function(f) return write.medium(conn, m, fmt, f) end)
      if not ok then io.stderr:write("ntt report: ", tostring(err), "\n"); code = 2 end
    else
      ok, err = write.medium(conn, m, fmt, io.stdout)
      if not ok then io.stderr:write("ntt report: ", tostring(err), "\n"); code = 2 end
    end
  end
  conn:close()
  return code
end

return { summary = "condition reports of media: HTML page, JSON, DFXML; an index of every medium",
         usage = usage, main = main }
