-- lua/ntt/cmd/image.lua: `ntt image [options] DEVICE... | --more MEDIUM [DEVICE]`.
local usage = [[
usage: ntt image [--policy POLICY] [--more MEDIUM]... [run options] [DEVICE...]

Images each block DEVICE with GNU ddrescue in the phases of the policy
(default: the device policy, policies/device.lua), then runs the rest of
its stages on the image: `ntt run POLICY DEVICE...`.  An interrupted
imaging resumes from its map; a finished one is not repeated.

  --policy POLICY  the policy to run (its stages begin with "image")
  --more MEDIUM    rescue more: image the device imaged as MEDIUM again, in
                   the policy's image.more_phases, over the same image and
                   map; the image becomes a new rescue in the medium's
                   lineage.  Without DEVICE, the device path recorded at its
                   imaging is used (its sampled hash must still match).

Every other option is `ntt run`'s (-v, --debug, -q, --workers N, --replace).
Exit status: as `ntt run`.]]

local function main(args)
  local policy = "device"
  local rest = {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--policy" then
      policy = args[i + 1]
      if not policy or policy == "" then
        io.stderr:write("ntt image: --policy needs a policy\n", usage, "\n")
        return 64
      end
      i = i + 1
    elseif a == "-h" or a == "--help" then
      io.stdout:write(usage, "\n")
      return 0
    else
      rest[#rest + 1] = a
    end
    i = i + 1
  end
  if #rest == 0 then
    io.stderr:write("ntt image: a DEVICE or --more MEDIUM is required\n", usage, "\n")
    return 64
  end
  table.insert(rest, 1, policy)
  return require("ntt.cmd.run").main(rest)
end

return { summary = "image block devices with ddrescue in phases (then run the device policy)", usage = usage,
         main = main }
