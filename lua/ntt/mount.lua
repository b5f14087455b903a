-- lua/ntt/mount.lua: mounting media read-only through ntt-mount-helper.
--
-- The helper (src/mount-helper/, docs/mount-helper.md) is the only part of
-- ntt that needs root: it is run directly when ntt is root, else through
-- `sudo -n`.  Its JSON answer becomes a Lua table (JSON null -> nil).
--
--   mount.mount(hash, image [, {map=path, timeout=seconds, reader={fstype=kind}}]) -> result | nil, msg, errname
--   mount.unmount(hash [, image])           -> result | nil, msg, errname
--   mount.status(hash [, image])            -> result | nil, msg, errname
--   mount.cleanup()                         -> result | nil, msg, errname
--   mount.helper_path()                     -> path of the helper binary
--   mount.program(name [, env])             -> path of a program shipped with
--                                              ntt ($env, beside ntt, build/, PATH)
--   mount.roots_of(result)                  -> { {fs_index=, root=, fstype=, driver=} }
--                                              the mounted filesystems of a result
--
-- timeout bounds each mount attempt inside the helper (policy mount.timeout);
-- it goes on the helper's command line as --timeout (rounded up to whole
-- seconds; the helper refuses anything outside 1..3600 with EINVAL), since
-- sudo does not pass the environment on.  reader (policy mount.reader)
-- goes on as --reader FSTYPE=KIND,... (sorted, so a command line is stable).
--
-- result is the helper's object plus `exit` (its exit code) and `ok`
-- (exit == 0).  Exit 1 (nothing mountable, partial, busy) still returns the
-- result - each filesystem carries its own status and reason.  Refusals and
-- failures (exit 2, 3, 4, 5, or no JSON) return nil, message, and "EINVAL"
-- (bad arguments, an unparsable mapfile), "EPERM" (not permitted), "EIO"
-- (internal; or exit 5: a partial image whose honest view could not be set
-- up, which the helper refuses to mount raw) or the errname of a helper
-- that could not be started.
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local json = require "ntt.json"

local M = {}

M.timeout = 300   -- seconds for one helper call (each mount inside has its own)

local errnames = { [2] = "EINVAL", [3] = "EPERM", [4] = "EIO", [5] = "EIO", [6] = "ESTALE" }

local function is_file(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end

-- The binary running us: the lowest index of the global arg table.
local function self_binary()
  if type(arg) ~= "table" then return nil end
  local i = 0
  while arg[i - 1] ~= nil do i = i - 1 end
  return arg[i]
end

-- A program shipped with ntt: $ENV when set, else beside the running ntt
-- binary, else in $NTT_BUILD (default build/), else found on PATH.
function M.program(name, env)
  local set = env and os.getenv(env)
  if set and set ~= "" then return set end
  local bin = self_binary()
  local dir = bin and bin:match("^(.*)/[^/]*$")
  if dir and is_file(dir .. "/" .. name) then return dir .. "/" .. name end
  local build = os.getenv("NTT_BUILD") or "build"
  if is_file(build .. "/" .. name) then return build .. "/" .. name end
  return name
end

function M.helper_path() return M.program("ntt-mount-helper", "NTT_MOUNT_HELPER") end

-- JSON null (json.null) becomes nil, recursively.
local function denull(v)
  if v == json.null then return nil end
  if type(v) == "table" then
    for k, x in pairs(v) do v[k] = denull(x) end
  end
  return v
end

local function check_hash(hash)
  if type(hash) ~= "string" then error("mount: hash must be a string", 3) end
end

-- Runs the helper with words; returns the decoded result or nil, msg, errname.
local function run(words)
  local helper = M.helper_path()
  local argv = {}
  if util.euid() ~= 0 then argv = { "sudo", "-n" } end
  argv[#argv + 1] = helper
  for _, w in ipairs(words) do argv[#argv + 1] = w end
  local r, err, ename = proc.run { argv = argv, timeout = M.timeout }
  if not r then return nil, err, ename end
  if r.timed_out then return nil, helper .. ": timed out", "ETIMEDOUT" end
  local obj = json.decode((r.stdout or ""):match("^%s*(.-)%s*$"))
  if type(obj) ~= "table" then
    local why = (r.stderr or ""):gsub("%s+$", "")
    return nil, ("%s: no JSON answer (exit %s)%s"):format(helper, tostring(r.code or r.signal),
      why ~= "" and (": " .. why) or ""), "EIO"
  end
  obj = denull(obj)
  if obj.error then
    return nil, obj.error, errnames[r.code] or errnames[obj.code] or "EIO"
  end
  obj.exit = r.code
  obj.ok = r.code == 0
  return obj
end

function M.mount(hash, image, opts)
  check_hash(hash)
  if type(image) ~= "string" then error("mount.mount: image must be a string", 2) end
  local words = { "mount", hash, image }
  if opts and opts.map then
    words[#words + 1] = "--map"
    words[#words + 1] = opts.map
  end
  if opts and opts.expect ~= nil then
    -- the stat taken when the image was hashed: the helper attaches that file or nothing
    local e = opts.expect
    if type(e) ~= "table" then error("mount.mount: expect must be a stat table", 2) end
    local parts = {}
    for i, k in ipairs { "dev", "ino", "size", "mtime_ns", "ctime_ns" } do
      if math.type(e[k]) ~= "integer" then error("mount.mount: expect." .. k .. " must be an integer", 2) end
      parts[i] = ("%d"):format(e[k])
    end
    words[#words + 1] = "--expect"
    words[#words + 1] = table.concat(parts, ":")
  end
  if opts and opts.timeout ~= nil then
    if type(opts.timeout) ~= "number" then error("mount.mount: timeout must be a number of seconds", 2) end
    words[#words + 1] = "--timeout"
    words[#words + 1] = tostring(math.ceil(opts.timeout))   -- inf, nan: refused by the helper
  end
  if opts and opts.reader ~= nil then
    if type(opts.reader) ~= "table" then error("mount.mount: reader must be a table", 2) end
    local list = {}
    for k, v in pairs(opts.reader) do list[#list + 1] = tostring(k) .. "=" .. tostring(v) end
    table.sort(list)
    if #list > 0 then
      words[#words + 1] = "--reader"
      words[#words + 1] = table.concat(list, ",")
    end
  end
  return run(words)
end

function M.unmount(hash, image)
  check_hash(hash)
  return run { "unmount", hash, image }
end

function M.status(hash, image)
  check_hash(hash)
  return run { "status", hash, image }
end

-- The roots the later stages read: each mounted filesystem of a result.
function M.roots_of(res)
  local roots = {}
  for _, fs in ipairs((res or {}).filesystems or {}) do
    if fs.status == "mounted" and fs.mount then
      roots[#roots + 1] = { fs_index = fs.fs_index, root = fs.mount, fstype = fs.fstype, driver = fs.driver }
    end
  end
  return roots
end

function M.cleanup()
  return run { "cleanup" }
end

return M
