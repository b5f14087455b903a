-- lua/ntt/cmd/verify.lua: `ntt verify` -- blobs re-hashed against their
-- names, media checked, what rotted repaired (lua/ntt/verify.lua).
local usage = [[
usage: ntt verify [--all | --sample N | --oldest N | --medium MEDIUM]
                  [--rate MB/s] [--threads N] [--no-repair] [--json]

Reads blobs of the store again and BLAKE3-hashes them (several at once,
a big one on every thread); a blob that matches its name gets its
last_verified time.
  --all          every blob, and every medium checked further (default)
  --sample N     N blobs chosen at random (blobs only)
  --oldest N     the N blobs verified longest ago, never verified first
                 (blobs only)
  --medium M     the blobs medium M references (a hash, a unique hash
                 prefix, or its name), and M checked further
  --rate MB/s    read at most this many megabytes (10^6 bytes) a second
  --threads N    files hashed at once (default: one per CPU)
  --no-repair    report only
  --json         print the report as one JSON object

A medium checked further: every copied file's blob is in the store with
the file's size; its tree (tree/<medium>/p<N>/...) holds links to the
blobs; its archive reads back as recorded (the archive's BLAKE3 and each
member's).

A blob that does not match its name (or is missing) is listed with every
medium and path that uses it and recorded as a problem of those media.
It is repaired from a medium's image: mounted read-only, the file read by
one of its paths and hashed; when it hashes to the blob's name it replaces
the blob (the damaged one moved to <store>/quarantine/) and the tree links
are made again.  A second copy of a blob (made at the link limit) that does
not hash to its blob is moved to the quarantine, made again from the blob,
and the tree links to it moved to the new copy.  A medium whose image is gone is read from its archive
instead: unpacked under <data root>/unpack/ (space checked first, every
member's BLAKE3 as recorded), mounted, and removed again.  Else the blob is
recorded as lost.

Exit status: 0 everything matched, or was repaired; 1 a blob is lost, a
second copy is bad and not made again, a tree path is not a link to its
blob, or an archive does not read back as recorded; 2 the medium is
unknown or the database cannot be used; 64 usage; 130 interrupted.]]

local function shown(s)
  return (tostring(s):gsub("[%c\127]", function(c) return ("\\x%02x"):format(c:byte()) end))
end

local function parse(args)
  local o, i = { scope = "all" }, 1
  local function num(flag)
    local v = tonumber(args[i + 1])
    if not v or v <= 0 then return nil, flag .. " needs a positive number", "EINVAL" end
    i = i + 1
    return v
  end
  local chosen = 0
  while i <= #args do
    local a, err = args[i], nil
    if a == "--all" then o.scope, chosen = "all", chosen + 1
    elseif a == "--sample" or a == "--oldest" then
      o.scope, chosen = a:sub(3), chosen + 1
      o.n, err = num(a)
      if o.n then o.n = math.floor(o.n) end
    elseif a == "--medium" then
      o.scope, chosen = "medium", chosen + 1
      o.medium = args[i + 1]
      if not o.medium then err = "--medium needs a medium" end
      i = i + 1
    elseif a == "--rate" then
      local r
      r, err = num(a)
      if r then o.rate = r * 1e6 end
    elseif a == "--threads" then
      o.threads, err = num(a)
      if o.threads then o.threads = math.floor(o.threads) end
    elseif a == "--no-repair" then o.repair = false
    elseif a == "--json" then o.json = true
    else err = ("unknown argument '%s'"):format(a) end
    if err then return nil, err, "EINVAL" end
    i = i + 1
  end
  if chosen > 1 then return nil, "choose one of --all, --sample, --oldest, --medium", "EINVAL" end
  return o
end

local function print_report(r)
  local out = io.stdout
  for _, b in ipairs(r.bad) do
    out:write(("blob %s (%d bytes): %s\n"):format(b.blob, b.size, shown(b.msg)))
    for _, u in ipairs(b.uses or {}) do
      for _, p in ipairs(u.paths) do
        out:write(("  used by %s%s p%d/%s\n"):format(u.medium, u.human and (" (" .. shown(u.human) .. ")") or "",
                                                     p.fs_index, shown(p.path)))
      end
    end
    if #(b.uses or {}) == 0 then out:write("  used by no medium\n") end
    out:write(b.repaired and ("  REPAIRED from %s\n"):format(shown(b.how)) or ("  LOST: %s\n"):format(shown(b.why)))
  end
  for _, t in ipairs(r.tree) do
    out:write(("tree %s %s: %s\n"):format(t.medium, shown(t.path), t.why))
  end
  for _, a in ipairs(r.archives) do
    if not a.ok then out:write(("archive %s (%s): %s\n"):format(a.medium, a.path, shown(a.why))) end
  end
  for _, c in ipairs(r.copies or {}) do
    out:write(("copy %d of blob %s (%s): %s\n"):format(c.n, c.blob, c.path, shown(c.why)))
    out:write(c.repaired and ("  REPAIRED: made again from the blob, %d tree links moved to it\n"):format(c.relinked)
              or ("  NOT REPAIRED: %s\n"):format(shown(c.fix)))
  end
  local bad_arch = 0
  for _, a in ipairs(r.archives) do if not a.ok then bad_arch = bad_arch + 1 end end
  local fixed = 0
  for _, c in ipairs(r.copies or {}) do if c.repaired then fixed = fixed + 1 end end
  out:write(("verified %d blobs (%s): %d good, %d repaired, %d lost; %d media checked, %d tree paths wrong, "
             .. "%d of %d archives wrong, %d blob copies wrong (%d repaired)\n"):format(r.blobs,
             require("ntt.progress").bytes(r.bytes), r.good, r.repaired, r.lost, r.media, #r.tree, bad_arch,
             #r.archives, #(r.copies or {}), fixed))
end

local function main(args)
  local o, perr = parse(args)
  if not o then io.stderr:write("ntt verify: ", perr, "\n", usage, "\n"); return 64 end
  local db = require "ntt.db"
  local conn, err = db.connect { autostart = true }
  if not conn then io.stderr:write("ntt: cannot use the database: ", tostring(err), "\n"); return 2 end
  local ok, cerr = db.check(conn)
  if not ok then io.stderr:write("ntt: ", cerr, "\n"); conn:close(); return 2 end
  if o.medium then
    local m, merr = require("ntt.accounting").resolve(conn, o.medium)
    if not m then conn:close(); io.stderr:write("ntt verify: ", merr, "\n"); return 2 end
    o.medium = m.medium_hash
  end
  o.log = require("ntt.log").default()
  local r, code
  r, err, code = require("ntt.verify").run(conn, o)
  conn:close()
  if not r then
    io.stderr:write("ntt verify: ", shown(err), "\n")
    return code == "EINTR" and 130 or 2
  end
  if o.json then
    for _, b in ipairs(r.bad) do
      for _, u in ipairs(b.uses or {}) do
        for i, p in ipairs(u.paths) do u.paths[i] = ("p%d/%s"):format(p.fs_index, p.path) end
      end
    end
    local json = require "ntt.json"
    r.bad, r.tree, r.archives = json.array(r.bad), json.array(r.tree), json.array(r.archives)
    io.stdout:write(json.encode(r), "\n")
  else
    print_report(r)
  end
  return r.unrepaired > 0 and 1 or 0
end

return { summary = "re-hash blobs against their names, check trees and archives, repair from the images or their archives",
         usage = usage, main = main }
