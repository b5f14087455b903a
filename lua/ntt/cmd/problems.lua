-- lua/ntt/cmd/problems.lua: `ntt problems [H]` -- what is recorded as wrong.
local usage = [[
usage: ntt problems [--json] [H]

The problems recorded on every medium (or on medium H: a hash, a unique
hash prefix or a name), one line each: medium, problem, its detail as JSON.
The diagnostic events (one per decision on a failing file) are counted,
not listed: `ntt repl --medium H` has failing(), kernel().  --json: one
JSON document, an array of {medium, name, problem, detail}.

Exit status: 0 none recorded; 1 problems recorded; 2 could not run (a
medium unknown or ambiguous, the database); 64 usage.]]

local function main(args)
  local lookup = require "ntt.lookup"
  local as_json, h = false, nil
  for _, a in ipairs(args) do
    if a == "--json" then as_json = true
    elseif a:match("^%-") or h then io.stderr:write(usage, "\n"); return 64
    else h = a end
  end
  return lookup.with_db("problems", function(conn)
    local console, json = require "ntt.console", require "ntt.json"
    local list, err, code = console.problems(conn, h)
    if not list then return lookup.fail("problems", err, code) end
    if as_json then lookup.json_out(list)
    elseif #list == 0 then io.stdout:write("no problems recorded\n")
    else
      for _, p in ipairs(list) do
        io.stdout:write(("%s  %-24s %s\n"):format(p.medium, p.problem, console.shown(json.encode(p.detail))))
      end
    end
    return #list > 0 and 1 or 0
  end)
end

return { summary = "the problems recorded on every medium or one", usage = usage, main = main }
