-- spec/support/mediaimg.lua: small images and bytes for the media specs.
--
--   m.MIB                                   1048576
--   m.have(tool)                            is the tool on PATH
--   m.pattern(n [, seed])                   n deterministic, non-uniform bytes
--   m.mkext4(dir, name, size, files [, label]) -> path of a populated ext4 image
--   m.place(src, dst, offset)               copies src into dst at offset (multiple of 512)
--   m.partial_disk(dir, tag) -> img, want   a 12 MiB MBR disk: p1 ext4 with six 128 KiB files
--                                           (f2.bin and f5.bin over 8 KiB map holes) and sub/deep.txt,
--                                           p2 a 1440 KiB FAT of twelve ~100 KiB files, the image cut
--                                           at 9 MiB + 700 KiB; disk.map beside it; want: the numbers
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

-- The first data block of name in an ext image (debugfs).
local function first_block(img, name)
  local r = helper.sh { "debugfs", "-R", "blocks /" .. name, img }
  return tonumber(r.stdout:match("%d+"))
end

function M.partial_disk(dir, tag)
  local images = require "spec.support.images"
  local MiB = M.MIB
  local files = {}
  for i = 1, 6 do files[("f%d.bin"):format(i)] = (string.char(96 + i)):rep(128 * 1024) .. tag end
  files["sub/deep.txt"] = "deep " .. tag
  local ext = images.ext(dir .. "/p1.img", { size_mb = 8, files = files })
  local fat_files = {}
  for i = 1, 12 do fat_files[("FILE%02d.BIN"):format(i)] = (string.char(64 + i)):rep(100 * 1024 - 7) .. tag:sub(1, 7) end
  local fat = images.fat(dir .. "/p2.img", { kb = 1440, files = fat_files })
  local img = images.mbr(dir .. "/disk.img", { size_mb = 12, parts = {
    { start_mb = 1, size_mb = 8, type = 0x83, image = ext },
    { start_mb = 9, size_mb = 2, type = 0x01, image = fat } } })
  local holes = {}
  for _, name in ipairs { "f2.bin", "f5.bin" } do holes[#holes + 1] = MiB + first_block(ext, name) * 4096 + 4096 end
  table.sort(holes)
  local blocks, pos = {}, 0
  for _, h in ipairs(holes) do
    blocks[#blocks + 1] = { pos, h - pos, "+" }
    blocks[#blocks + 1] = { h, 8192, "-" }
    pos = h + 8192
  end
  blocks[#blocks + 1] = { pos, 12 * MiB - pos, "+" }
  images.mapfile(dir .. "/disk.map", blocks)
  images.truncate(img, 9 * MiB + 700 * 1024)
  return img, { damaged = { "f2.bin", "f5.bin" }, size = 12 * MiB, image_size = 9 * MiB + 700 * 1024,
                ext_files = 7, fat_files = 12 }
end

return M
