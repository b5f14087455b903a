-- lua/ntt/cmd/status.lua: `ntt status [MEDIUM...]` -- where every medium stands,
-- and the accounting of one (lua/ntt/accounting.lua).
local usage = [[
usage: ntt status [--json]
       ntt status [--json] MEDIUM...

Without MEDIUM: one line per medium -- its hash and name, kind, health and
rescued %, which stages have completed, file counts by state, and the kinds
of problems recorded.

A new rescue of a medium is marked [rescue of HASH8], a medium rescued
again [rescued again N].

With MEDIUM (a hash, a unique hash prefix, or the medium's name): its
accounting.  Every inode of the medium, by state and reason (terminal, or
still pending), and every byte of the image, rescued or not per its ddrescue
map, with how many files the unrescued bytes touch; the totals are checked
against the walk's recorded count and the map, and a mismatch is printed as
an error.  Then the medium's recorded problems, its lineage (the older
rescues it is a new rescue of, how many of the older one's lost files it
holds copied, and its later rescues) and the places its walk could not read.
Other paths where a byte-identical copy of the image was found are listed
as "also at".  --json: one JSON object per medium, one per line.

A private cluster that is stopped is started for the answer and stopped
again; with none yet (a fresh data root) the answer is "no database yet"
and nothing is created.

Exit status: 0 every total checks; 1 a total does not check; 2 a MEDIUM is
unknown or ambiguous, or the database cannot be used; 64 usage.]]

local STAGES = { { "identified_at", "id" }, { "inspected_at", "insp" }, { "mounted_at", "mnt" },
                 { "enum_done", "enum" }, { "copy_done", "copy" }, { "verified_at", "ver" },
                 { "archived_at", "arch" } }

-- A path or name for a terminal: control bytes shown as \xNN.
local function shown(s)
  return (tostring(s):gsub("[%c\127]", function(c) return ("\\x%02x"):format(c:byte()) end))
end

-- Every medium, one line each (the SQL of the list is the list's own).
local function list(conn, as_json)
  local json = require "ntt.json"
  local media = assert(conn:exec([[
    SELECT medium_hash, medium_human, kind, health, rescued_pct, size,
           identified_at::text, inspected_at::text, mounted_at::text, enum_done::text,
           copy_done::text, verified_at::text, archived_at::text,
           (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(problems) k
             WHERE k <> ALL (]] .. require("ntt.problems").NOT_KINDS_SQL .. [[)) AS problem_keys,
           jsonb_array_length(coalesce(problems->'diagnostic_events', '[]'::jsonb)) AS events,
           rescue_of, (SELECT count(*) FROM medium l WHERE l.rescue_of = medium.medium_hash) AS rescues
      FROM medium ORDER BY added_at, medium_hash]]))
  local counts = {}
  for _, row in ipairs(assert(conn:exec(
      "SELECT medium_hash, state::text AS state, count(*) AS n FROM inode GROUP BY 1, 2"))) do
    counts[row.medium_hash] = counts[row.medium_hash] or {}
    counts[row.medium_hash][row.state] = row.n
  end
  if as_json then
    for _, m in ipairs(media) do m.files = counts[m.medium_hash] or {} end
    io.stdout:write(json.encode(json.array(media)), "\n")
    return 0
  end
  if #media == 0 then io.stdout:write("no media yet\n"); return 0 end
  for _, m in ipairs(media) do
    local done = {}
    for _, s in ipairs(STAGES) do if m[s[1]] then done[#done + 1] = s[2] end end
    local c = counts[m.medium_hash] or {}
    local states, total = {}, 0
    for state, n in pairs(c) do states[#states + 1] = ("%s=%d"):format(state, n); total = total + n end
    table.sort(states)
    if total > 0 then states[#states + 1] = ("total=%d"):format(total) end
    local lin = {}
    if m.rescue_of then lin[#lin + 1] = "rescue of " .. m.rescue_of:sub(1, 8) end
    if m.rescues > 0 then lin[#lin + 1] = ("rescued again %d"):format(m.rescues) end
    io.stdout:write(("%s  %-24s %-9s %-10s %6s  stages: %-28s files: %s%s%s\n"):format(
      m.medium_hash, shown(m.medium_human or "?"):sub(1, 24), m.kind, m.health or "-",
      m.rescued_pct and ("%.1f%%"):format(m.rescued_pct) or "-",
      #done > 0 and table.concat(done, ",") or "-",
      #states > 0 and table.concat(states, " ") or "-",
      m.problem_keys and ("  problems: " .. m.problem_keys) or "",
      #lin > 0 and ("  [" .. table.concat(lin, ", ") .. "]") or ""))
  end
  return 0
end


local function pct(n, total)
  if total == 0 then return "-" end
  return ("%.2f%%"):format(n * 100.0 / total)
end

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out, function(a, b) return tostring(a) < tostring(b) end)
  return out
end

-- The accounting of one medium, for people.
local function show(r)
  local out = {}
  local function say(fmt, ...) out[#out + 1] = fmt:format(...) end
  local m, ino, b = r.medium, r.inodes, r.bytes
  local done = {}
  for _, s in ipairs(STAGES) do if m[s[1]] then done[#done + 1] = s[2] end end
  say("medium %s  %s  %s  health %s  rescued %s", m.medium_hash, shown(m.medium_human or "?"), m.kind,
      m.health or "-", m.rescued_pct and ("%.1f%%"):format(m.rescued_pct) or "-")
  if m.image_path then say("  image %s%s", shown(m.image_path), m.map_path and ("  map " .. shown(m.map_path)) or "") end
  for _, l in ipairs(r.locations) do
    if l.path ~= m.image_path then
      say("  also at %s  (seen %s .. %s)", shown(l.path), l.first_seen:sub(1, 19), l.last_seen:sub(1, 19))
    end
  end
  say("  stages: %s", #done > 0 and table.concat(done, ",") or "-")
  say("inodes: %d rows%s, %d paths", ino.rows,
      ino.recorded and (" (walks recorded %d)"):format(ino.recorded) or "", ino.paths)
  local S = require "ntt.states"
  for _, state in ipairs(S.LIST) do
    local s = ino.states[state]
    if s then
      local reasons = {}
      for _, reason in ipairs(sorted_keys(s.reasons)) do
        reasons[#reasons + 1] = ("%s: %d"):format(shown(reason), s.reasons[reason])
      end
      say("  %-17s %10d%s", state, s.n, #reasons > 0 and "  " .. table.concat(reasons, "; ") or "")
    end
  end
  say("  %-17s %10d  (terminal %d, still pending %d)", "total", ino.sum, ino.terminal, ino.pending)
  if b then
    if b.map_error then
      say("bytes: %d in the image; its map cannot be read: %s", b.size, shown(b.map_error))
    else
      say("bytes: %d%s", b.total, b.map and (" (image file %d, map %d)"):format(b.size, b.map_size)
                                   or " (no mapfile: every byte of the image taken as read)")
      if b.map_kept then
        say("  (the map kept at inspect: the image and map files now hold the later rescue %s)", b.map_kept)
      end
      say("  %-17s %10d  %s", "rescued", b.rescued, pct(b.rescued, b.total))
      local parts = {}
      for _, k in ipairs(sorted_keys(b.by_status)) do
        parts[#parts + 1] = ("%s %d"):format(require("ntt.mapfile").STATUS[k] or (k:gsub("_", " ")), b.by_status[k])
      end
      say("  %-17s %10d  %s%s", "not rescued", b.unrescued, pct(b.unrescued, b.total),
          #parts > 0 and ("  (%s; %d ranges)"):format(table.concat(parts, ", "), b.holes) or "")
      say("  files touched by unrescued bytes: %d (%d bytes)", b.files_touched, b.damaged_bytes)
    end
  end
  local keys = sorted_keys(r.problems)
  if #keys > 0 then
    local parts = {}
    for _, k in ipairs(keys) do
      local v = r.problems[k]
      parts[#parts + 1] = type(v) == "table" and #v > 0 and ("%s (%d)"):format(k, #v) or k
    end
    say("problems: %s", table.concat(parts, ", "))
  else
    say("problems: none recorded")
  end
  local lin = r.lineage
  if lin and lin.rescue_of then
    local parts = {}
    for _, c in ipairs(lin.chain) do
      parts[#parts + 1] = ("%s (%s, %s)"):format(c.medium_hash, shown(c.medium_human or "?"),
                                                 require("ntt.lineage").BASIS[c.basis] or tostring(c.basis))
    end
    say("lineage: a new rescue of %s", table.concat(parts, " <- "))
    local c = lin.recovered
    if c then
      say("  of its %d files skipped, failed, damaged or pending: %d copied here, %d found but not copied, %d not found",
          c.lost, c.recovered, c.not_copied, c.not_found)
      say("  of its %d unreadable places: %d read here", c.places, c.places_read)
    end
  end
  if lin and #lin.rescues > 0 then
    local parts = {}
    for _, d in ipairs(lin.rescues) do
      parts[#parts + 1] = ("%s (%s%s)"):format(d.medium_hash, shown(d.medium_human or "?"),
                                               d.depth > 1 and (", via " .. d.rescue_of:sub(1, 8)) or "")
    end
    say("lineage: rescued again as %s", table.concat(parts, ", "))
  end
  local f = r.enum_failures
  say("unreadable places: %d open, %d resolved, %d names listed twice", f.errors, f.resolved, f.duplicates)
  for _, e in ipairs(f.first or {}) do
    say("  p%d /%s: %s", e.fs_index, shown(e.path), shown(e.msg or e.err or "?"))
  end
  for _, d in ipairs(f.first_duplicates or {}) do say("  p%d /%s: listed twice", d.fs_index, shown(d.path)) end
  say("checks:")
  for _, c in ipairs(r.checks) do say("  %-5s %s: %s", c.ok and "ok" or "ERROR", c.what, c.msg) end
  io.stdout:write(table.concat(out, "\n"), "\n")
end

local function account(conn, names, as_json)
  local json = require "ntt.json"
  local accounting = require "ntt.accounting"
  local media = {}
  for _, name in ipairs(names) do
    local m, err = accounting.resolve(conn, name)
    if not m then
      io.stderr:write("ntt status: ", err, "\n")
      return 2   -- unknown (ENOENT) or ambiguous (EAMBIGUOUS)
    end
    media[#media + 1] = m
  end
  local code = 0
  for _, m in ipairs(media) do
    local r, err = accounting.report(conn, m)
    if not r then io.stderr:write("ntt status: ", tostring(err), "\n"); return 2 end
    if as_json then io.stdout:write(json.encode(r), "\n") else show(r) end
    for _, c in ipairs(r.checks) do
      if not c.ok then
        io.stderr:write(("ntt status: %s: %s does not check: %s\n"):format(m.medium_hash, c.what, c.msg))
        code = 1
      end
    end
  end
  return code
end

local function main(args)
  local db = require "ntt.db"
  local as_json, wanted = false, {}
  for _, a in ipairs(args) do
    if a == "--json" then as_json = true
    elseif a:match("^%-") then io.stderr:write(usage, "\n"); return 64
    else wanted[#wanted + 1] = a end
  end
  -- a private cluster that is not running is started for the answer and
  -- stopped again; none at all is no database yet (ntt.lookup.connect)
  local conn, err, ecode, stop = require("ntt.lookup").connect()
  if not conn and ecode == "ENOENT" and #wanted == 0 then
    io.stdout:write(as_json and "[]\n" or (err .. "\n"))
    return 0
  end
  if not conn then io.stderr:write("ntt: cannot use the database: ", tostring(err), "\n"); return 2 end
  local ok, cerr = db.check(conn)
  local code = 2
  if not ok then io.stderr:write("ntt: ", cerr, "\n")
  elseif #wanted == 0 then code = list(conn, as_json) else code = account(conn, wanted, as_json) end
  if stop then stop(conn) else conn:close() end
  return code
end

return { summary = "where every medium stands; one medium's inodes and bytes, accounted for",
         usage = usage, main = main }
