-- lua/ntt/report/html.lua: a medium's condition report as one HTML page.
--
--   html.page(model) -> string
--   html.index(rows, opts) -> string    (rows: ntt.report.index's)
--
-- One self-contained file: styles inline, no script, no font or image from
-- anywhere (it opens from file:// and from a USB stick years later), and it
-- prints legibly.  Lists over the model's limit say how many more there are
-- and that the JSON report has them all.
local report = require "ntt.report"
local svg = require "ntt.report.svg"

local M = {}

local esc = svg.esc

local STYLE = [[
body{font:14px/1.45 system-ui,sans-serif;color:#111;margin:2em auto;max-width:70em;padding:0 1em}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.2em;border-bottom:1px solid #bbb;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}code,.path{font-family:ui-monospace,monospace;word-break:break-all}
.grade{display:inline-block;padding:.1em .6em;border-radius:.3em;color:#fff;font-weight:bold}
.ok{background:#3aa845}.incomplete{background:#c98a00}.corrupt{background:#d8232a}.failed{background:#6d0f12}.unknown{background:#777}
.muted{color:#666}.bad{color:#b00;font-weight:bold}.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:1em}
.swatch{display:inline-block;width:1em;height:1em;margin-right:.3em;vertical-align:middle;border:1px solid #555}
.swatch.mark{border-radius:50%;border:2px solid #000;background:#fff}
svg.imagemap{max-width:100%;height:auto;border:1px solid #ccc}
@media print{body{margin:0;max-width:none}h2{break-after:avoid}table,svg{break-inside:avoid}}
]]

-- An integer with thin spaces between thousands (HTML), anything else as is.
local function num(n)
  if n == nil then return "-" end
  local s = tostring(math.tointeger(n) or n)
  local sign, digits = s:match("^(%-?)(%d+)$")
  if not digits then return esc(s) end
  digits = digits:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  return sign .. digits:gsub(",", "&#8239;")
end

local function bytes(n)
  if not n then return "-" end
  local units, v, u = { "B", "KiB", "MiB", "GiB", "TiB" }, n, 1
  while v >= 1024 and u < #units do v = v / 1024; u = u + 1 end
  return u == 1 and ("%d B"):format(n) or ("%.1f %s (%s B)"):format(v, units[u], num(n))
end

local function pct(a, b) return (b and b > 0) and ("%.2f%%"):format(a * 100 / b) or "-" end

local function grade(h)
  h = h or "unknown"
  return ('<span class="grade %s">%s</span>'):format(esc(h), esc(h))
end

local function kv(rows)
  local out = { "<table>" }
  for _, r in ipairs(rows) do
    if r[2] ~= nil then out[#out + 1] = ("<tr><th>%s</th><td>%s</td></tr>"):format(esc(r[1]), r[2]) end
  end
  out[#out + 1] = "</table>"
  return table.concat(out)
end

local function more(list, what)
  if list.complete then return "" end
  return ('<p class="muted">%s of %s %s shown; the JSON report lists them all.</p>')
    :format(num(#list.first), num(list.count), what)
end

local function sorted_keys(t)
  local k = {}
  for key in pairs(t or {}) do k[#k + 1] = key end
  table.sort(k, function(a, b) return tostring(a) < tostring(b) end)
  return k
end

local function short_json(v)
  local s = require("ntt.json").encode(v)
  if #s > 300 then s = s:sub(1, 300) .. "…" end
  return s
end

local function identity(model)
  local m = model.medium
  local rows = {
    { "hash", "<code>" .. esc(m.hash) .. "</code>" },
    { "kind", esc(m.kind) },
    { "image", m.image_path and ('<span class="path">' .. esc(report.name(m.image_path)) .. "</span>") },
    { "map", m.map_path and ('<span class="path">' .. esc(report.name(m.map_path)) .. "</span>") },
    { "size", m.size and bytes(m.size) },
    { "health", grade(m.health) },
    { "rescued", m.rescued_pct and ("%.4f%%"):format(m.rescued_pct) },
  }
  for _, l in ipairs(model.locations or {}) do
    if l.path ~= m.image_path then
      rows[#rows + 1] = { "also at", '<span class="path">' .. esc(report.name(l.path)) .. "</span>" }
    end
  end
  local lin = model.lineage or {}
  if lin.rescue_of then
    local parts = {}
    for _, c in ipairs(lin.chain or {}) do
      parts[#parts + 1] = ("<code>%s</code> (%s, %s)"):format(esc(c.medium_hash), esc(c.medium_human or "?"),
        require("ntt.lineage").BASIS[c.basis] or tostring(c.basis))
    end
    rows[#rows + 1] = { "new rescue of", table.concat(parts, " ← ") }
  end
  if lin.rescues and #lin.rescues > 0 then
    local parts = {}
    for _, d in ipairs(lin.rescues) do parts[#parts + 1] = ("<code>%s</code>"):format(esc(d.medium_hash)) end
    rows[#rows + 1] = { "rescued again as", table.concat(parts, ", ") }
  end
  local st = {}
  for _, k in ipairs(sorted_keys(m.stages)) do st[#st + 1] = ("%s %s"):format(esc(k), esc(m.stages[k])) end
  rows[#rows + 1] = { "stages", #st > 0 and table.concat(st, "<br>") or "none yet" }
  return kv(rows)
end

local function partitions(model)
  local out = { "<table><tr><th>#</th><th class=n>offset</th><th class=n>size</th><th>type</th><th>label</th>"
                .. "<th>uuid</th><th>mounted</th><th>problems</th></tr>" }
  for _, p in ipairs(model.partitions or {}) do
    local probs = sorted_keys(p.problems)
    out[#out + 1] = ("<tr><td>p%d</td><td class=n>%s</td><td class=n>%s</td><td>%s</td><td>%s</td><td><code>%s</code></td>"
                     .. "<td>%s</td><td>%s</td></tr>"):format(p.fs_index, num(p.byte_offset), num(p.size),
      esc(p.fstype or "-"), esc(p.label or ""), esc(p.uuid or ""), esc(p.mount_status or "-"),
      esc(table.concat(probs, ", ")))
  end
  out[#out + 1] = "</table>"
  if #(model.partitions or {}) == 0 then return '<p class="muted">No filesystem recorded.</p>' end
  return table.concat(out)
end

local function inodes(model)
  local ino = model.accounting.inodes
  local out = { "<table><tr><th>state</th><th class=n>files</th><th>reasons</th></tr>" }
  for _, state in ipairs(require("ntt.states").LIST) do
    local s = ino.states and ino.states[state]
    if s then
      local reasons = {}
      for _, r in ipairs(sorted_keys(s.reasons)) do reasons[#reasons + 1] = ("%s: %s"):format(esc(r), num(s.reasons[r])) end
      out[#out + 1] = ('<tr><td>%s</td><td class="n">%s</td><td>%s</td></tr>'):format(esc(state), num(s.n),
        table.concat(reasons, "; "))
    end
  end
  out[#out + 1] = ('<tr><th>total</th><td class="n total-inodes" data-n="%d">%s</td><td>terminal %s, still pending %s; '
                   .. '%s inode rows, %s paths</td></tr></table>')
    :format(ino.sum, num(ino.sum), num(ino.terminal), num(ino.pending), num(ino.rows), num(ino.paths))
  return table.concat(out)
end

local function byte_table(model)
  local b = model.accounting.bytes
  if type(b) ~= "table" or b == require("ntt.json").null then return '<p class="muted">Not an image: no bytes to account for.</p>' end
  if b.map_error then return ('<p class="bad">The map cannot be read: %s</p>'):format(esc(b.map_error)) end
  local out = { "<table><tr><th></th><th class=n>bytes</th><th class=n>share</th></tr>" }
  out[#out + 1] = ('<tr><td>rescued</td><td class="n total-rescued" data-n="%d">%s</td><td class=n>%s</td></tr>')
    :format(b.rescued, num(b.rescued), pct(b.rescued, b.total))
  for _, k in ipairs(sorted_keys(b.by_status)) do
    local label = require("ntt.mapfile").STATUS[k] or k:gsub("_", " ")
    out[#out + 1] = ("<tr><td>not rescued: %s</td><td class=n>%s</td><td class=n>%s</td></tr>")
      :format(esc(label), num(b.by_status[k]), pct(b.by_status[k], b.total))
  end
  out[#out + 1] = ('<tr><th>total</th><td class="n total-bytes" data-n="%d">%s</td><td class=n>100%%</td></tr></table>')
    :format(b.total, num(b.total))
  out[#out + 1] = ("<p>%s files are touched by unrescued bytes (%s bytes of them).%s</p>")
    :format(num(b.files_touched), num(b.damaged_bytes),
            b.map and "" or " No mapfile: every byte of the image is taken as read.")
  return table.concat(out)
end

local function damaged(model)
  local list = model.lists.damaged
  if list.count == 0 then return "<p>No damaged file.</p>" end
  local out = { ("<p>%s damaged files: copied with their unreadable ranges recorded (the store holds zeros there).</p>")
                  :format(num(list.count)),
                "<table class=damaged><tr><th>file</th><th class=n>size</th><th>damaged ranges: file offset … +length "
                .. "(image offset)</th></tr>" }
  for _, d in ipairs(list.first) do
    local rs = {}
    for i, r in ipairs(d.ranges) do
      if i > 8 then rs[#rs + 1] = ("… %d more"):format(#d.ranges - 8); break end
      rs[#rs + 1] = ("%s +%s%s"):format(num(r.file_offset), num(r.length),
                                        r.image_offset and (" (%s)"):format(num(r.image_offset)) or "")
    end
    out[#out + 1] = ('<tr><td class="path">p%d/%s</td><td class=n>%s</td><td>%s</td></tr>'):format(d.fs_index,
      esc(d.shown_path), num(d.size), table.concat(rs, "<br>"))
  end
  out[#out + 1] = "</table>" .. more(list, "damaged files")
  return table.concat(out)
end

local function unread(model)
  local list = model.lists.unread
  if list.count == 0 then return "<p>No file was skipped or failed.</p>" end
  local out = { "<table class=unread><tr><th>file</th><th class=n>size</th><th>state</th><th>reason</th>"
                .. "<th class=n>attempts</th><th>last finding</th></tr>" }
  for _, u in ipairs(list.first) do
    out[#out + 1] = ('<tr><td class="path">p%d/%s</td><td class=n>%s</td><td>%s</td><td>%s</td><td class=n>%s</td>'
                     .. "<td><code>%s</code></td></tr>"):format(u.fs_index, esc(u.shown_path), num(u.size),
      esc(u.state), esc(u.reason or ""), num(u.attempts), esc(u.last_error and short_json(u.last_error) or ""))
  end
  out[#out + 1] = "</table>" .. more(list, "skipped or failed files")
  return table.concat(out)
end

local function diag(model)
  local d = model.diagnostics
  if d.events == 0 then return "<p>No diagnostic event.</p>" end
  local out = { ("<p>%s diagnostic events.</p><table><tr><th>action</th><th class=n>events</th></tr>"):format(num(d.events)) }
  for _, k in ipairs(sorted_keys(d.by_action)) do
    out[#out + 1] = ("<tr><td>%s</td><td class=n>%s</td></tr>"):format(esc(k), num(d.by_action[k]))
  end
  out[#out + 1] = "</table><table><tr><th>finding</th><th class=n>events</th></tr>"
  for _, k in ipairs(sorted_keys(d.by_finding)) do
    out[#out + 1] = ("<tr><td><code>%s</code></td><td class=n>%s</td></tr>"):format(esc(k), num(d.by_finding[k]))
  end
  out[#out + 1] = "</table>"
  return table.concat(out)
end

local function problems(model)
  local keys = sorted_keys(model.problems)
  local fails = model.enum_failures or {}
  local out = {}
  if #keys == 0 then out[1] = "<p>No problem recorded.</p>"
  else
    out[1] = "<table><tr><th>problem</th><th>what was recorded</th></tr>"
    for _, k in ipairs(keys) do
      out[#out + 1] = ("<tr><td>%s</td><td><code>%s</code></td></tr>"):format(esc(k), esc(short_json(model.problems[k])))
    end
    out[#out + 1] = "</table>"
  end
  out[#out + 1] = ("<p>Places the walk could not read: %s open, %s resolved; names listed twice: %s.</p>")
    :format(num(fails.errors or 0), num(fails.resolved or 0), num(fails.duplicates or 0))
  return table.concat(out)
end

local function checks(model)
  local out = { "<ul>" }
  for _, c in ipairs(model.accounting.checks or {}) do
    out[#out + 1] = ('<li class="%s">%s %s: %s</li>'):format(c.ok and "" or "bad", c.ok and "✓" or "✗", esc(c.what), esc(c.msg))
  end
  out[#out + 1] = "</ul>"
  return table.concat(out)
end

local function head(title)
  return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
          .. 'content="width=device-width, initial-scale=1"><title>%s</title><style>%s</style></head><body>\n')
    :format(esc(title), STYLE)
end

function M.page(model)
  local m = model.medium
  for _, name in ipairs(report.LISTS) do
    for _, e in ipairs(model.lists[name].first) do e.shown_path = report.name(e.path or ("(inode " .. e.ino .. ")")) end
  end
  local parts = {
    head(("ntt condition report: %s"):format(m.name or m.hash)),
    ("<h1>%s %s</h1>"):format(esc(m.name or m.hash), grade(m.health)),
    ('<p class="muted">Condition report written %s by ntt %s. Every number below comes from the catalogue; '
     .. "the JSON report holds the same content with every list whole.</p>"):format(esc(model.generated_at),
                                                                                   esc(model.ntt_version)),
    "<h2>Identity and lineage</h2>", identity(model),
    "<h2>Map of the image</h2>", svg.legend(), svg.map(model, model.lists.damaged.first),
    "<h2>Partitions and filesystems</h2>", partitions(model),
    "<h2>Files</h2>", inodes(model),
    "<h2>Bytes</h2>", byte_table(model),
    "<h2>Damaged files</h2>", damaged(model),
    "<h2>Skipped and failed files</h2>", unread(model),
    "<h2>Diagnostic events</h2>", diag(model),
    "<h2>Problems</h2>", problems(model),
    "<h2>Checks</h2>", checks(model),
    "</body></html>\n",
  }
  return table.concat(parts, "\n")
end

function M.index(rows, opts)
  local out = { head("ntt: every medium"), "<h1>Every medium</h1>",
                ('<p class="muted">Written %s. One line per medium; its name opens its condition report.</p>')
                  :format(esc(opts and opts.generated_at or os.date("!%Y-%m-%dT%H:%M:%SZ"))),
                "<table class=media><tr><th>medium</th><th>hash</th><th>kind</th><th>health</th><th class=n>rescued</th>"
                .. "<th>files by state</th><th>problems</th></tr>" }
  for _, r in ipairs(rows) do
    local states = {}
    for _, k in ipairs(sorted_keys(r.files)) do states[#states + 1] = ("%s %s"):format(esc(k), num(r.files[k])) end
    out[#out + 1] = ('<tr class="medium"><td><a href="%s">%s</a></td><td><code>%s</code></td><td>%s</td><td>%s</td>'
                     .. "<td class=n>%s</td><td>%s</td><td>%s</td></tr>"):format(esc(r.href), esc(r.name or r.hash),
      esc(r.hash:sub(1, 16)), esc(r.kind), grade(r.health), r.rescued_pct and ("%.2f%%"):format(r.rescued_pct) or "-",
      table.concat(states, ", "), esc(r.problem_keys or ""))
  end
  out[#out + 1] = "</table></body></html>\n"
  return table.concat(out, "\n")
end

return M
