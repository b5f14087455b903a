-- lua/ntt/cmd/identify.lua: `ntt identify [--json] TARGET...`.
local json = require "ntt.json"
local media = require "ntt.media"

local USAGE = [[
usage: ntt identify [--json] TARGET...

Prints the medium hash of each TARGET (a disk image, a block device or a
directory) and the facts it was derived from.  An image is named by BLAKE3
of its whole content, first 32 hex characters (`b3sum -l 16`), unreadable
sectors as zeros; an image named <hash>.img keeps that hash.  A block
device is named by its sampled hash: BLAKE3 of
"SIZE:<bytes>|MODEL:<m>|SERIAL:<s>|" + the first MiB + the last MiB, first
32 hex characters (printed as "sampled" for images too: a lineage hint).
A directory hashes its canonical path.  Empty or unreadable images are
refused.

  --json   one JSON object per target and line (failures carry "error")

Exit status: 0 every target identified, 1 some could not be, 64 usage.]]

local function human_size(n)
  local units, i, v = { "B", "KiB", "MiB", "GiB", "TiB" }, 1, n
  while v >= 1024 and i < #units do v = v / 1024; i = i + 1 end
  return i == 1 and ("%d B"):format(n) or ("%.1f %s"):format(v, units[i])
end

local function print_ident(out, target, id)
  out:write(("%s  %s\n"):format(id.hash, target))
  local rows = {
    { "kind", id.kind }, { "human", id.human },
    { "size", id.size and ("%d (%s)"):format(id.size, human_size(id.size)) },
    { "model", id.model }, { "serial", id.serial },
    { "sampled", id.kind == "image" and id.sampled_hash or nil },
    { "path", id.image_path },
    { "mapfile", id.kind == "image" and (id.map_path or "none") or nil },
    { "unreadable", id.unreadable_bytes and ("%d bytes read as zeros"):format(id.unreadable_bytes) },
  }
  for _, r in ipairs(rows) do
    if r[2] ~= nil then out:write(("  %-10s %s\n"):format(r[1], tostring(r[2]))) end
  end
end

local function main(args)
  local as_json, targets = false, {}
  for _, a in ipairs(args) do
    if a == "--json" then as_json = true
    elseif a:match("^%-") then
      io.stderr:write(("ntt identify: unknown option '%s'\n%s\n"):format(a, USAGE))
      return 64
    else targets[#targets + 1] = a end
  end
  if #targets == 0 then io.stderr:write(USAGE, "\n"); return 64 end
  local failed = 0
  for _, t in ipairs(targets) do
    local id, err, code = media.identify(t)
    if not id then
      failed = failed + 1
      io.stderr:write(("ntt identify: %s\n"):format(err))
      if as_json then
        io.stdout:write(json.encode { target = t, error = err, errname = code }, "\n")
      end
    elseif as_json then
      id.target = t
      io.stdout:write(json.encode(id), "\n")
    else
      print_ident(io.stdout, t, id)
    end
  end
  return failed > 0 and 1 or 0
end

return {
  summary = "print the medium hash of images, devices or directories",
  usage = USAGE,
  main = main,
  human_size = human_size,
}
