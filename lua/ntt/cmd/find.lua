-- lua/ntt/cmd/find.lua: `ntt find PATTERN` -- where an original file is, by its path.
local usage = [[
usage: ntt find [--regex] [--medium H] [--json] PATTERN

Original paths matching PATTERN on every medium (or medium H: a hash, a
unique hash prefix or a name): one line per path -- medium, filesystem and
path, state, blob.  PATTERN is a glob on the path's bytes (* any bytes, /
included; ? one byte); without "/" it matches a path's last name, with "/"
the whole path relative to its filesystem's root.  --regex: a POSIX extended
regular expression searched in the path.  Each medium's path table is
scanned (LIKE in the database; a regex reads the paths out), so a search
over millions of paths takes seconds.  --json: one JSON document, an array
of {medium, name, fs_index, path, state, blob, size}.

Exit status: 0 found; 1 nothing found; 2 could not run (database, medium,
bad regex); 64 usage.]]

local function main(args)
  local lookup = require "ntt.lookup"
  local o, pattern = { }, nil
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--regex" then o.regex = true
    elseif a == "--json" then o.json = true
    elseif a == "--medium" and args[i + 1] then o.medium = args[i + 1]; i = i + 1
    elseif a:match("^%-") or pattern then io.stderr:write(usage, "\n"); return 64
    else pattern = a end
    i = i + 1
  end
  if not pattern then io.stderr:write(usage, "\n"); return 64 end
  return lookup.with_db("find", function(conn)
    local list, err, code = require("ntt.console").find(conn, pattern, { regex = o.regex, medium = o.medium })
    if not list then return lookup.fail("find", err, code) end
    if o.json then lookup.json_out(list)
    else
      local shown = require("ntt.console").shown
      for _, r in ipairs(list) do
        io.stdout:write(("%s  p%d /%s  %s  %s\n"):format(r.medium, r.fs_index, shown(r.path), r.state, r.blob or "-"))
      end
    end
    return #list > 0 and 0 or 1
  end)
end

return { summary = "original paths matching a glob or regex, across media: medium, path, state, blob",
         usage = usage, main = main }
