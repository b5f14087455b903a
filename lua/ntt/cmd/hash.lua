-- lua/ntt/cmd/hash.lua: `ntt hash [--length N] FILE...`, BLAKE3 of files
-- in the same output format as b3sum: "<hex>  <name>" per file.
local hash = require "ntt.core.hash"

local usage = [[
usage: ntt hash [--length N] FILE...

Prints the BLAKE3 hash of each FILE as "<hex>  <name>", one line per file
(the format of b3sum). --length N prints N bytes of output (default 32).
A file that cannot be read is reported on stderr; the exit code is then 1.]]

local function main(args)
  local files, length = {}, 32
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--length" or a == "-l" then
      length = math.tointeger(tonumber(args[i + 1] or ""))
      if not length or length < 0 then
        io.stderr:write("ntt hash: --length needs a non-negative integer\n", usage, "\n")
        return 2
      end
      i = i + 1
    elseif a:match("^%-%-length=") then
      length = math.tointeger(tonumber(a:sub(10)))
      if not length or length < 0 then
        io.stderr:write("ntt hash: --length needs a non-negative integer\n")
        return 2
      end
    elseif a == "-h" or a == "--help" then
      io.stdout:write(usage, "\n")
      return 0
    elseif a == "--" then
      for j = i + 1, #args do files[#files + 1] = args[j] end
      break
    else
      files[#files + 1] = a
    end
    i = i + 1
  end
  if #files == 0 then
    io.stderr:write(usage, "\n")
    return 2
  end
  local status = 0
  for _, name in ipairs(files) do
    local hex, err, ename = hash.file(name, length)
    if hex then
      if name:find("[\\\n]") then
        -- b3sum's escaping: a leading backslash marks an escaped name.
        io.stdout:write("\\", hex, "  ", (name:gsub("\\", "\\\\"):gsub("\n", "\\n")), "\n")
      else
        io.stdout:write(hex, "  ", name, "\n")
      end
    else
      io.stdout:flush()
      io.stderr:write("ntt hash: ", err, "\n")
      status = 1
      if ename == "EINTR" then break end
    end
  end
  return status
end

return {
  summary = "print BLAKE3 hashes of files (b3sum format)",
  usage = usage,
  main = main,
}
