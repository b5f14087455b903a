-- lua/ntt/cmd/export.lua: `ntt export MEDIUM[:PATH] DEST [--bagit]` -- a
-- medium's files as real files (lua/ntt/export.lua).
local usage = [[
usage: ntt export [--bagit] [--json] MEDIUM[:PATH] DEST

Writes the files of MEDIUM (a hash, a unique hash prefix, or the medium's
name) into DEST, which must not exist or be empty: DEST/p<N>/... for each
filesystem N of the medium.  With :PATH, only that path: p<N> (the
filesystem's root), p<N>/some/dir or p<N>/some/file; DEST is then that
directory (or that file).  Names are the original bytes, modes are kept
without setuid/setgid, mtimes too, symlinks are written as symlinks, each
directory gets its mtime once its content is in.  Every blob is re-hashed
(BLAKE3) on the way: a blob that does not match its name is not written and
is reported.  Files that were never copied (damaged, skipped, failed,
pending, excluded) and device nodes, fifos and sockets are not written and
are listed.

  --bagit  make DEST a BagIt bag (RFC 8493): the files under DEST/data,
           bagit.txt, bag-info.txt (External-Identifier: the medium hash,
           Payload-Oxum), manifest-sha256.txt, tagmanifest-sha256.txt.  A
           name that is not valid UTF-8 (or holds a control byte) is
           escaped, each such byte and every "=" as =XX; the originals are
           listed in ntt-renamed.txt, what was not exported in
           ntt-not-exported.txt.
  --json   print the summary as one JSON object

Exit status: 0 every file of the path was written; 1 some were not (a blob
that does not match, a write that failed, a file never copied); 2 the
medium or path is unknown, DEST is not empty, or the database cannot be
used; 64 usage; 130 interrupted.]]

local function shown(s)
  return (tostring(s):gsub("[%c\127]", function(c) return ("\\x%02x"):format(c:byte()) end))
end

local function main(args)
  local opts, pos, as_json = {}, {}, false
  for _, a in ipairs(args) do
    if a == "--bagit" then opts.bagit = true
    elseif a == "--json" then as_json = true
    elseif a:match("^%-") then io.stderr:write(("ntt export: unknown option '%s'\n%s\n"):format(a, usage)); return 64
    else pos[#pos + 1] = a end
  end
  if #pos ~= 2 then io.stderr:write(usage, "\n"); return 64 end
  local export = require "ntt.export"
  local db = require "ntt.db"
  local name, path = export.parse(pos[1])
  local dest = pos[2]:gsub("(.)/+$", "%1")
  local conn, err = db.connect { autostart = true }
  if not conn then io.stderr:write("ntt: cannot use the database: ", tostring(err), "\n"); return 2 end
  local ok, cerr = db.check(conn)
  if not ok then io.stderr:write("ntt: ", cerr, "\n"); conn:close(); return 2 end
  local m, code
  m, err, code = require("ntt.accounting").resolve(conn, name)
  if not m then conn:close(); io.stderr:write("ntt export: ", err, "\n"); return 2 end
  local s
  s, err, code = export.run(conn, m, path, dest, opts)
  conn:close()
  if not s then
    io.stderr:write("ntt export: ", shown(err), "\n")
    return code == "EINTR" and 130 or 2
  end
  if as_json then
    io.stdout:write(require("ntt.json").encode(s), "\n")
  else
    io.stdout:write(("exported %d files (%d bytes), %d directories, %d symlinks to %s%s\n"):format(
      s.files, s.bytes, s.dirs, s.links, dest, s.oxum and (" (bag, Payload-Oxum " .. s.oxum .. ")") or ""))
  end
  for _, x in ipairs(s.mismatched) do
    io.stderr:write(("ntt export: %s: NOT WRITTEN: %s\n"):format(shown(x.path), shown(x.msg)))
  end
  for _, x in ipairs(s.failed) do
    io.stderr:write(("ntt export: %s: not written: %s\n"):format(shown(x.path), shown(x.msg)))
  end
  for _, x in ipairs(s.not_exported) do
    io.stderr:write(("ntt export: %s: not exported: %s\n"):format(shown(x.path), shown(x.why)))
  end
  return (#s.mismatched + #s.failed + #s.not_exported) > 0 and 1 or 0
end

return { summary = "write a medium's files (or one path of it) out as real files, or as a BagIt bag",
         usage = usage, main = main }
