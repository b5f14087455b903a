-- spec/support/luasrc.lua: reading ntt's own Lua sources, for the specs
-- that scan them (errors_spec, lint_spec).
--   M.ROOT                         the source tree
--   M.files(dir [, skip]) -> list  every *.lua under dir (relative to ROOT),
--                                  sorted; skip = { folder name = true }
--   M.read(path) -> text
--   M.comment_end(text, i) -> j    text:sub(i, j) is the comment that starts
--                                  with "--" at i (a line or a --[[ ]] block)
local fs = require "ntt.core.fs"

local M = {}

M.ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/support/[^/]*$") or "."

function M.files(dir, skip, out)
  out = out or {}
  for _, name in ipairs(assert(fs.readdir(M.ROOT .. "/" .. dir))) do
    local path = dir .. "/" .. name
    local st = assert(fs.stat(M.ROOT .. "/" .. path, true))
    if st.type == "directory" then
      if not (skip and skip[name]) then M.files(path, skip, out) end
    elseif name:match("%.lua$") then
      out[#out + 1] = path
    end
  end
  return out
end

function M.read(path)
  local f = assert(io.open(M.ROOT .. "/" .. path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

function M.comment_end(text, i)
  local eq = text:match("^%-%-%[(=*)%[", i)
  if eq then
    local _, e = text:find("]" .. eq .. "]", i, true)
    return e or #text
  end
  return (text:find("\n", i, true) or #text + 1) - 1
end

return M
