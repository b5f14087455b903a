-- lua/ntt/cli.lua: `ntt SUBCOMMAND ...` dispatch.
--
-- A subcommand NAME is the module ntt.cmd.NAME (hyphens become underscores);
-- it returns a table { summary = "...", usage = "...", main = function(args) -> exit code }.
-- Later capabilities add subcommands by adding modules; nothing here changes.
local embed = require "ntt.core.embed"
local fs = require "ntt.core.fs"

local M = {}

local EXIT_USAGE = 64

local function commands()
  local seen, list = {}, {}
  local function add(name)
    if not seen[name] then seen[name] = true; list[#list + 1] = name end
  end
  if embed.root then   -- a source tree in development: its commands too
    for _, f in ipairs(fs.readdir(embed.root .. "/lua/ntt/cmd") or {}) do
      local n = f:match("^([%w_]+)%.lua$")
      if n then add(n) end
    end
  end
  for _, path in ipairs(embed.list()) do
    local n = path:match("^lua/ntt/cmd/([%w_]+)%.lua$")
    if n then add(n) end
  end
  table.sort(list)
  return list
end

local function load_cmd(name)
  local mod = "ntt.cmd." .. name:gsub("-", "_")
  if not require("ntt.modules").exists(mod) then return nil end
  return require(mod)
end

function M.help(out)
  out = out or io.stdout
  out:write("usage: ntt SUBCOMMAND [options] [args]\n",
            "       ntt [lua options] [script [args]]   (a Lua 5.4 interpreter)\n\n",
            "subcommands:\n")
  for _, name in ipairs(commands()) do
    local cmd = load_cmd(name)
    if cmd then
      out:write(("  %-10s %s\n"):format(name:gsub("_", "-"), cmd.summary or ""))
    end
  end
  out:write("\n'ntt SUBCOMMAND --help' describes one subcommand.\n",
            "Environment: NTT_HOME (data root), NTT_DB_URL (use this PostgreSQL instead of\n",
            "the private cluster), NTT_LUA_PATH (load lua/ and policies/ from a source tree).\n")
end

function M.main(args)
  local name = args[1]
  if name == "--help" or name == "-h" or name == "help" then
    if args[2] then
      local cmd = load_cmd(args[2])
      if cmd then io.stdout:write(cmd.usage or cmd.summary or "", "\n"); return 0 end
    end
    M.help()
    return 0
  end
  if name == "--version" then name = "version" end
  local cmd = load_cmd(name)
  if not cmd then
    io.stderr:write(("ntt: unknown subcommand '%s'\n"):format(name))
    M.help(io.stderr)
    return EXIT_USAGE
  end
  local rest = table.move(args, 2, #args, 1, {})
  if rest[1] == "--help" or rest[1] == "-h" then
    io.stdout:write(cmd.usage or cmd.summary or "", "\n")
    return 0
  end
  local code = cmd.main(rest)
  return math.tointeger(code) or 0
end

return M
