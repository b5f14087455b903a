-- spec/support/badmaps.lua: mapfiles the one parser must reject, each with
-- the line it must name and what the message must say.  spec/mapfile_spec.lua
-- runs them through ntt.mapfile, spec/mapfile_helper_spec.lua through
-- ntt-mount-helper: both entry points must give the same line and reason.
--
--   badmaps.cases   { {text, line, pattern}, ... }   (pattern: after "line N: ")
--   badmaps.fuzz(seed, n) -> n texts: mutations of a valid map (some valid)
local M = {}

M.cases = {
  { "hello world\n", 1, "^status line: bad current position 'hello'" },
  { "0 x\n0 1 +\n", 1, "^status line: bad current status 'x'" },
  { "0\n0 1 +\n", 1, "^status line: bad current status %(missing%)" },
  { "0 R\n0 1 +\n", 1, "^status line: bad current status 'R'" },
  { "0 + 0\n0 1 +\n", 1, "^status line: bad pass '0'" },
  { "0 + 01\n0 1 +\n", 1, "^status line: bad pass '01'" },
  { "0 + 1 x\n0 1 +\n", 1, "^status line: too many fields" },
  { "0 +\n0 512\n", 2, "^block line needs" },
  { "0 +\n0 512 X\n", 2, "^bad block status 'X'" },
  { "0 +\n0 512 +-\n", 2, "^bad block status '%+%-'" },
  { "0 +\n0 512 +#c\n", 2, "^bad block status '%+#c'" },   -- '#' starts a comment only after a blank
  { "0 +\n0 0x 0x10 +\n", 2, "^too many fields" },
  { "0 +\n0 0xZZ +\n", 2, "^bad block size '0xZZ'" },
  { "0 +\n0 0x +\n", 2, "^bad block size '0x'" },
  { "0 +\n09 512 +\n", 2, "^bad block position '09'" },
  { "0 +\n0 01000 +\n0100 512 -\n", 3, "^block at 64 overlaps or precedes the previous block ending at 512" },  -- octal
  { "0 +\n0 512 +\n0800 512 +\n", 3, "^bad block position '0800'" },     -- 8 is no octal digit
  { "0 +\n-1 512 +\n", 2, "^bad block position '%-1'" },
  { "0 +\n+0 512 +\n", 2, "^bad block position '%+0'" },
  { "0 +\n0 512 +\n512 0 -\n", 3, "^block at 512 has size 0" },
  { "0 +\n0 99999999999999999999 +\n", 2, "^bad block size" },
  { "0 +\n0 0x8000000000000000 +\n", 2, "^bad block size" },
  { "0 +\n0x7FFFFFFFFFFFFFFF 1 +\n", 2, "^block at 9223372036854775807 is too large" },
  { "# head\n0 +\n0 1024 +\n1000 100 -\n", 4, "^block at 1000 overlaps or precedes the previous block ending at 1024" },
  { "0 +\n4096 1024 +\n0 1024 +\n", 3, "^block at 0 overlaps or precedes" },
  { "0 +\n0 1024 +\n2048 1024 -\n", 3, "^block at 2048 leaves a gap after the previous block ending at 1024" },
  { "0 +\n0 1 +\n1 1 \0\n", 3, "^NUL byte" },
  { "# only comments\n\n", 2, "^no status line" },
  { "", 1, "^no status line" },
  { "# c\n0 +\n# no blocks\n", 3, "^no block lines after the status line" },
}

local VALID = "# Mapfile. Created by GNU ddrescue version 1.27\n# current_pos  current_status  current_pass\n"
  .. "0x00300000     ?               2\n#      pos        size  status\n"
  .. "0x00000000  0x00100000  +\n0x00100000  0x00010000  *\n0x00110000  0x000F0000  -\n"
  .. "0x00200000  0x00100000  /\n0x00300000  0x00100000  ?\n"
M.VALID = VALID

local PIECES = { "0", "1", "0x", "0x10", "09", "-", "+", "?", "*", "/", "F", "#", " ", "\t", "\r",
                 "\n", "x", "00", "0x00100000", "0xFFFFFFFFFFFFFFFF", "99999999999999999999", "\0" }

-- Deterministic mutations: delete, insert or replace a few bytes or pieces.
function M.fuzz(seed, n)
  local state = seed
  local function rnd(k)          -- a small LCG: the same cases on every run
    state = (state * 1103515245 + 12345) % 2147483648
    return state % k + 1
  end
  local out = {}
  for i = 1, n do
    local s = VALID
    for _ = 1, rnd(3) do
      local at = rnd(#s)
      local op = rnd(3)
      if op == 1 then s = s:sub(1, at - 1) .. s:sub(at + rnd(4))
      elseif op == 2 then s = s:sub(1, at - 1) .. PIECES[rnd(#PIECES)] .. s:sub(at)
      else s = s:sub(1, at - 1) .. PIECES[rnd(#PIECES)] .. s:sub(at + rnd(3)) end
    end
    out[i] = s
  end
  return out
end

return M
