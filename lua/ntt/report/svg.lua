-- lua/ntt/report/svg.lua: the picture of an image and its ddrescue map.
--
--   svg.map(model, damaged) -> string (one <svg> element)
--
-- In the manner of ddrescueview: the image's bytes as a grid of cells read
-- left to right, top to bottom, each cell coloured by the worst status of
-- the bytes it stands for (a single bad sector shows); under it a band with
-- the partitions at their offsets; a mark on the cell where each damaged
-- file's first unrescued byte lies, whose <title> names the file.
local M = {}

local COLS, CELL, GAP = 64, 14, 1
local WIDTH = COLS * CELL

-- worst first; colours as archivists know them from ddrescueview
M.STATUS = {
  { "-", "bad sector", "#d8232a" },
  { "/", "non-scraped", "#2f6fdb" },
  { "*", "non-trimmed", "#e6c229" },
  { "?", "non-tried", "#9a9a9a" },
  { "+", "rescued", "#3aa845" },
}
local RANK, COLOUR = {}, {}
for i, s in ipairs(M.STATUS) do RANK[s[1]], COLOUR[s[1]] = i, s[3] end

local function esc(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
                                         ["'"] = "&#39;" }))
end
M.esc = esc

-- How many cells, and how many bytes each: at most 64 x 40 cells, at least
-- 512 bytes (a sector) per cell.
local function layout(total)
  local cells = math.max(1, math.min(COLS * 40, (total + 511) // 512))
  local per = (total + cells - 1) // cells
  return math.max(1, (total + per - 1) // per), per
end

local function cell_xy(i)
  return (i % COLS) * CELL, (i // COLS) * CELL
end

function M.map(model, damaged)
  local size = model.medium.size or 0
  local map = model.map
  if type(map) ~= "table" or not map.runs then map = nil end
  local total = math.max(size, map and map.size or 0)
  if total <= 0 then return '<p class="muted">The image is empty: no map to draw.</p>' end
  local ncell, per = layout(total)
  local worst = {}
  local runs = map and map.runs or { { pos = 0, size = total, status = "+" } }
  for _, r in ipairs(runs) do
    local first, last = r.pos // per, math.min(ncell - 1, (r.pos + r.size - 1) // per)
    for c = first, last do
      local w = worst[c]
      if not w or RANK[r.status] < RANK[w] then worst[c] = r.status end
    end
  end
  local rows = (ncell + COLS - 1) // COLS
  local grid_h = rows * CELL
  local band_y = grid_h + 10
  local height = band_y + 40
  local out = {}
  local function add(s) out[#out + 1] = s end
  add(('<svg xmlns="http://www.w3.org/2000/svg" class="imagemap" role="img" viewBox="0 0 %d %d" width="%d" height="%d">')
      :format(WIDTH, height, WIDTH, height))
  add(('<title>Map of %d bytes: %d cells of %d bytes</title>'):format(total, ncell, per))
  add('<g class="cells">')
  for c = 0, ncell - 1 do
    local x, y = cell_xy(c)
    local st = worst[c] or "?"
    add(('<rect x="%d" y="%d" width="%d" height="%d" fill="%s" data-status="%s"/>')
        :format(x, y, CELL - GAP, CELL - GAP, COLOUR[st] or "#9a9a9a", esc(st)))
  end
  add('</g>')
  -- partitions: a band under the grid, at scale
  add(('<g class="partitions"><rect x="0" y="%d" width="%d" height="24" fill="#f2f2f2" stroke="#888"/>'):format(band_y, WIDTH))
  for _, p in ipairs(model.partitions or {}) do
    local x0 = math.floor((p.byte_offset or 0) * WIDTH / total)
    local w = math.max(2, math.floor((p.size or 0) * WIDTH / total))
    add(('<rect class="partition" x="%d" y="%d" width="%d" height="24" fill="#cfe0f5" stroke="#245">'
         .. '<title>p%d %s at %d, %d bytes</title></rect>')
        :format(x0, band_y, math.min(w, WIDTH - x0), p.fs_index, esc(p.fstype or "?"), p.byte_offset or 0, p.size or 0))
    add(('<text x="%d" y="%d" font-size="11" fill="#123">p%d %s</text>'):format(x0 + 3, band_y + 16, p.fs_index,
        esc(p.fstype or "")))
  end
  add('</g>')
  -- a mark per damaged file, on the cell of its first unrescued byte
  add('<g class="damage-marks">')
  for _, d in ipairs(damaged or {}) do
    local at
    for _, r in ipairs(d.ranges or {}) do
      if r.image_offset then at = r.image_offset; break end
    end
    if at and at < total then
      local x, y = cell_xy(math.min(ncell - 1, at // per))
      add(('<g class="damage-mark" data-path="%s"><title>%s (p%d, %d bytes damaged, first at image offset %d)</title>'
           .. '<circle cx="%d" cy="%d" r="4" fill="#fff" stroke="#000" stroke-width="2"/></g>')
          :format(esc(d.shown_path), esc(d.shown_path), d.fs_index, d.damaged_bytes or 0, at,
                  x + (CELL - GAP) // 2, y + (CELL - GAP) // 2))
    end
  end
  add('</g></svg>')
  return table.concat(out, "\n")
end

function M.legend()
  local out = { '<ul class="legend">' }
  for _, s in ipairs(M.STATUS) do
    out[#out + 1] = ('<li><span class="swatch" style="background:%s"></span>%s <code>%s</code></li>'):format(s[3], s[2], s[1])
  end
  out[#out + 1] = '<li><span class="swatch mark"></span>damaged file (hover for its name)</li></ul>'
  return table.concat(out)
end

return M
