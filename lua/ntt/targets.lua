-- lua/ntt/targets.lua: what each target of a run is, decided from content.
--
-- A file is a disk image because of what it holds, never because of its
-- name: a ROM library of .bin files is not twenty disk images, and a
-- floppy image named .flp or .001 is one.  Every entry of a folder given
-- as a target is reported as taken (and as what) or left (and why).
--
--   targets.look(path [, {blank = false}]) -> verdict
--       verdict = { image = true|false, content = "what was found",
--                   error = msg, code = errname }   (error: could not be read)
--       A file is an image when the layout probe (ntt.core.media.probe,
--       libblkid: partition table or filesystem at the usual offsets,
--       ISO9660/UDF, a Zip disk's FAT at 16384) finds a table or a
--       filesystem; or when every byte has one value and it is a whole
--       number of sectors, at least MIN_BLANK (a blank or erased medium;
--       not looked for with blank = false: that scan reads a blank medium whole);
--       or when a ddrescue mapfile that parses lies beside it (a rescue
--       whose first sectors were not read has no signature to find).
--   targets.expand(list [, opts]) -> media, report
--       list: { path | {path=, mode=}, ... }; mode "auto" | "images" | "tree"
--       (a folder's mode; default opts.mode, else "auto")
--       opts: mode=, log= (a Logger: one line per decision)
--       media: in order, { path=, as="image"|"directory"|"target",
--                          folder=dir|nil, error=, code= } (error: this
--                          target cannot be run, e.g. --images of a folder
--                          with no image)
--       (a target given twice, through a link or a "..", is in it once:
--       the later one is logged, target_duplicate)
--       report = { entries = { entry, ... }, counts = { ... } }
--         entry = { folder=, name=, taken=bool, as=, of=, reason=, why=, loss=bool }
--         counts = { folders=, image_folders=, tree_folders=, images=,
--                    companions=, in_trees=, left=, lost=, left_by={reason=n} }
--
-- Folder modes: "images" takes each entry that is an image (and its
-- mapfile and ddrescue files) as a medium and leaves the rest, each with
-- a reason; "tree" makes the folder one directory medium (every file in
-- it copied as a file); "auto" is "images" when the folder holds at least
-- one image and every entry not hidden is an image or one of its ddrescue
-- files, else "tree".  Entries left: "not_image", "directory" (not
-- descended into), "symlink" (not followed), "special" (fifo, socket,
-- device), "hidden" (a hidden entry that is not an image), "unreadable"
-- (could not be looked at: loss = true; the others were left by the mode
-- chosen).
local cmedia = require "ntt.core.media"
local fs = require "ntt.core.fs"

local M = {}

-- Misuse raises: unknown option keys, a mode that is not one of M.MODES.
local function checked(v, shape, what)
  local ok, msg = require("ntt.schema").check(v, shape, what)
  if not ok then error(msg, 3) end
  return v
end

M.MODES = { "auto", "images", "tree" }
M.MIN_BLANK = 64 * 1024    -- a blank "medium" smaller than this is just an empty file

local function what_probe_found(p)
  if p.pttype then
    return ("%s partition table, %d partition%s"):format(p.pttype, #p.partitions,
                                                         #p.partitions == 1 and "" or "s")
  end
  if p.fstype then return ("%s filesystem"):format(p.fstype) end
  local e = p.partitions[1]
  if e then
    return ("%s at offset %d"):format(e.fstype and (e.fstype .. " filesystem") or "a filesystem", e.offset or 0)
  end
  return nil
end

-- A ddrescue map beside path that parses (not path itself).
local function parsed_map(path)
  local media = require "ntt.media"
  local map = media.find_map(path)
  if not map or map == path then return nil end
  if not require("ntt.mapfile").read(map) then return nil end
  return map
end

function M.look(path, opts)
  if type(path) ~= "string" then error("targets.look: path expected", 2) end
  local blank = not (opts and checked(opts, { blank = "boolean" }, "targets.look").blank == false)
  local p, err, code = cmedia.probe(path)
  if not p then return { image = false, error = err, code = code } end
  local found = what_probe_found(p)
  if found then return { image = true, content = found } end
  local size = p.size or 0
  if blank and size >= M.MIN_BLANK and size % 512 == 0 then
    local scan, serr, scode = cmedia.scan_uniform(path, { block = 65536 })
    if not scan then return { image = false, error = serr, code = scode } end
    if scan.uniform then
      return { image = true, content = ("every byte 0x%02x: a blank or erased medium"):format(scan.byte) }
    end
  end
  local map = parsed_map(path)
  if map then
    return { image = true, content = ("no filesystem found, but a ddrescue mapfile beside it (%s)")
                                      :format(map:match("([^/]*)$")) }
  end
  return { image = false, content = "no partition table or filesystem" }
end

local function basename(p) return (p:gsub("/+$", ""):match("([^/]*)$")) end

-- dir/name, also for dir "/".
local function join(dir, name) return (dir == "/" and "" or dir) .. "/" .. name end

-- The ddrescue files of an image that sit in its folder: its mapfile (as
-- identify finds it), the map's .bak and .stall, <name>-ddrescue.log and
-- <stem>-ddrescue.log.
local function companions(path)
  local media = require "ntt.media"
  local out = {}
  local map = media.find_map(path)
  if map and map ~= path then   -- find_map looks only beside the image
    out[#out + 1] = { name = basename(map), as = "mapfile" }
    out[#out + 1] = { name = basename(map) .. ".bak", as = "ddrescue file" }
    out[#out + 1] = { name = basename(map) .. ".stall", as = "ddrescue file" }
  end
  local name = basename(path)
  local stem = name:match("^(.+)%.[^.]*$")
  out[#out + 1] = { name = name .. "-ddrescue.log", as = "ddrescue file" }
  if stem then out[#out + 1] = { name = stem .. "-ddrescue.log", as = "ddrescue file" } end
  return out
end

-- The entries of a folder: { name=, path=, hidden= }; what each is (lstat)
-- is looked at only when a mode needs it (a tree needs names only).
local function entries_of(dir, names)
  local out = {}
  for _, name in ipairs(names) do
    out[#out + 1] = { name = name, path = join(dir, name), hidden = name:sub(1, 1) == "." }
  end
  return out
end

-- e.kind: "file", "directory", "symlink", "special" (e.type the stat type)
-- or "unreadable" (e.error, e.code).
local function stat_entry(e)
  local st, err, code = fs.stat(e.path, true)
  if not st then e.kind, e.error, e.code = "unreadable", err, code
  elseif st.type == "file" then e.kind = "file"
  elseif st.type == "directory" then e.kind = "directory"
  elseif st.type == "link" then e.kind = "symlink"
  else e.kind, e.type = "special", st.type end
end

-- Could name be a ddrescue file of another entry (by name only)?  Used by
-- auto mode to keep looking past it; whether it truly belongs to an image
-- is settled once the images are known.
-- names and stems: the set of the folder's names, and of their stems
-- (name without its last extension) to the number of names with that stem.
local function maybe_companion(name, names, stems)
  for _, pat in ipairs { "^(.+)%.map$", "^(.+)%.map%.bak$", "^(.+)%.map%.stall$", "^(.+)%-ddrescue%.log$" } do
    local base = name:match(pat)
    if base then
      if names[base] then return true end
      local own = (name:match("^(.+)%.[^.]*$") == base) and 1 or 0
      if (stems[base] or 0) > own then return true end
    end
  end
  return false
end

local LEFT_WHY = {
  directory = "a directory: not descended into (give it as a target of its own)",
  symlink = "a symbolic link: not followed",
  hidden = "hidden, and not an image",
}

-- Classify the entries of one folder in mode "auto" or "images": each
-- entry gets e.verdict when it was looked at.  Returns the decided mode
-- and why; auto mode stops looking at the first entry that makes the folder
-- a tree.
local function decide(entries, mode)
  local names, stems = {}, {}
  for _, e in ipairs(entries) do
    names[e.name] = true
    local stem = e.name:match("^(.+)%.[^.]*$")
    if stem then stems[stem] = (stems[stem] or 0) + 1 end
  end
  local images, blocker = 0, nil
  for _, e in ipairs(entries) do
    stat_entry(e)
    if e.kind == "file" then
      e.verdict = M.look(e.path)
      if e.verdict.image then images = images + 1 end
    end
    if mode == "auto" and not e.hidden and not (e.verdict and e.verdict.image) then
      local maybe = e.kind == "file" and not e.verdict.error and maybe_companion(e.name, names, stems)
      if not maybe then blocker = e; break end
    end
  end
  if mode == "images" then return "images", "asked for its images" end
  if blocker then
    local what = blocker.verdict and (blocker.verdict.error or blocker.verdict.content)
                 or (blocker.kind == "special" and blocker.type) or blocker.kind
    return "tree", ("'%s' is not a disk image (%s)"):format(blocker.name, what)
  end
  if images == 0 then return "tree", "no disk image in it" end
  return "images", "every entry is a disk image or one of its ddrescue files"
end

-- The entries of a folder in images mode: taken (images, their files) or left.
local function sort_out(dir, entries)
  local by_name, out = {}, {}
  for _, e in ipairs(entries) do by_name[e.name] = e end
  for _, e in ipairs(entries) do
    if e.verdict and e.verdict.image and not e.of then
      e.as = "image"
      for _, c in ipairs(companions(e.path)) do
        local ce = by_name[c.name]
        if ce and ce ~= e and ce.kind == "file" and not (ce.verdict and ce.verdict.image) and not ce.of then
          ce.of, ce.as = e.name, c.as
        end
      end
    end
  end
  for _, e in ipairs(entries) do
    local r = { folder = dir, name = e.name }
    if e.as then
      r.taken, r.as, r.of = true, e.as, e.of
      r.why = e.as == "image" and e.verdict.content or nil
    else
      r.taken = false
      if e.kind == "unreadable" or (e.verdict and e.verdict.error) then
        r.reason, r.loss = "unreadable", true
        r.why = "could not be looked at: " .. tostring(e.error or e.verdict.error)
      elseif e.hidden then
        r.reason = "hidden"
        r.why = ("%s (%s)"):format(LEFT_WHY.hidden, e.verdict and e.verdict.content or e.type or e.kind)
      elseif e.kind == "special" then
        r.reason, r.why = "special", ("not a regular file (%s)"):format(e.type)
      elseif e.kind ~= "file" then
        r.reason, r.why = e.kind, LEFT_WHY[e.kind]
      else
        r.reason, r.why = "not_image", "not a disk image: " .. e.verdict.content
      end
    end
    out[#out + 1] = r
  end
  return out
end

local function new_report()
  return { entries = {}, counts = { folders = 0, image_folders = 0, tree_folders = 0, images = 0,
                                    companions = 0, in_trees = 0, left = 0, lost = 0, left_by = {} } }
end

local function note(report, log, r)
  local c = report.counts
  report.entries[#report.entries + 1] = r
  if r.taken then
    if r.as == "image" then c.images = c.images + 1
    elseif r.as == "directory medium" then c.in_trees = c.in_trees + 1
    else c.companions = c.companions + 1 end
  else
    c.left = c.left + 1
    c.left_by[r.reason] = (c.left_by[r.reason] or 0) + 1
    if r.loss then c.lost = c.lost + 1 end
  end
  if not log then return end
  local fields = { target = r.folder, entry = r.name, taken = r.taken, as = r.as, of = r.of,
                   reason = r.reason, why = r.why }
  local text = ("%s: %s"):format(join(r.folder, r.name),
    r.as == "directory medium" and ("in the directory medium " .. r.folder)
    or r.taken and (r.as .. (r.of and (" of " .. r.of) or "") .. (r.why and (" (" .. r.why .. ")") or ""))
             or ("left: " .. r.why))
  if r.as == "directory medium" then log:debug("target_entry", fields, text)
  elseif r.loss then log:warn("target_entry", fields, text)
  else log:info("target_entry", fields, text) end
end

local function expand_folder(t, mode, opts, media, report)
  local log = opts.log
  local dir = t:gsub("/+$", "")
  if dir == "" then dir = "/" end
  local names, err, code = fs.readdir(t)
  if not names then
    media[#media + 1] = { path = t, error = err, code = code }
    return
  end
  local c = report.counts
  c.folders = c.folders + 1
  local entries = entries_of(dir, names)
  local decided, why, sorted
  if mode == "tree" then decided, why = "tree", "asked for one directory medium"
  else decided, why = decide(entries, mode) end
  if decided == "images" then
    sorted = sort_out(dir, entries)
    -- auto takes the images only when nothing but hidden entries is left
    for _, r in ipairs(mode == "auto" and sorted or {}) do
      if not r.taken and r.reason ~= "hidden" then
        decided, why = "tree", ("'%s' is not a disk image nor one of an image's ddrescue files"):format(r.name)
        break
      end
    end
  end
  if decided == "tree" then
    c.tree_folders = c.tree_folders + 1
    if log then
      log:info("target_classified", { target = t, mode = decided, asked = mode, why = why, entries = #entries },
               ("%s: one directory medium of %d entr%s: %s%s"):format(t, #entries, #entries == 1 and "y" or "ies",
                 why, mode == "auto" and (" (--images %s takes only its images)"):format(t) or ""))
    end
    for _, e in ipairs(entries) do
      note(report, log, { folder = dir, name = e.name, taken = true, as = "directory medium" })
    end
    media[#media + 1] = { path = t, as = "directory" }
    return
  end
  c.image_folders = c.image_folders + 1
  local n = 0
  for _, r in ipairs(sorted) do if r.as == "image" then n = n + 1 end end
  if log then
    log:info("target_classified", { target = t, mode = decided, asked = mode, why = why, entries = #entries,
                                    images = n },
             ("%s: %d disk image%s: %s"):format(t, n, n == 1 and "" or "s", why))
  end
  for _, r in ipairs(sorted) do
    note(report, log, r)
    if r.as == "image" then media[#media + 1] = { path = join(dir, r.name), as = "image", folder = t } end
  end
  if n == 0 then
    media[#media + 1] = { path = t, error = ("%s: no disk image in this folder (%d entr%s left)")
                                            :format(t, #entries, #entries == 1 and "y" or "ies"), code = "ENOENT" }
  end
end

function M.expand(list, opts)
  opts = checked(opts or {}, { mode = M.MODES, log = "any" }, "targets.expand")
  local media, report = {}, new_report()
  for _, item in ipairs(list) do
    local t, mode = item, nil
    if type(item) == "table" then
      checked(item, { path = "string", mode = M.MODES }, "targets.expand")
      t, mode = item.path, item.mode
    end
    if type(t) ~= "string" then error("targets.expand: each target is a path or {path=, mode=}", 2) end
    mode = mode or opts.mode or "auto"
    local st = fs.stat(t)
    if st and st.type == "directory" then
      expand_folder(t, mode, opts, media, report)
    elseif st and mode == "tree" then
      media[#media + 1] = { path = t, error = t .. ": not a folder (--tree takes a folder)", code = "ENOTDIR" }
    else
      -- a file, a device, or what cannot be looked at: as given (identify
      -- says what is wrong with it); what the content says is logged
      if st and st.type == "file" and opts.log then
        local v = M.look(t, { blank = false })   -- inspect scans a blank image anyway
        opts.log:info("target_classified", { target = t, mode = "image", image = v.image,
                                             why = v.error or v.content },
                      ("%s: taken as an image (given by name; content: %s)"):format(t, v.error or v.content))
      end
      media[#media + 1] = { path = t, as = "target" }
    end
  end
  -- the same file or folder given twice (through a link, a path with ".."):
  -- taken once, the later one logged
  local seen, out = {}, {}
  for _, m in ipairs(media) do
    local real = not m.error and fs.realpath(m.path)
    if real and seen[real] then
      if opts.log then
        opts.log:warn("target_duplicate", { target = m.path, same_as = seen[real] },
                      ("%s: the same as %s, given before: taken once"):format(m.path, seen[real]))
      end
    else
      if real then seen[real] = m.path end
      out[#out + 1] = m
    end
  end
  return out, report
end

return M
