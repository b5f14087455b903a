-- spec/multihost_spec.lua: two hosts copying one medium into one store
-- (issue #20, docs/operations.md "Several hosts").  The hosts are network
-- namespaces on this machine joined by a veth pair (10.77.0.1, 10.77.0.2);
-- `ip netns exec` gives every command its own mount namespace too, so each
-- host mounts the medium itself.  Host A serves its private cluster
-- (`ntt db serve`); host B joins through NTT_DB_URL over TLS.  Both run
-- `ntt run --workers 2` on the same image; host B is killed (-9, every
-- process) while it holds claims; host A finishes after B's lease ran out.
--
-- The hosts share one kernel, so NTT_HOST names them, and each has a mount
-- root of its own (as separate machines have their own /run): a mount
-- point removed by one host would otherwise take the other's mount with it.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local pg = require "ntt.core.pg"
local cluster = require "ntt.cluster"
local db = require "ntt.db"

local PID = util.pid()
local NS = { a = "ntt-mh-a-" .. PID, b = "ntt-mh-b-" .. PID }
local IF = { a = "ntta" .. PID, b = "nttb" .. PID }
local ADDR = { a = "10.77.0.1", b = "10.77.0.2" }
local FILES = 2000

local function ip(args, may_fail)
  local argv = { "ip" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return helper.sh(argv, { may_fail = may_fail, timeout = 30 })
end

-- Whether namespaces and veth pairs can be made here (and why not).
local function can_netns()
  if not helper.is_root() then return nil, "needs root (network namespaces)" end
  if not require("spec.support.mediaimg").have("ip") then return nil, "no ip program (iproute2)" end
  local r = ip({ "netns", "add", NS.a }, true)
  if r.code ~= 0 then return nil, "ip netns is not available: " .. r.stderr:gsub("%s+$", "") end
  r = ip({ "link", "add", IF.a, "type", "veth", "peer", "name", IF.b }, true)
  ip({ "link", "del", IF.a }, true)
  ip({ "netns", "del", NS.a }, true)
  if r.code ~= 0 then return nil, "veth is not available: " .. r.stderr:gsub("%s+$", "") end
  return true
end

-- The pids of every process in namespace ns.
local function pids_of(ns)
  local r = ip({ "netns", "pids", ns }, true)
  local out = {}
  for p in r.stdout:gmatch("%d+") do out[#out + 1] = tonumber(p) end
  return out
end

local function kill_all(ns)
  for _ = 1, 20 do
    local left = pids_of(ns)
    if #left == 0 then return end
    for _, p in ipairs(left) do proc.run { argv = { "kill", "-9", tostring(p) }, timeout = 5 } end
    util.sleep(0.05)
  end
end

-- Mount ids of the medium's mounts as the process pid sees them.
local function mount_ids(pid, h)
  local ids = {}
  local f = io.open("/proc/" .. pid .. "/mountinfo")
  if not f then return ids end
  for l in f:lines() do
    local id, mp = l:match("^(%d+) %S+ %S+ %S+ (%S+)")
    if mp and mp:find("/" .. h, 1, true) then ids[#ids + 1] = id end
  end
  f:close()
  return ids
end

describe("two hosts", function()
  local ok, why = runs.can_run()
  if ok then ok, why = can_netns() end
  if not ok then
    io.stderr:write("multihost_spec: skipped: ", why, "\n")
    it("copy one medium into one store", function() pending(why) end)
    return
  end

  it("copy every file of one medium exactly once, interleaved, and lose nothing when one dies", function()
    local dir = helper.tmpdir("mh")
    helper.sh { "chmod", "0755", dir }   -- the server's account reaches host A's data root
    local env = {
      a = { NTT_HOME = dir .. "/a", NTT_HOST = "hosta", NTT_DB_URL = false, NTT_MOUNT_ROOT = dir .. "/mnt-a" },
      b = { NTT_HOME = dir .. "/b", NTT_HOST = "hostb", NTT_MOUNT_ROOT = dir .. "/mnt-b" },
    }
    local function on(host, argv, timeout)
      local full = { "ip", "netns", "exec", NS[host], helper.ntt }
      for _, a in ipairs(argv) do full[#full + 1] = a end
      return assert(proc.run { argv = full, env = env[host], timeout = timeout or 120 })
    end
    local function start(host, argv)
      local full = { "ip", "netns", "exec", NS[host], helper.ntt }
      for _, a in ipairs(argv) do full[#full + 1] = a end
      return assert(proc.spawn { argv = full, env = env[host], stdout = dir .. "/" .. host .. ".out",
                                 stderr = dir .. "/" .. host .. ".err" })
    end

    -- two hosts, a wire between them
    finally(function()
      for _, host in ipairs { "a", "b" } do kill_all(NS[host]) end
      proc.run { argv = { helper.ntt, "db", "stop" }, env = env.a, timeout = 60 }
      for _, host in ipairs { "a", "b" } do ip({ "netns", "del", NS[host] }, true) end
      ip({ "link", "del", IF.a }, true)
    end)
    for _, host in ipairs { "a", "b" } do ip { "netns", "add", NS[host] } end
    ip { "link", "add", IF.a, "type", "veth", "peer", "name", IF.b }
    for _, host in ipairs { "a", "b" } do
      ip { "link", "set", IF[host], "netns", NS[host] }
      ip { "-n", NS[host], "addr", "add", ADDR[host] .. "/24", "dev", IF[host] }
      ip { "-n", NS[host], "link", "set", IF[host], "up" }
      ip { "-n", NS[host], "link", "set", "lo", "up" }
    end

    -- the shared store (and tree): each host's data root links to it
    for _, host in ipairs { "a", "b" } do
      helper.sh { "mkdir", "-p", dir .. "/shared/store", dir .. "/shared/tree", env[host].NTT_HOME,
                  env[host].NTT_MOUNT_ROOT }
      helper.sh { "ln", "-s", dir .. "/shared/store", env[host].NTT_HOME .. "/store" }
      helper.sh { "ln", "-s", dir .. "/shared/tree", env[host].NTT_HOME .. "/tree" }
    end

    -- host A serves its cluster; host B keeps its own copy of the CA
    local r = on("a", { "db", "serve", "--listen", ADDR.a, "--allow", "10.77.0.0/24" })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local url = assert(r.stdout:match("NTT_DB_URL='([^']+)'"), r.stdout)
    local ca = assert(url:match("sslrootcert=([^&]+)"))
    assert.matches("sslmode=verify%-full", url)
    assert.matches("@10%.77%.0%.1:5432/", url)
    helper.sh { "cp", ca, env.b.NTT_HOME .. "/ca.crt" }
    env.b.NTT_DB_URL = url:gsub("sslrootcert=[^&]+", "sslrootcert=" .. env.b.NTT_HOME .. "/ca.crt")
    -- without TLS, or from this (the root) namespace, there is no way in
    local plain = proc.run { argv = { "ip", "netns", "exec", NS.b, "psql", (env.b.NTT_DB_URL:gsub("sslmode=verify%-full", "sslmode=disable")),
                                      "-c", "select 1" }, timeout = 30 }
    assert.is_true(plain.code ~= 0)
    assert.matches("no encryption", plain.stderr)

    -- a medium host A registers (identify, inspect, enumerate)
    local img = images.ext(dir .. "/shelf.img", { size_mb = 64, files = runs.many_files("mh", 40) })
    runs.policy(dir, '{ stages = { "identify", "inspect", "mount", "enumerate", "unmount" } }', "enum.lua")
    r = on("a", { "run", dir .. "/enum.lua", img })
    assert.is_true(r.code == 0 or r.code == 1, r.stderr .. r.stdout)
    local h = runs.medium_of(img)
    local conn = assert(pg.connect(cluster.new { root = env.a.NTT_HOME .. "/pg" }:url()))
    finally(function() conn:close() end)
    local it = db.partition_names(h)
    -- every claim and every copy of the medium, with who made it
    assert(conn:exec([[CREATE TABLE spec_claim (at timestamptz DEFAULT clock_timestamp(), fs_index int,
                                                ino bigint, worker text, prev text, prev_live bool)]]))
    assert(conn:exec("CREATE TABLE spec_copy (fs_index int, ino bigint, worker text)"))
    assert(conn:exec([[
      CREATE FUNCTION spec_track() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.state = 'pending' AND NEW.claimed_by IS NOT NULL AND NEW.claimed_by IS DISTINCT FROM OLD.claimed_by THEN
          INSERT INTO spec_claim (fs_index, ino, worker, prev, prev_live)
          VALUES (NEW.fs_index, NEW.ino, NEW.claimed_by, OLD.claimed_by,
                  OLD.claimed_by IS NOT NULL AND OLD.lease_until >= now());
        END IF;
        IF NEW.state = 'copied' AND OLD.state <> 'copied' THEN
          INSERT INTO spec_copy (fs_index, ino, worker) VALUES (NEW.fs_index, NEW.ino, OLD.claimed_by);
        END IF;
        RETURN NEW;
      END $$;]]))
    assert(conn:exec(("CREATE TRIGGER spec_track AFTER UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION spec_track()"):format(it)))
    local pending = assert(conn:exec(("SELECT count(*) AS n FROM %s WHERE state = 'pending'"):format(it)))[1].n
    assert.equal(FILES, pending)

    -- both hosts copy; short batches and a short lease
    local pol = runs.policy(dir, [[{ stages = { "identify", "inspect", "mount", "enumerate", "copy", "unmount" },
      copy = { batch = 10, lease = 3, durability = "fsync", threads = 1 } }]])
    local t0 = util.monotonic()
    local pa = start("a", { "run", "--workers", "2", pol, img })
    local pb = start("b", { "run", "--workers", "2", pol, img })
    finally(function()
      for _, p in ipairs { pa, pb } do if p:wait(0) == nil then p:kill(9); p:wait(10) end end
    end)
    local function copied_by(host)
      return assert(conn:exec("SELECT count(*) AS n FROM spec_copy WHERE worker LIKE $1", host .. ":%"))[1].n
    end
    local function held_by_b()
      return assert(conn:exec(([[SELECT fs_index, ino FROM %s WHERE state = 'pending'
                                   AND claimed_by LIKE 'hostb:%%']]):format(it)))
    end
    -- each host mounts the medium itself: its mounts are its own
    local seen_mounts = false
    local held
    local ready = runs.wait_for(function()
      if not seen_mounts and copied_by("hosta") > 0 and copied_by("hostb") > 0 then
        local ia, ib = pids_of(NS.a), pids_of(NS.b)
        local ma, mb = {}, {}
        for _, p in ipairs(ia) do for _, id in ipairs(mount_ids(p, h)) do ma[id] = true end end
        for _, p in ipairs(ib) do for _, id in ipairs(mount_ids(p, h)) do mb[id] = true end end
        if next(ma) and next(mb) then
          for id in pairs(ma) do assert.is_nil(mb[id], "host B sees host A's mount " .. id) end
          assert.same({}, mount_ids(util.pid(), h))
          -- and a mount lease each, under its own host name
          local hosts = {}
          for _, l in ipairs(assert(conn:exec("SELECT DISTINCT host FROM mount_lease WHERE medium_hash = $1 ORDER BY 1", h))) do
            hosts[#hosts + 1] = l.host
          end
          assert.same({ "hosta", "hostb" }, hosts)
          seen_mounts = true
        end
      end
      return seen_mounts and copied_by("hostb") >= FILES // 5 and #held_by_b() > 0
    end)
    assert.is_true(ready, "host B never held claims after copying; a: " .. tostring(copied_by("hosta"))
      .. ", b: " .. tostring(copied_by("hostb")) .. "\n" .. (helper.read(dir .. "/b.err") or ""))
    -- host B dies mid-batch, every process of it
    local t_kill = util.monotonic() - t0
    local a_at_kill = copied_by("hosta")
    kill_all(NS.b)
    assert.is_not_nil(pb:wait(10))
    held = held_by_b()     -- what B held when it died: A takes it only after B's lease
    assert.is_true(#held > 0, "host B held no claims when it died")
    local how, code = pa:wait(90)
    local secs = util.monotonic() - t0
    assert.equal("exit", how)
    assert.equal(0, code, (helper.read(dir .. "/a.err") or "") .. (helper.read(dir .. "/a.out") or ""))

    -- host A gave its mount lease back; B's is not A's to judge (another host)
    local leases = assert(conn:exec("SELECT host, count(*) AS n FROM mount_lease WHERE medium_hash = $1 GROUP BY 1 ORDER BY 1", h))
    assert.equal(1, #leases)
    assert.equal("hostb", leases[1].host)

    -- every file copied, exactly once, each into the one store
    local states = assert(conn:exec(("SELECT state::text AS s, count(*) AS n FROM %s GROUP BY 1"):format(it)))
    local by = {}
    for _, s in ipairs(states) do by[s.s] = s.n end
    assert.equal(FILES, by.copied)
    assert.is_nil(by.pending)
    local once = assert(conn:exec("SELECT count(*) AS n, count(DISTINCT (fs_index, ino)) AS d FROM spec_copy"))[1]
    assert.equal(FILES, once.n)
    assert.equal(FILES, once.d)
    assert.equal(FILES, runs.check_store(dir .. "/shared/store"))
    -- no claim was taken from a live one
    local stolen = assert(conn:exec("SELECT count(*) AS n FROM spec_claim WHERE prev_live"))[1].n
    assert.equal(0, stolen)
    -- what B held when it died, host A finished, after B's lease
    for _, row in ipairs(held) do
      local c = assert(conn:exec("SELECT worker FROM spec_copy WHERE fs_index = $1 AND ino = $2", row.fs_index, row.ino))
      assert.matches("^hosta:", c[1].worker)
    end
    -- both hosts copied, their claims interleaved
    local a, b = copied_by("hosta"), copied_by("hostb")
    assert.is_true(a > 0 and b > 0, ("a %d, b %d"):format(a, b))
    local switches, last = 0, nil
    for _, c in ipairs(assert(conn:exec("SELECT split_part(worker, ':', 1) AS host FROM spec_claim ORDER BY at"))) do
      if last and c.host ~= last then switches = switches + 1 end
      last = c.host
    end
    assert.is_true(switches >= 2, "claims switched hosts " .. switches .. " times")
    local workers = assert(conn:exec([[SELECT worker, count(*) AS n FROM spec_copy GROUP BY 1 ORDER BY 1]]))
    local split = {}
    for _, w in ipairs(workers) do split[#split + 1] = ("%s %d"):format(w.worker:match("^[^:]+:%d+"), w.n) end
    io.stdout:write(("\nmultihost: %d files in %.1f s; host A copied %d, host B %d (killed at %.1f s, when A had copied %d, "
      .. "holding %d claims); claims switched hosts %d times; per worker: %s\n"):format(FILES, secs, a, b, t_kill, a_at_kill,
      #held, switches,
      table.concat(split, ", ")))

    -- host B cut off from the database in the middle of a statement: its
    -- process notices within about a minute (TCP keepalives and a user
    -- timeout), instead of waiting out the kernel's two hours of silence
    local waiting = start("b", { "-e", [[
      local conn = assert(require("ntt.db").connect {})
      print("connected")
      io.stdout:flush()
      local r, err, code = conn:exec("SELECT pg_sleep(600)")
      io.stderr:write(tostring(err), " ", tostring(code), "\n")
      os.exit(r and 0 or 3)]] })
    finally(function() if waiting:wait(0) == nil then waiting:kill(9); waiting:wait(10) end end)
    assert.is_true(runs.wait_for(function() return (helper.read(dir .. "/b.out") or ""):find("connected", 1, true) ~= nil end),
                   helper.read(dir .. "/b.err") or "")
    util.sleep(1)
    ip { "-n", NS.b, "link", "set", IF.b, "down" }
    local t_cut = util.monotonic()
    local how2, code2 = waiting:wait(150)
    local cut_secs = util.monotonic() - t_cut
    assert.equal("exit", how2, "still waiting after " .. cut_secs .. " s")
    assert.equal(3, code2, helper.read(dir .. "/b.err") or "")
    assert.is_true(cut_secs < 120, ("noticed after %.0f s"):format(cut_secs))
    io.stdout:write(("multihost: host B cut off mid-statement, noticed after %.0f s\n"):format(cut_secs))
  end)
end)
