-- lua/ntt/config.lua: where ntt keeps its data, and which database it uses.
--
-- The data root ("home") holds the store, the private PostgreSQL cluster,
-- logs and mount points.  It is, first match wins:
--   $NTT_HOME                  when set and not empty
--   /var/lib/ntt               when running as root
--   $XDG_DATA_HOME/ntt         when XDG_DATA_HOME is set (an absolute path)
--   ~/.local/share/ntt         otherwise ($HOME)
--
-- The database is $NTT_DB_URL when set (any libpq conninfo or URL); when it
-- is unset, db_url() returns nil, meaning: ntt's own cluster under <home>/pg.
--
--   config.home()           -> absolute path of the data root
--   config.path(...)        -> home joined with the given parts ("store", "by-hash")
--   config.db_url()         -> string | nil
local util = require "ntt.core.util"

local M = {}

local function env(name)
  local v = os.getenv(name)
  if v == nil or v == "" then return nil end
  return v
end

-- Removes trailing slashes (but keeps "/").
local function trim(p)
  p = p:gsub("/+$", "")
  if p == "" then return "/" end
  return p
end

function M.home()
  local h = env("NTT_HOME")
  if h then return trim(h) end
  if util.euid() == 0 then return "/var/lib/ntt" end
  local xdg = env("XDG_DATA_HOME")
  if xdg and xdg:sub(1, 1) == "/" then return trim(xdg) .. "/ntt" end
  local home = env("HOME")
  if not home then
    error("config: cannot find a data root: set NTT_HOME (HOME is unset)", 2)
  end
  return trim(home) .. "/.local/share/ntt"
end

function M.path(...)
  local parts = { M.home() }
  for i = 1, select("#", ...) do
    local p = select(i, ...)
    if type(p) ~= "string" then
      error(("config.path: part %d is a %s, not a string"):format(i, type(p)), 2)
    end
    p = p:gsub("^/+", ""):gsub("/+$", "")
    if p ~= "" then parts[#parts + 1] = p end
  end
  local s = table.concat(parts, "/")
  return (s:gsub("//+", "/"))
end

function M.db_url()
  return env("NTT_DB_URL")
end

return M
