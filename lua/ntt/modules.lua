-- lua/ntt/modules.lua: whether a Lua module exists, asked of the module
-- searchers themselves (package.preload, the embedded sources, the paths),
-- so a missing module is told from a broken one without reading the text
-- of require's error.
--
--   modules.exists(name) -> true | false
local M = {}

function M.exists(name)
  for _, searcher in ipairs(package.searchers) do
    if type(searcher(name)) == "function" then return true end
  end
  return false
end

return M
