-- lua/ntt/init.lua: require "ntt" -- the public facade.
--
-- Policies and operator scripts see only this table; the C primitives
-- (ntt.core.*) stay behind it.  Submodules load on first use so that
-- `ntt version` does not pay for a database driver.
local util = require "ntt.core.util"
local version = require "ntt.version"

if util.version ~= version then
  error(("ntt: the Lua library is version %s but the runtime is %s (check NTT_LUA_PATH)")
        :format(version, util.version), 0)
end

local M = { version = version }

-- name -> module path, loaded lazily through __index
local lazy = {
  log = "ntt.log",
  json = "ntt.json",
  progress = "ntt.progress",
  db = "ntt.db",
  cluster = "ntt.cluster",
  config = "ntt.config",
  media = "ntt.media",
  mapfile = "ntt.mapfile",
  mount = "ntt.mount",
  problems = "ntt.problems",
}

-- Policies: ntt.policy { ... }, ntt.policy.extend("default", { ... }).
M.policy = require "ntt.policy"

-- Decision rules for policies (predicates lower case, actions upper case).
do
  local rules = require "ntt.rules"
  for _, k in ipairs { "has", "all", "any", "always", "SKIP", "REMOUNT", "CONTINUE", "GIVE_UP" } do
    M[k] = rules[k]
  end
end

function M.cores() return util.cores() end
function M.now() return util.now() end
function M.interrupted() return util.interrupted() end

return setmetatable(M, {
  __index = function(t, k)
    local path = lazy[k]
    if path then
      local mod = require(path)
      rawset(t, k, mod)
      return mod
    end
    return nil
  end,
})
