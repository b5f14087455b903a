-- lua/ntt/cmd/repl.lua: `ntt repl [--medium H] [POLICY]`.
local usage = [[
usage: ntt repl [--medium H] [POLICY]

An interactive Lua prompt with ntt loaded (global `ntt`), line editing and
history.  With POLICY, the policy is loaded and validated (not run) and is
the global `policy`.  An expression is echoed (pretty-printed); `=expr` works
too.  Ctrl-C interrupts a running statement; Ctrl-D leaves.

Helpers over the database (ntt.console; `help()` lists them): media(),
medium(h), problems(h), failing(h), kernel(h), find(pattern), blob(hash),
retry(h, path), remount(h), explain(findings).  h is a medium's hash, a
unique hash prefix or its name; with --medium H it may be left out.  The
database is connected on the first helper call (global `db`).]]

-- The helpers as globals: the connection opened on first use, the medium
-- of --medium filled in where a helper takes one and none is given.
local function install(default_medium)
  local console = require "ntt.console"
  local conn
  local function db()
    if conn then return conn end
    local c, err = require("ntt.db").connect { autostart = true }
    if not c then error("cannot use the database: " .. tostring(err), 0) end
    local ok, cerr = require("ntt.db").check(c)
    if not ok then c:close(); error(cerr, 0) end
    conn = c
    return conn
  end
  local function medium(h) return h == nil and default_medium or h end
  -- a helper's answer as it is: a value, or nil, msg, code (echoed all three)
  local function answer(...) return ... end
  local function help_text()
    local out = {}
    for _, e in ipairs(console.HELP) do out[#out + 1] = ("  %-44s %s"):format(e[1], e[2]) end
    return ("helpers (h: a medium's hash, hash prefix or name%s):\n%s\n" ..
            "also: ntt (the library), policy (ntt repl POLICY), db() (the connection), repl.pretty(v)")
           :format(default_medium and (", default " .. default_medium) or "", table.concat(out, "\n"))
  end
  -- `help()` prints the list; `help` alone is echoed as the same text
  _G.help = setmetatable({}, { __call = function() io.stdout:write(help_text(), "\n") end,
                               __tostring = help_text })
  _G.db = db
  _G.media = function() return answer(console.media(db())) end
  _G.medium = function(h) return answer(console.medium(db(), medium(h))) end
  _G.problems = function(h) return answer(console.problems(db(), medium(h))) end
  _G.failing = function(h, limit) return answer(console.failing(db(), medium(h), limit)) end
  _G.kernel = function(h) return answer(console.kernel(db(), medium(h))) end
  _G.find = function(pattern, opts)
    opts = opts or {}
    if opts.medium == nil then opts.medium = default_medium end
    return answer(console.find(db(), pattern, opts))
  end
  _G.blob = function(hash) return answer(console.blob(db(), hash)) end
  _G.retry = function(h, path)
    if path == nil and default_medium then h, path = default_medium, h end
    return answer(console.retry(db(), h, path, { policy = rawget(_G, "policy") }))
  end
  _G.remount = function(h) return answer(console.remount(db(), medium(h))) end
  _G.explain = function(findings) return answer(console.explain(rawget(_G, "policy"), findings)) end
end

return {
  summary = "interactive prompt with ntt loaded and helpers over the database (optionally a policy)",
  usage = usage,
  main = function(args)
    local ntt = require "ntt"
    local default_medium, rest = nil, {}
    local i = 1
    while i <= #args do
      if args[i] == "--medium" and args[i + 1] then default_medium = args[i + 1]; i = i + 1
      elseif args[i]:match("^%-") then io.stderr:write(usage, "\n"); return 64
      else rest[#rest + 1] = args[i] end
      i = i + 1
    end
    if #rest > 1 then io.stderr:write(usage, "\n"); return 64 end
    _G.ntt = ntt
    _G.repl = require "ntt.repl"
    install(default_medium)
    if rest[1] then
      local p, err = ntt.policy.load(rest[1])
      if not p then
        io.stderr:write("ntt: ", err, "\n")
        return 2
      end
      _G.policy = p
      io.stdout:write(("policy %s loaded (not run)\n"):format(p.name or rest[1]))
    end
    if default_medium then io.stdout:write(("helpers default to medium %s\n"):format(default_medium)) end
    io.stdout:write(("ntt %s (%s); help() lists the helpers; Ctrl-D to leave\n"):format(ntt.version, _VERSION))
    require("ntt.core.repl").run()
    return 0
  end,
}
