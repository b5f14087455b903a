-- lua/ntt/md5.lua: MD5 (RFC 1321) of a short string, as 32 lowercase hex.
--
--   md5.hex(s) -> "d41d8cd98f00b204e9800998ecf8427e"
--
-- Only for names, never for content: db.partition_names derives a
-- partition's name from a long medium hash with it (the names already in
-- databases were made by md5sum, so the digest must stay MD5).
local M = {}

local MASK = 0xffffffff
local S = { 7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21 }
local K = {}
for i = 0, 63 do K[i] = math.floor(math.abs(math.sin(i + 1)) * 2 ^ 32) & MASK end

local function rotl(x, n) return ((x << n) | (x >> (32 - n))) & MASK end

function M.hex(s)
  if type(s) ~= "string" then error("md5.hex: string expected", 2) end
  local msg = s .. "\x80" .. ("\0"):rep((55 - #s) % 64) .. string.pack("<I8", #s * 8)
  local a0, b0, c0, d0 = 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476
  local w = {}
  for chunk = 1, #msg, 64 do
    for j = 0, 15 do w[j] = string.unpack("<I4", msg, chunk + 4 * j) end
    local a, b, c, d = a0, b0, c0, d0
    for i = 0, 63 do
      local f, g
      if i < 16 then f, g = (b & c) | (~b & d), i
      elseif i < 32 then f, g = (d & b) | (~d & c), (5 * i + 1) % 16
      elseif i < 48 then f, g = b ~ c ~ d, (3 * i + 5) % 16
      else f, g = c ~ (b | ~d), (7 * i) % 16 end
      f = (f + a + K[i] + w[g]) & MASK
      a, d, c = d, c, b
      b = (b + rotl(f, S[(i // 16) * 4 + i % 4 + 1])) & MASK
    end
    a0, b0, c0, d0 = (a0 + a) & MASK, (b0 + b) & MASK, (c0 + c) & MASK, (d0 + d) & MASK
  end
  return (string.pack("<I4I4I4I4", a0, b0, c0, d0):gsub(".", function(ch) return ("%02x"):format(ch:byte()) end))
end

return M
