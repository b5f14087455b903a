-- spec/support/mediaimg.lua: small images and bytes for the media specs.
--
--   m.MIB                                   1048576
--   m.have(tool)                            is the tool on PATH
--   m.pattern(n [, seed])                   n deterministic, non-uniform bytes
--   m.mkext4(dir, name, size, files [, label]) -> path of a populated ext4 image
--   m.place(src, dst, offset)               copies src into dst at offset (multiple of 512)
local helper = require "spec.support.helper"
local proc = require "ntt.core.proc"

local M = { MIB = 1048576 }

function M.have(tool)
  local r = proc.run { argv = { "sh", "-c", 'command -v "$1"', "sh", tool } }
  return r and r.code == 0
end

-- Deterministic bytes (not uniform, not compressible to one value).
function M.pattern(n, seed)
  local t, x = {}, seed or 7
  local chunk = {}
  for i = 1, 4096 do x = (x * 1103515245 + 12345) % 2147483648; chunk[i] = string.char(x % 251) end
  local block = table.concat(chunk)
  for i = 1, n // 4096 do t[i] = block:sub(i % 7 + 1) .. block:sub(1, i % 7) end
  local s = table.concat(t)
  return s .. block:sub(1, n - #s)
end

function M.mkext4(dir, name, size, files, label)
  local root = dir .. "/" .. name .. ".d"
  helper.sh { "mkdir", "-p", root }
  for fname, data in pairs(files) do helper.write(root .. "/" .. fname, data) end
  local img = dir .. "/" .. name
  helper.sh { "truncate", "-s", tostring(size), img }
  helper.sh { "mkfs.ext4", "-q", "-F", "-L", label or "EXTL", "-d", root, img }
  return img
end

function M.place(src, dst, offset)
  helper.sh { "dd", "if=" .. src, "of=" .. dst, "bs=512", "seek=" .. (offset // 512), "conv=notrunc",
              "status=none" }
end

return M
