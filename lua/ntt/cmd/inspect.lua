-- lua/ntt/cmd/inspect.lua: `ntt inspect [--json] IMAGE...`.
local json = require "ntt.json"
local media = require "ntt.media"
local identify = require "ntt.cmd.identify"

local USAGE = [[
usage: ntt inspect [--json] [--holes N] IMAGE...

Identifies each IMAGE (or block device) and prints what inspect finds: the
ddrescue mapfile beside it (<stem>.map or <image>.map: rescued %, health
grade, holes, boot sector), whether the medium is erased (one byte value
throughout), the partition table and every filesystem, and the problems
that the pipeline would record.

  --json      one JSON object per image and line
  --holes N   list at most N holes (default 20)

Exit status: 0 inspected, 1 some image could not be identified, 64 usage.]]

local human_size = identify.human_size

local function q(s) return s and ("%q"):format(s) or "-" end

local function print_report(out, target, id, r, max_holes)
  out:write(("%s  %s\n"):format(id.hash, target))
  out:write(("  size       %d (%s)\n"):format(id.size or 0, human_size(id.size or 0)))
  if r.map then
    out:write(("  mapfile    %s\n"):format(r.map_path))
    out:write(("  rescued    %.2f%%, health %s, %d hole%s\n"):format(r.rescued_pct, r.health,
              #r.holes, #r.holes == 1 and "" or "s"))
    for i, h in ipairs(r.holes) do
      if i > max_holes then out:write(("    ... %d more\n"):format(#r.holes - max_holes)); break end
      out:write(("    hole     0x%010x  %12d bytes  %s\n"):format(h.pos, h.size, h.status))
    end
    out:write(("  boot       %s\n"):format(r.boot_sector_bad and "sector 0 NOT rescued" or "sector 0 rescued"))
  else
    out:write("  mapfile    none (health unknown)\n")
  end
  out:write(("  erased     %s\n"):format(r.erased and ("yes, every byte is 0x%02x"):format(r.erased.byte) or "no"))
  local p = r.probe
  if p then
    if p.pttype then
      out:write(("  table      %s%s\n"):format(p.pttype, p.ptuuid and ("  id " .. p.ptuuid) or ""))
    else
      out:write("  table      none\n")
    end
    if p.fstype then
      out:write(("  whole disk %s  label %s  uuid %s\n"):format(p.fstype, q(p.label), p.uuid or "-"))
    end
    for _, part in ipairs(p.partitions) do
      local what = part.container and "extended container"
                   or (part.fstype and ("%s  label %s  uuid %s"):format(part.fstype, q(part.label), part.uuid or "-"))
                   or "no filesystem found"
      out:write(("  p%-3d       offset %d  size %d (%s)%s%s  %s%s\n"):format(part.fs_index, part.offset,
                part.size, human_size(part.size), part.type and "  type " or "", part.type or "", what,
                part.truncated and "  TRUNCATED" or ""))
    end
  end
  if #r.problems == 0 then
    out:write("  problems   none\n")
  else
    for _, pr in ipairs(r.problems) do
      local keys = {}
      for k in pairs(pr) do if k ~= "kind" then keys[#keys + 1] = k end end
      table.sort(keys)
      local kv = {}
      for _, k in ipairs(keys) do kv[#kv + 1] = ("%s=%s"):format(k, tostring(pr[k])) end
      out:write(("  problem    %s%s\n"):format(pr.kind, #kv > 0 and ("  " .. table.concat(kv, " ")) or ""))
    end
  end
end

-- The report without the parsed map's block list, for JSON.
local function plain(id, r)
  local o = {}
  for k, v in pairs(r) do o[k] = v end
  if r.map then
    o.map = { path = r.map_path, size = r.map.size, rescued_bytes = r.map.rescued_bytes,
              current_pos = r.map.current_pos, current_status = r.map.current_status, pass = r.map.pass }
    o.holes = json.array(r.holes)
  end
  o.problems = json.array(r.problems)
  if r.probe then o.probe.partitions = json.array(r.probe.partitions) end
  o.medium = id
  return o
end

local function main(args)
  local as_json, max_holes, targets = false, 20, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--json" then as_json = true
    elseif a == "--holes" then
      i = i + 1
      max_holes = math.tointeger(tonumber(args[i] or ""))
      if not max_holes or max_holes < 0 then
        io.stderr:write("ntt inspect: --holes needs a number\n"); return 64
      end
    elseif a:match("^%-") then
      io.stderr:write(("ntt inspect: unknown option '%s'\n%s\n"):format(a, USAGE))
      return 64
    else targets[#targets + 1] = a end
    i = i + 1
  end
  if #targets == 0 then io.stderr:write(USAGE, "\n"); return 64 end
  local failed = 0
  for _, t in ipairs(targets) do
    local id, err, code = media.identify(t)
    if not id then
      failed = failed + 1
      io.stderr:write(("ntt inspect: %s\n"):format(err))
      if as_json then io.stdout:write(json.encode { target = t, error = err, errname = code }, "\n") end
    else
      local r = media.inspect(id)
      if as_json then
        local o = plain(id, r)
        o.target = t
        io.stdout:write(json.encode(o), "\n")
      else
        print_report(io.stdout, t, id, r, max_holes)
      end
    end
  end
  return failed > 0 and 1 or 0
end

return { summary = "show an image's mapfile, health, erased state, partitions and filesystems",
         usage = USAGE, main = main }
