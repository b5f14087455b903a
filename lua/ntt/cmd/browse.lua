-- lua/ntt/cmd/browse.lua: `ntt browse [MOUNTPOINT] [--medium H ...]
-- [--foreground]` and `ntt browse --stop MOUNTPOINT` -- the media's
-- original trees as a read-only FUSE view (lua/ntt/browse.lua).
local usage = [[
usage: ntt browse [MOUNTPOINT] [--medium H ...] [--foreground]
       ntt browse --stop MOUNTPOINT

Mounts a read-only view of the media at MOUNTPOINT (default: browse/ under
the data root, made when missing), with no link made anywhere:

  MOUNTPOINT/<medium hash>/p<N>/<original path, byte-exact>
  MOUNTPOINT/<medium hash>/damaged.txt   damaged files, never shown as files
  MOUNTPOINT/<medium hash>/missing.txt   files not shown: skipped, failed,
                                         pending, excluded, devices, ...
  MOUNTPOINT/<medium name>               a symlink to <medium hash>

Copied files are read from their blobs in the store; symlinks show their
original targets; sizes, mtimes and modes are the medium's (without write
bits, setuid or setgid); the owner is the user who mounted the view.  The
view is what the database held when it was mounted: mount it again to see
media copied since.

  --medium H    only this medium (a hash, a unique prefix or its name);
                may be given more than once.  Default: every enumerated medium.
  --foreground  stay in the foreground until the view is unmounted (^C
                unmounts it)
  --stop        unmount the view at MOUNTPOINT

Exit status: 0 mounted (or stopped); 2 a medium is unknown, MOUNTPOINT is
not a directory or already holds a view, the database cannot be used, or
the view could not be mounted; 64 usage; 130 interrupted.]]

local function fail(msg)
  io.stderr:write("ntt browse: ", tostring(msg), "\n")
  return 2
end

local function parse(args)
  local o = { media = {} }
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--medium" and args[i + 1] then o.media[#o.media + 1] = args[i + 1]; i = i + 1
    elseif a == "--foreground" then o.foreground = true
    elseif a == "--stop" then o.stop = true
    elseif a:match("^%-") then return nil, ("unknown option '%s'"):format(a), "EINVAL"
    elseif o.mountpoint then return nil, "one MOUNTPOINT", "EINVAL"
    else o.mountpoint = a end
    i = i + 1
  end
  if o.stop and (not o.mountpoint or #o.media > 0 or o.foreground) then return nil, "--stop takes MOUNTPOINT alone", "EINVAL" end
  return o
end

local function main(args)
  local o, perr = parse(args)
  if not o then io.stderr:write("ntt browse: ", perr, "\n", usage, "\n"); return 64 end
  local browse = require "ntt.browse"
  local config = require "ntt.config"
  local fs = require "ntt.core.fs"
  if o.stop then
    local ok, err = browse.stop(o.mountpoint)
    if not ok then return fail(err) end
    return 0
  end
  local mp = o.mountpoint
  if not mp then
    mp = config.path("browse")
    local ok, err = fs.mkdirp(mp, 493)
    if not ok then return fail(err) end
  end
  local db = require "ntt.db"
  local conn, err = db.connect { autostart = true }
  if not conn then return fail("cannot use the database: " .. tostring(err)) end
  local ok, cerr = db.check(conn)
  if not ok then conn:close(); return fail(cerr) end
  local media, code
  media, err, code = browse.media(conn, o.media)
  if not media then conn:close(); return fail(err) end
  local tmp = config.path("tmp")
  ok, err = fs.mkdirp(tmp, 448)
  if not ok then conn:close(); return fail(err) end
  local snap = ("%s/browse-%d.snapshot"):format(tmp, require("ntt.core.util").pid())
  local c
  c, err, code = browse.snapshot(conn, media, snap)
  conn:close()
  if not c then return code == "EINTR" and 130 or fail(err) end
  local function say()
    os.remove(snap)   -- read whole by the daemon before it mounted
    io.stdout:write(("browse: %d media (%d files, %d directories, %d symlinks; %d damaged and %d other paths listed) at %s\n")
      :format(c.media, c.files, c.dirs, c.links, c.damaged, c.missing, mp))
    io.stdout:flush()
  end
  ok, err, code = browse.start(mp, snap, { foreground = o.foreground, on_mounted = say })
  os.remove(snap)
  if not ok then return code == "EINTR" and 130 or fail(err) end
  if not o.foreground then say() end
  return 0
end

return { summary = "mount a read-only view of the media's original trees (FUSE), or --stop it",
         usage = usage, main = main }
