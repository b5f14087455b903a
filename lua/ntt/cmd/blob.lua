-- lua/ntt/cmd/blob.lua: `ntt blob HASH` -- who holds a blob, and where it is.
local usage = [[
usage: ntt blob [--json] HASH

Every medium and path whose file has content HASH (a BLAKE3 blob, 64 hex
digits), and the blob itself: its size as recorded, its file in the store
(<data root>/store/by-hash/AA/BB/HASH), whether that file exists and its
size there.  --json: one JSON document {blob, known, size, store_path,
exists, stored_size, holders = [{medium, name, fs_index, path, state}]}.

Exit status: 0 the blob is known and its file exists; 1 it is unknown, or
recorded but its file is missing or of another size; 2 could not run (HASH
is not 64 hex digits, the database); 64
usage.]]

local function main(args)
  local lookup = require "ntt.lookup"
  local as_json, hash = false, nil
  for _, a in ipairs(args) do
    if a == "--json" then as_json = true
    elseif a:match("^%-") or hash then io.stderr:write(usage, "\n"); return 64
    else hash = a:lower() end
  end
  if not hash then io.stderr:write(usage, "\n"); return 64 end
  return lookup.with_db("blob", function(conn)
    local console = require "ntt.console"
    local b, err, code = console.blob(conn, hash)
    if not b then return lookup.fail("blob", err, code) end
    local good = b.known and b.exists and b.stored_size == b.size
    if as_json then lookup.json_out(b); return good and 0 or 1 end
    local out = {}
    out[#out + 1] = ("blob %s  %s"):format(b.blob, b.known and ("%d bytes"):format(b.size) or "not in the database")
    out[#out + 1] = ("  store %s  %s"):format(console.shown(b.store_path),
      b.exists and ("present, %d bytes%s"):format(b.stored_size, b.known and b.stored_size ~= b.size and " (size differs!)" or "")
      or "missing")
    out[#out + 1] = ("  held by %d path%s"):format(#b.holders, #b.holders == 1 and "" or "s")
    for _, h in ipairs(b.holders) do
      out[#out + 1] = ("  %s  p%d /%s  %s"):format(h.medium, h.fs_index, console.shown(h.path), h.state)
    end
    io.stdout:write(table.concat(out, "\n"), "\n")
    return good and 0 or 1
  end)
end

return { summary = "every medium and path holding a blob, and where the blob is in the store",
         usage = usage, main = main }
