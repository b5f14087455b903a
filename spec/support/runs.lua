-- spec/support/runs.lua: what the specs that drive `ntt run` end to end
-- share: whether they can run here, a policy file, a medium's hash, many
-- files to copy, and watching a copy from the database.
--
--   runs.can_run([{fuse = true, tools = {...}}]) -> true, or nil and why not
--                                    (root, loop devices, a test database;
--                                    /dev/fuse and each tool on PATH too)
--   runs.tag                      a unique payload: each spec's media hash apart
--   runs.policy(dir [, overrides [, name]]) -> path of dir/name (policy.lua)
--                                    extending "default" with the Lua table
--                                    text overrides (`ntt` in scope there)
--   runs.enumerate_only(dir, home, tree) -> the result of `ntt run` of tree
--                                    through enumerate, no copy (its policy
--                                    dir/policy.lua; exit 1: files pending)
--   runs.medium_of(image)         -> the medium hash `ntt identify` gives image
--   runs.many_files(label, reps [, dirs, per]) -> dirs (20) directories of
--                                    per (100) files, each its own content
--   runs.copied(conn, h)          -> rows of medium h copied, or nil while it
--                                    has no partition
--   runs.wait_for(ok)             -> true once ok() is, false after 60 s
--   runs.wait_copied(conn, h, n)  -> the count once n rows of h are copied,
--                                    nil after 60 s
--   runs.ntt(home, argv [, timeout]) -> the result of `ntt argv...` with
--                                    NTT_HOME=home (timeout 300 s)
--   runs.run(home, argv [, timeout]) -> the same for `ntt run argv...`
--   runs.start(finally, argv, env, stderr) -> the process of `ntt argv...`
--                                    in the background with env (stdout to
--                                    null, stderr to the file stderr), killed
--                                    at the test's end (finally) if it runs
--   runs.env_of(dir [, home])     -> the environment of a run with NTT_HOME home
--                                    (dir/home) and a mount root of its own,
--                                    dir/mnt (other specs lazily unmount the
--                                    shared one when they end)
--   runs.mounts_of(h)             -> mount points whose path holds "/" .. h
--   runs.states(h)                -> medium h's inodes counted by state
--                                    ({copied = n, ...}), and their total
--   runs.problems(h)              -> medium h's problems, decoded ({} if none)
--   runs.check_store(root)        -> how many blobs the store at root holds;
--                                    raises unless each hashes to its name
--   runs.events(home, name)       -> the events named name in home/log/ops.jsonl
--   runs.db()                     -> one migrated connection to the test
--                                    database, opened on first use
--   runs.unmount()                   lazily unmounts whatever a run left
--                                    under /run/ntt/mnt (an after_each)
local helper = require "spec.support.helper"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local json = require "ntt.json"

local M = {}

function M.can_run(opts)
  if not helper.is_root() then return nil, "needs root (loop devices, mounts)" end
  if not io.open("/dev/loop-control") then return nil, "no /dev/loop-control" end
  if opts and opts.fuse and not io.open("/dev/fuse") then return nil, "no /dev/fuse" end
  if not helper.db_url() then return nil, "no test database" end
  for _, tool in ipairs(opts and opts.tools or {}) do
    if not require("spec.support.mediaimg").have(tool) then return nil, tool .. " is not installed (make deps)" end
  end
  return true
end

M.tag = ("%d-%d"):format(util.pid(), math.floor(util.now() * 1000))

function M.policy(dir, overrides, name)
  local path = dir .. "/" .. (name or "policy.lua")
  helper.write(path, 'local ntt = require "ntt"\nreturn ntt.policy.extend("default", ' .. (overrides or "{}") .. ")\n")
  return path
end

function M.enumerate_only(dir, home, tree)
  return M.run(home, { M.policy(dir, '{ stages = { "identify", "inspect", "mount", "enumerate" } }'), "--tree", tree })
end

function M.medium_of(image)
  local r = assert(proc.run { argv = { helper.ntt, "identify", "--json", image }, timeout = 60 })
  return assert(json.decode((r.stdout:match("[^\n]+")))).hash
end

function M.many_files(label, reps, dirs, per)
  local files = {}
  for d = 1, dirs or 20 do
    for f = 1, per or 100 do
      files[("d%02d/f%03d"):format(d, f)] = ("%s %s %d %d "):format(M.tag, label, d, f):rep(reps)
    end
  end
  return files
end

function M.copied(conn, h)
  local ok, rows = pcall(conn.exec, conn, ("SELECT count(*) AS n FROM inode_p_%s WHERE state = 'copied'"):format(h))
  return ok and rows and rows[1].n or nil
end

function M.wait_for(ok)
  local deadline = util.monotonic() + 60
  while util.monotonic() < deadline do
    if ok() then return true end
    util.sleep(0.02)
  end
  return false
end

function M.wait_copied(conn, h, n)
  local c
  if M.wait_for(function() c = M.copied(conn, h); return c and c >= n end) then return c end
  return nil
end

function M.ntt(home, argv, timeout)
  local full = { helper.ntt }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  return assert(proc.run { argv = full, env = { NTT_HOME = home }, timeout = timeout or 300 })
end

function M.run(home, argv, timeout)
  return M.ntt(home, { "run", table.unpack(argv) }, timeout)
end

function M.env_of(dir, home)
  helper.sh { "mkdir", "-p", dir .. "/mnt" }
  return { NTT_HOME = home or (dir .. "/home"), NTT_MOUNT_ROOT = dir .. "/mnt" }
end

function M.mounts_of(h)
  local out = {}
  for l in io.lines("/proc/self/mountinfo") do
    local mp = l:match("^%S+ %S+ %S+ %S+ (%S+)")
    if mp and mp:find("/" .. h, 1, true) then out[#out + 1] = mp end
  end
  return out
end

function M.states(h)
  local it = require("ntt.db").partition_names(h)
  local out, total = {}, 0
  for _, r in ipairs(assert(M.db():exec(("SELECT state::text AS s, count(*) AS n FROM %s GROUP BY 1"):format(it)))) do
    out[r.s] = r.n
    total = total + r.n
  end
  return out, total
end

function M.problems(h)
  local r = assert(M.db():exec("SELECT problems::text AS p FROM medium WHERE medium_hash = $1", h))
  return json.decode(r[1].p or "{}") or {}
end

function M.check_store(root)
  local r = helper.sh { "find", root .. "/by-hash", "-type", "f" }
  local n = 0
  for f in r.stdout:gmatch("[^\n]+") do
    local got = assert(require("ntt.core.hash").file(f))
    if got ~= f:match("([0-9a-f]+)$") then error(("%s: its content hashes to %s"):format(f, got), 2) end
    n = n + 1
  end
  return n
end

function M.events(home, name)
  local out = {}
  for line in io.lines(home .. "/log/ops.jsonl") do
    local e = json.decode(line)
    if e.event == name then out[#out + 1] = e end
  end
  return out
end

function M.start(finally, argv, env, stderr)
  local full = { helper.ntt }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  local p = assert(proc.spawn { argv = full, env = env, stdout = "null", stderr = stderr })
  finally(function() if p:wait(0) == nil then p:kill(9); p:wait(10) end end)
  return p
end

local conn
function M.db()
  if not conn then
    conn = assert(require("ntt.db").connect { url = assert(helper.db_url()), migrate = true })
  end
  return conn
end

-- A failed spec must not leave a mount behind for the next one.
function M.unmount()
  local r = proc.run { argv = { "findmnt", "-rn", "-o", "TARGET" }, timeout = 10 }
  for mp in (r and r.stdout or ""):gmatch("[^\n]+") do
    if mp:find("^/run/ntt/mnt/") then proc.run { argv = { "umount", "-l", mp }, timeout = 10 } end
  end
end

return M
