-- lua/ntt/cmd/status.lua: `ntt status [HASH...]` -- where every medium stands.
local usage = [[
usage: ntt status [--json] [HASH...]

One line per medium: its hash and name, kind, health and rescued %, which
stages have completed, file counts by state, and the kinds of problems
recorded.  With HASH (or a unique prefix), only those media.]]

local STAGES = { { "identified_at", "id" }, { "inspected_at", "insp" }, { "mounted_at", "mnt" },
                 { "enum_done", "enum" }, { "copy_done", "copy" }, { "verified_at", "ver" },
                 { "archived_at", "arch" } }

local function main(args)
  local db = require "ntt.db"
  local json = require "ntt.json"
  local as_json, wanted = false, {}
  for _, a in ipairs(args) do
    if a == "--json" then as_json = true
    elseif a:match("^%-") then io.stderr:write(usage, "\n"); return 64
    else wanted[#wanted + 1] = a end
  end
  local conn, err = db.connect { autostart = true }
  if not conn then io.stderr:write("ntt: cannot use the database: ", tostring(err), "\n"); return 2 end
  local ok, cerr = db.check(conn)
  if not ok then io.stderr:write("ntt: ", cerr, "\n"); conn:close(); return 2 end
  local media = assert(conn:exec([[
    SELECT medium_hash, medium_human, kind, health, rescued_pct, size,
           identified_at::text, inspected_at::text, mounted_at::text, enum_done::text,
           copy_done::text, verified_at::text, archived_at::text,
           (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(problems) k) AS problem_keys,
           jsonb_array_length(coalesce(problems->'diagnostic_events', '[]'::jsonb)) AS events
      FROM medium ORDER BY added_at, medium_hash]]))
  local counts = {}
  for _, row in ipairs(assert(conn:exec(
      "SELECT medium_hash, state::text AS state, count(*) AS n FROM inode GROUP BY 1, 2"))) do
    counts[row.medium_hash] = counts[row.medium_hash] or {}
    counts[row.medium_hash][row.state] = row.n
  end
  conn:close()
  local selected = {}
  for _, m in ipairs(media) do
    local keep = #wanted == 0
    for _, w in ipairs(wanted) do
      if m.medium_hash:sub(1, #w) == w then keep = true end
    end
    if keep then selected[#selected + 1] = m end
  end
  if #wanted > 0 and #selected == 0 then
    io.stderr:write("ntt status: no medium matches ", table.concat(wanted, ", "), "\n")
    return 1
  end
  if as_json then
    for _, m in ipairs(selected) do m.files = counts[m.medium_hash] or {} end
    io.stdout:write(json.encode(json.array(selected)), "\n")
    return 0
  end
  if #selected == 0 then io.stdout:write("no media yet\n"); return 0 end
  for _, m in ipairs(selected) do
    local done = {}
    for _, s in ipairs(STAGES) do if m[s[1]] then done[#done + 1] = s[2] end end
    local c = counts[m.medium_hash] or {}
    local states = {}
    for state, n in pairs(c) do states[#states + 1] = ("%s=%d"):format(state, n) end
    table.sort(states)
    io.stdout:write(("%s  %-24s %-9s %-10s %6s  stages: %-28s files: %s%s\n"):format(
      m.medium_hash, (m.medium_human or "?"):sub(1, 24), m.kind, m.health or "-",
      m.rescued_pct and ("%.1f%%"):format(m.rescued_pct) or "-",
      #done > 0 and table.concat(done, ",") or "-",
      #states > 0 and table.concat(states, " ") or "-",
      m.problem_keys and ("  problems: " .. m.problem_keys) or ""))
  end
  return 0
end

return { summary = "where every medium stands: stages, file states, problems", usage = usage, main = main }
