-- lua/ntt/cmd/recover.lua: `ntt recover [MEDIUM...] [--state S]... [--dry-run]`
-- -- files an earlier run gave up on, made pending again for the next run.
local usage = [[
usage: ntt recover [--state STATE]... [--dry-run] [MEDIUM...]

Makes the chosen files of MEDIUM (a hash, a unique hash prefix or a name;
every medium when none is given) pending again, with their attempts reset:
the next `ntt run` of the medium copies them with a fresh retry budget.
Their error history is kept; their reason and damage ranges are cleared
(the next run records them again if they still apply).  Files another
process holds claimed are left alone.

One line per file on stdout (medium, filesystem, inode, state, path and
the reason it had), and one "file_recovered" line in the ops log.

options:
  --state STATE  the files to reset, by state: failed_retryable (the
                 default), failed_permanent, skipped, damaged; may be given
                 more than once
  --dry-run      list the files only; nothing changes

Exit status: 0 done (also when no file matched); 2 a MEDIUM is unknown or
ambiguous, or the database cannot be used; 64 usage.]]

local STATES = { failed_retryable = true, failed_permanent = true, skipped = true, damaged = true }

local function parse(args)
  local o = { states = {}, media = {} }
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--state" then
      local s = args[i + 1]
      if not s or not STATES[s] then
        return nil, ("--state needs one of failed_retryable, failed_permanent, skipped, damaged (got %s)")
                    :format(tostring(s)), "EINVAL"
      end
      o.states[#o.states + 1] = s
      i = i + 1
    elseif a == "--dry-run" or a == "-n" then o.dry_run = true
    elseif a:match("^%-") then return nil, "unknown option " .. a, "EINVAL"
    else o.media[#o.media + 1] = a end
    i = i + 1
  end
  if #o.states == 0 then o.states[1] = "failed_retryable" end
  return o
end

-- A path or name for a terminal: control bytes shown as \xNN.
local function shown(s)
  return (tostring(s):gsub("[%c\127]", function(c) return ("\\x%02x"):format(c:byte()) end))
end

local function main(args)
  local o, perr = parse(args)
  if not o then
    io.stderr:write("ntt recover: ", perr, "\n", usage, "\n")
    return 64
  end
  local ntt = require "ntt"
  local util = require "ntt.core.util"
  local config = require "ntt.config"
  local log, lerr = ntt.log.open { dir = config.path("log"), level = "info", fields = { pid = util.pid() } }
  if not log then io.stderr:write("ntt: ", lerr, "\n"); return 2 end
  local db = require "ntt.db"
  local conn, derr = db.connect { autostart = true }
  if conn then
    local v, merr = db.check(conn)
    if not v then conn:close(); conn, derr = nil, merr end
  end
  if not conn then
    io.stderr:write("ntt recover: cannot use the database: ", tostring(derr), "\n")
    log:close()
    return 2
  end
  local media = {}
  if #o.media == 0 then
    local all, err = conn:exec("SELECT medium_hash, medium_human FROM medium ORDER BY added_at, medium_hash")
    if not all then io.stderr:write("ntt recover: ", tostring(err), "\n"); conn:close(); log:close(); return 2 end
    media = all
  else
    for _, name in ipairs(o.media) do
      local m, err = require("ntt.accounting").resolve(conn, name)
      if not m then io.stderr:write("ntt recover: ", tostring(err), "\n"); conn:close(); log:close(); return 2 end
      media[#media + 1] = m
    end
  end
  local rows_mod = require "ntt.copier.rows"
  local total, touched = 0, 0
  for _, m in ipairs(media) do
    local it = db.partitions(conn, m.medium_hash)
    if it then
      local rows = rows_mod.open(conn, m.medium_hash)
      local list, err = rows:recover(o.states, o.dry_run)
      if not list then
        io.stderr:write("ntt recover: ", tostring(err), "\n")
        conn:close()
        log:close()
        return 2
      end
      local paths = #list > 0 and rows:paths(list) or {}
      for _, r in ipairs(list) do
        local path = paths[rows_mod.key(r.fs_index, r.ino)]
        log:info(o.dry_run and "file_recoverable" or "file_recovered",
                 { medium = m.medium_hash, fs_index = r.fs_index, ino = r.ino, path = path, state = r.state,
                   reason = r.reason, attempts = r.attempts, dry_run = o.dry_run or false })
        io.stdout:write(("%s  p%d  ino %d  %s -> pending%s: %s  (%s)\n"):format(
          m.medium_hash, r.fs_index, r.ino, r.state, o.dry_run and " (dry run)" or "",
          path and shown(path) or "(no path)", shown(r.reason or "no reason")))
      end
      if #list > 0 then touched = touched + 1 end
      total = total + #list
    end
  end
  io.stdout:write(("%d file%s %s pending on %d medi%s\n"):format(total, total == 1 and "" or "s",
    o.dry_run and "would be made" or "made", touched, touched == 1 and "um" or "a"))
  log:info("recover_done", { files = total, media = touched, states = o.states, dry_run = o.dry_run or false })
  conn:close()
  log:close()
  return 0
end

return { summary = "make failed or skipped files pending again for the next run", usage = usage, main = main }
