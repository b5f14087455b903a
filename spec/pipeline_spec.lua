-- spec/pipeline_spec.lua: `ntt run` end to end on real images, a real
-- database, real loop and FUSE mounts and real kernel errors.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local hash = require "ntt.core.hash"
local json = require "ntt.json"
local runs = require "spec.support.runs"

local MiB = images.MiB
local tag, policy, medium_of, many_files = runs.tag, runs.policy, runs.medium_of, runs.many_files

local run, db = runs.run, runs.db

local function inodes(h)
  local name = h:len() <= 55 and ("inode_p_" .. h) or nil
  return assert(db():exec(("SELECT ino, fs_index, state::text AS state, reason, blobid, size, attempts, errors::text AS errors, damage::text AS damage FROM %s ORDER BY fs_index, ino"):format(name)))
end

local function paths(h)
  return assert(db():exec(("SELECT p.fs_index, p.path, i.blobid, i.state::text AS state FROM path_p_%s p JOIN inode_p_%s i USING (fs_index, ino) ORDER BY 1, 2"):format(h, h)))
end

local function problems(h)
  local r = assert(db():exec("SELECT problems::text AS p, copy_done::text AS copy_done, enum_done::text AS enum_done FROM medium WHERE medium_hash = $1", h))
  return json.decode(r[1].p), r[1]
end

local data_blocks = images.ext_blocks

-- Every blob in the store hashes to its name; their number.
local function check_store(home) return runs.check_store(home .. "/store") end

describe("ntt run", function()
  local ok, why = runs.can_run { fuse = true }
  if not ok then
    it("runs the pipeline end to end", function() pending(why) end)
    return
  end

  after_each(runs.unmount)

  it("copies a clean two-partition image, maps every path to its blob, and a second run does nothing", function()
    local dir = helper.tmpdir("pipe")
    local p1 = images.ext(dir .. "/p1.img", { size_mb = 8, files = {
      ["a.txt"] = "alpha " .. tag, ["sub/b.bin"] = ("b"):rep(70000), ["sub/dup.txt"] = "same content",
      ["name\nwith newline"] = "nl", ["back\\nslash"] = "bs", ["\xff\xfeinvalid"] = "bytes" } })
    local p2 = images.ext(dir .. "/p2.img", { size_mb = 8, files = {
      ["c.txt"] = "gamma " .. tag, ["dup-again.txt"] = "same content", ["empty"] = "" } })
    local img = images.mbr(dir .. "/disk.img", { size_mb = 20, parts = {
      { start_mb = 1, size_mb = 8, image = p1 }, { start_mb = 10, size_mb = 8, image = p2 } } })
    local home = dir .. "/home"
    local r = run(home, { policy(dir), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("copied:%s+9 %(8 new, 1 deduplicated%)", r.stdout)
    local h = medium_of(img)
    -- both filesystems, distinct inode sets; every file copied with its blob
    local files = {}
    for _, row in ipairs(paths(h)) do
      if row.state == "copied" then files[row.fs_index .. ":" .. row.path] = row.blobid end
    end
    assert.equal(hash.sum("alpha " .. tag), files["1:a.txt"])
    assert.equal(hash.sum(("b"):rep(70000)), files["1:sub/b.bin"])
    assert.equal(hash.sum("nl"), files["1:name\nwith newline"])
    assert.equal(hash.sum("bs"), files["1:back\\nslash"])
    assert.equal(hash.sum("bytes"), files["1:\xff\xfeinvalid"])
    assert.equal(hash.sum("gamma " .. tag), files["2:c.txt"])
    assert.equal(hash.sum(""), files["2:empty"])
    assert.equal(files["1:sub/dup.txt"], files["2:dup-again.txt"])
    -- the two ext4 filesystems number their inodes alike (root 2, then 11, 12,
    -- ...): the same numbers, kept apart by fs_index
    local seen, shared = {}, 0
    for _, row in ipairs(inodes(h)) do
      assert.is_true(row.state == "copied" or row.state == "non_file", row.state)
      seen[row.ino] = seen[row.ino] or {}
      seen[row.ino][row.fs_index] = true
    end
    for _, fss in pairs(seen) do if fss[1] and fss[2] then shared = shared + 1 end end
    assert.is_true(shared >= 3, "inode numbers in both filesystems: " .. shared)
    assert.equal(8, check_store(home))
    local _, m = problems(h)
    assert.truthy(m.copy_done)
    -- again: nothing to do, and it says so
    r = run(home, { "-v", policy(dir), img })
    assert.equal(0, r.code, r.stderr)
    assert.matches("enumerate_skipped.*already enumerated", r.stderr)
    assert.matches("copy_skipped.*nothing pending", r.stderr)
    assert.matches("copied:%s+0 ", r.stdout)
    -- and nothing is left mounted or attached
    local l = helper.sh { "losetup", "-a" }
    assert.is_nil(l.stdout:find(img, 1, true))
  end)

  it("decides each unreadable file of a truncated FAT floppy within 2 s and records why", function()
    local dir = helper.tmpdir("fat")
    local files = {}
    for i = 1, 12 do files[("FILE%02d.BIN"):format(i)] = (string.char(64 + i)):rep(100 * 1024 - 7) .. tag:sub(1, 7) end
    local img = images.fat(dir .. "/floppy.img", { kb = 1440, files = files })
    images.truncate(img, 700 * 1024)
    local home = dir .. "/home"
    -- the policy's on_problem hears every problem recorded
    local pol = policy(dir, '{ hooks = { on_problem = function(h, kind) print("heard " .. h .. " " .. kind) end } }')
    local r = run(home, { pol, img })
    assert.equal(1, r.code, r.stderr .. r.stdout)          -- finished, with skipped files
    local h = medium_of(img)
    local pr = problems(h)
    -- where the honest view tells a read past the image's end apart
    -- (view:beyond_eof), that decides; else the kernel's I/O error lines
    local by_view = false
    for _, ev in ipairs(pr.diagnostic_events or {}) do
      for _, c in ipairs(ev.checks) do if c == "view:beyond_eof" then by_view = true end end
    end
    local reason = by_view and "DIAGNOSTIC_SKIP:BEYOND_EOF" or "IO_ERROR_CONFIRMED"
    local copied, skipped = 0, 0
    for _, row in ipairs(inodes(h)) do
      if row.state == "copied" then
        copied = copied + 1
      elseif row.state == "skipped" then
        skipped = skipped + 1
        assert.equal(reason, row.reason)
      end
    end
    assert.is_true(copied >= 5, "readable files copied: " .. copied)
    assert.is_true(skipped >= 5, "unreadable files skipped: " .. skipped)
    assert.equal(12, copied + skipped)
    assert.equal(skipped, #pr.diagnostic_events, json.encode(pr.diagnostic_events))
    for _, ev in ipairs(pr.diagnostic_events) do
      assert.equal("skipped", ev.action)
      assert.equal(10, ev.retry_count)
      local checks = table.concat(ev.checks, ",")
      assert.matches("detected_io_error", checks)
      assert.matches(by_view and "detected_beyond_eof" or "dmesg:io_error", checks)
      assert.matches("mount_check:ok", checks)
      assert.truthy(ev.worker_id and ev.timestamp and ev.exception_type)
      assert.is_true(#ev.exception_msg <= 100)
    end
    -- decided within 2 s of the first failure, per file
    for _, row in ipairs(inodes(h)) do
      if row.state == "skipped" then
        local errs = json.decode(row.errors)
        local function secs(ts)
          local Y, M, D, h, m, s = ts:match("(%d+)-(%d+)-(%d+)T(%d+):(%d+):([%d.]+)Z")
          return ((tonumber(D) * 24 + tonumber(h)) * 60 + tonumber(m)) * 60 + tonumber(s)
        end
        local first = secs(errs[1].at)
        local decided
        for _, ev in ipairs(pr.diagnostic_events) do
          if ev.ino == row.ino then decided = secs(ev.timestamp) end
        end
        assert.is_true(decided - first <= 2.0, ("ino %d decided after %.2f s"):format(row.ino, decided - first))
      end
    end
    assert.truthy(pr.partial_image)
    -- the seed's query interface runs unchanged against it
    local q = assert(db():exec([[
      SELECT event->>'action' as action, COUNT(*) as count
        FROM medium, jsonb_array_elements(problems->'diagnostic_events') as event
       WHERE medium_hash = $1 GROUP BY 1 ORDER BY 2 DESC]], h))
    assert.equal("skipped", q[1].action)
    assert.equal(skipped, q[1].count)
    local heard = {}
    for kind in r.stdout:gmatch("heard " .. h .. " (%S+)") do heard[kind] = (heard[kind] or 0) + 1 end
    assert.equal(skipped, heard.diagnostic_event)
    assert.equal(1, heard.partial_image)
    -- the rule that decided counts its hits in the run's row
    local run_row = assert(db():exec("SELECT rule_hits::text AS hits FROM run WHERE policy = $1", pol))
    assert.equal(1, #run_row)
    local hits = json.decode(run_row[1].hits)
    local label = by_view and '2: any(detected_beyond_eof, dmesg:beyond_eof, view:beyond_eof) -> skip "DIAGNOSTIC_SKIP:BEYOND_EOF"'
                  or '4: all(detected_io_error, dmesg:io_error) -> skip "IO_ERROR_CONFIRMED"'
    assert.equal(skipped, hits[label], run_row[1].hits)
    -- the seed's summary of a medium whose files ended past its image
    if by_view then
      assert.is_true(pr.beyond_eof_detected)
      assert.equal(skipped, pr.skip_count)
    end
  end)

  it("records files over the holes of a partial ext4 image as damaged, never as zero-filled blobs", function()
    local dir = helper.tmpdir("holes")
    local files = {}
    for i = 1, 8 do files[("f%d.bin"):format(i)] = (string.char(96 + i)):rep(256 * 1024) .. tag end
    local img = images.ext(dir .. "/disk.img", { size_mb = 8, block = 4096, files = files })
    -- find where f5's data lies, then make the map say that area was never read
    local blocks = data_blocks(img, "f5.bin")
    local lo, hi = blocks[1] * 4096, (blocks[#blocks] + 1) * 4096
    images.mapfile(dir .. "/disk.map", { { 0, lo, "+" }, { lo, hi - lo, "-" }, { hi, 8 * MiB - hi, "+" } })
    local home = dir .. "/home"
    local r = run(home, { policy(dir), img })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    local h = medium_of(img)
    local by_state = {}
    for _, row in ipairs(inodes(h)) do by_state[row.state] = (by_state[row.state] or 0) + 1 end
    assert.equal(1, by_state.damaged)
    assert.equal(7, by_state.copied)
    for _, row in ipairs(paths(h)) do
      if row.path == "f5.bin" then
        assert.equal("damaged", row.state)
        assert.is_nil(row.blobid)
      end
    end
    for _, row in ipairs(inodes(h)) do
      if row.state == "damaged" then
        local d = json.decode(row.damage)
        assert.equal(0, d[1].file_offset)
        assert.is_true(d[1].length > 0)
      end
    end
    -- no blob of zeros stands in for the damaged file
    local zeros = hash.sum(("\0"):rep(256 * 1024 + #tag))
    assert.is_nil(io.open(("%s/store/by-hash/%s/%s/%s"):format(home, zeros:sub(1, 2), zeros:sub(3, 4), zeros)))
    assert.equal(7, check_store(home))
  end)

  it("mounts nothing and stores nothing when the mapfile is rejected, and exits non-zero", function()
    local dir = helper.tmpdir("badmap")
    local files = { ["f1.bin"] = ("p"):rep(256 * 1024) .. tag, ["f2.bin"] = ("q"):rep(256 * 1024) .. tag }
    local img = images.ext(dir .. "/disk.img", { size_mb = 8, block = 4096, files = files })
    -- a hole over f2 in a map whose status line says pass 0: both of ntt's
    -- readers reject it (line 3), so the holes are unknown and the image is
    -- never read raw
    local blocks = data_blocks(img, "f2.bin")
    local lo, hi = blocks[1] * 4096, (blocks[#blocks] + 1) * 4096
    helper.write(dir .. "/disk.map", ("# Mapfile\n# current_pos current_status current_pass\n0x0 + 0\n"
      .. "0x0 0x%X +\n0x%X 0x%X -\n0x%X 0x%X +\n"):format(lo, lo, hi - lo, hi, 8 * MiB - hi))
    local home = dir .. "/home"
    local r = run(home, { policy(dir), img })
    assert.are_not.equal(0, r.code, r.stderr .. r.stdout)
    local h = medium_of(img)
    local probs = problems(h)
    assert.matches("disk%.map: line 3: status line: bad pass '0'", probs.mapfile_invalid.message)
    assert.matches("line 3: status line: bad pass '0'", json.encode(probs.mount_failed))
    local n = db():exec(("SELECT count(*) AS n FROM inode_p_%s WHERE state = 'copied'"):format(h))
    assert.equal(0, n and tonumber(n[1].n) or 0)
    assert.equal("", helper.sh({ "find", home, "-type", "f", "-path", "*/store/by-hash/*" }).stdout)
    assert.is_nil(helper.sh({ "losetup", "-a" }).stdout:find(img, 1, true))
  end)

  it("salvages a damaged file on request: readable bytes stored, unrescued ranges as zeros, still damaged", function()
    local dir = helper.tmpdir("salvage")
    local files = {}
    for i = 1, 4 do files[("f%d.bin"):format(i)] = (string.char(96 + i)):rep(256 * 1024) .. tag end
    local img = images.ext(dir .. "/disk.img", { size_mb = 8, block = 4096, files = files })
    -- the map says the middle 64 KiB of f3's data were never read
    local blocks, listing = data_blocks(img, "f3.bin")
    assert.is_true(#blocks >= 64, listing)
    local lo = blocks[17] * 4096
    local hi = (blocks[32] + 1) * 4096
    assert.equal(16 * 4096, hi - lo, "f3's blocks 17-32 are contiguous")
    images.mapfile(dir .. "/disk.map", { { 0, lo, "+" }, { lo, hi - lo, "-" }, { hi, 8 * MiB - hi, "+" } })
    local home = dir .. "/home"
    local r = run(home, { policy(dir, '{ copy = { damaged = "salvage" } }'), img })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    assert.matches("damaged:%s+1 %(1 salvaged", r.stdout)
    local h = medium_of(img)
    local damaged
    for _, row in ipairs(inodes(h)) do
      if row.state == "damaged" then
        assert.is_nil(damaged)
        damaged = row
      elseif row.state ~= "non_file" then
        assert.equal("copied", row.state)
      end
    end
    assert.truthy(damaged)
    assert.matches("salvaged", damaged.reason)
    local d = json.decode(damaged.damage)
    assert.equal(1, #d)
    assert.equal(16 * 4096, d[1].file_offset)
    assert.equal(16 * 4096, d[1].length)
    -- the blob: f3 with exactly the unrescued range as zeros (the honest
    -- view would have failed the copy had the engine read the hole)
    local want = files["f3.bin"]
    want = want:sub(1, 16 * 4096) .. ("\0"):rep(16 * 4096) .. want:sub(32 * 4096 + 1)
    assert.equal(hash.sum(want), damaged.blobid)
    local blob = ("%s/store/by-hash/%s/%s/%s"):format(home, damaged.blobid:sub(1, 2), damaged.blobid:sub(3, 4),
                                                      damaged.blobid)
    assert.equal(hash.sum(want), (assert(hash.file(blob))))
    assert.equal(4, check_store(home))
  end)

  it("copies a plain directory tree as a directory medium with one thread", function()
    local dir = helper.tmpdir("dirmed")
    local src = dir .. "/roms"
    images.files(src, { ["GBA/Game (USA).zip"] = "rom1 " .. tag, ["GBA/Other.zip"] = "rom2",
                        ["NES/Zelda.nes"] = "rom3", ["NES/sub/x.txt"] = "" })
    local home = dir .. "/home"
    local r = run(home, { "-v", policy(dir, "{ copy = { threads = 1 } }"), src })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("threads=1", r.stderr)
    assert.matches("copied:%s+4 ", r.stdout)
    assert.equal(4, check_store(home))
  end)

  it("loses nothing when a worker is killed mid-batch, and four workers copy each file once", function()
    local dir = helper.tmpdir("kill")
    local files = many_files("kill", 200)
    local img = images.ext(dir .. "/many.img", { size_mb = 64, files = files })
    local home = dir .. "/home"
    local pol = policy(dir, "{ copy = { batch = 50, lease = 2, durability = 'fsync', threads = 1 } }")
    local p = assert(proc.spawn { argv = { helper.ntt, "run", pol, img }, env = { NTT_HOME = home },
                                  stdout = "null", stderr = "null" })
    local h = medium_of(img)
    runs.wait_copied(db(), h, 100)
    p:kill(9)
    p:wait()
    util.sleep(2.5)   -- the killed worker's lease runs out
    local before = assert(runs.copied(db(), h))
    local r = run(home, { "--workers", "4", pol, img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local rows = inodes(h)
    local copied = 0
    for _, row in ipairs(rows) do
      if row.state == "copied" then
        copied = copied + 1
        assert.equal(hash.sum(files[""] or "x") ~= row.blobid, true)
      end
    end
    assert.equal(2000, copied)
    assert.equal(2000, check_store(home))
    -- nothing half-written left under a final name; stale temps only in tmp
    local t = helper.sh { "find", home .. "/store", "-path", "*/by-hash/*", "-name", "*.tmp" }
    assert.equal("", t.stdout)
    -- each inode copied once: what the four workers say they copied adds up
    -- to what was left, and the run's summary counts all of them
    local workers, total = 0, nil
    for line in io.lines(home .. "/log/ops.jsonl") do
      local e = json.decode(line)
      if e and e.event == "worker_done" then workers = workers + e.copied end
      if e and e.event == "copied" then total = e.copied end
    end
    assert.equal(2000 - before, total)
    assert.is_true(workers > 0 and workers < total, "the other workers copied " .. workers .. " of " .. total)
    assert.equal(2000 - before, tonumber(r.stdout:match("copied:%s+(%d+)")))
  end)

  it("counts in the run's summary the batches a worker wrote before it was killed", function()
    local dir = helper.tmpdir("wkill")
    local img = images.ext(dir .. "/w.img", { size_mb = 64, files = many_files("wkill", 200) })
    local home = dir .. "/home"
    local pol = policy(dir, "{ copy = { batch = 50, durability = 'fsync', threads = 1 } }")
    local out = dir .. "/run.out"
    local p = assert(proc.spawn { argv = { helper.ntt, "run", "--workers", "3", pol, img }, env = { NTT_HOME = home },
                                  stdout = out, stderr = dir .. "/run.err" })
    finally(function() p:kill(9); p:wait(10) end)
    -- a worker process that has written a batch of its own
    local victim
    assert.is_true(runs.wait_for(function()
      local f = io.open(home .. "/log/ops.jsonl")
      if not f then return false end
      for line in f:lines() do
        local e = json.decode(line)
        if e and e.event == "copy_batch" and e.worker and e.pid then victim = e.pid end
      end
      f:close()
      return victim ~= nil
    end), "no worker wrote a batch")
    helper.sh { "kill", "-9", tostring(victim) }
    local how, code = p:wait(240)
    local err = helper.read(dir .. "/run.err") or ""
    assert.equal("exit", how, err)
    assert.equal(0, code, err)
    assert.matches("copy worker " .. victim .. " ended: signal 9", err)
    assert.equal(2000, runs.copied(db(), medium_of(img)))
    -- every file was copied by this run, the killed worker's batches too
    assert.equal(2000, tonumber(helper.read(out):match("copied:%s+(%d+)")))
  end)

  it("hands a dead worker's claims back at once instead of waiting out its lease", function()
    local dir = helper.tmpdir("dead")
    local files = many_files("dead", 300, 10)
    local img = images.ext(dir .. "/dead.img", { size_mb = 64, files = files })
    local home = dir .. "/home"
    local pol = policy(dir, "{ workers = 2, copy = { batch = 50, lease = 600, durability = 'fsync', threads = 1 } }")
    local p = assert(proc.spawn { argv = { helper.ntt, "run", pol, img }, env = { NTT_HOME = home },
                                  stdout = "null", stderr = "null" })
    local h = medium_of(img)
    -- The worker process (argv: ntt worker POLICY HASH), once it holds a claim.
    local wpid
    local deadline = util.monotonic() + 60
    while util.monotonic() < deadline and not wpid do
      local r = proc.run { argv = { "pgrep", "-f", "worker " .. pol }, timeout = 10 }
      local pid = r and tonumber(r.stdout:match("%d+"))
      if pid then
        local ok2, rows = pcall(db().exec, db(),
          ("SELECT count(*) AS n FROM inode_p_%s WHERE claimed_by LIKE '%%:' || $1 || ':%%'"):format(h), tostring(pid))
        if ok2 and rows and rows[1].n > 0 then wpid = pid end
      end
      util.sleep(0.02)
    end
    assert.is_truthy(wpid, "the worker never claimed a batch")
    assert(proc.run { argv = { "kill", "-9", tostring(wpid) }, timeout = 10 })
    local t0 = util.monotonic()
    local how, code = p:wait(300)
    assert.equal("exit", how)
    assert.equal(0, code)
    assert.is_true(util.monotonic() - t0 < 120, "the run waited for the lease")
    local copied = 0
    for _, row in ipairs(inodes(h)) do if row.state == "copied" then copied = copied + 1 end end
    assert.equal(1000, copied)
    local failed
    for line in io.lines(home .. "/log/ops.jsonl") do
      local e = json.decode(line)
      if e and e.event == "worker_failed" then failed = e end
    end
    assert.is_truthy(failed, "no worker_failed event")
    assert.equal(wpid, failed.pid)
    assert.equal("signal", failed.how)
    assert.equal(9, failed.code)
  end)

  it("remounts when the mount vanishes before the copy and completes", function()
    local dir = helper.tmpdir("vanish")
    local files = {}
    for d = 1, 5 do
      for f = 1, 20 do files[("d%02d/f%03d"):format(d, f)] = ("%s %d %d "):format(tag, d, f):rep(100) end
    end
    local img = images.ext(dir .. "/v.img", { size_mb = 16, files = files })
    local home = dir .. "/home"
    -- A function stage between enumerate and copy takes the mount away from
    -- under ntt, as an operator or a crashed FUSE driver would.
    local pol = policy(dir, [[{
  retry = { checkpoint = 3 },
  workers = 1,
  stages = { "identify", "inspect", "mount", "enumerate",
             function(ctx)
               local proc = require "ntt.core.proc"
               for _, r in ipairs(ctx.roots) do proc.run { argv = { "umount", "-l", r.root }, timeout = 20 } end
               return true
             end,
             "copy", "unmount" },
}]])
    local r = run(home, { pol, img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local h = medium_of(img)
    local copied = 0
    for _, row in ipairs(inodes(h)) do if row.state == "copied" then copied = copied + 1 end end
    assert.equal(100, copied)
    local pr = problems(h)
    local remounted = 0
    for _, ev in ipairs(pr.diagnostic_events or {}) do
      if ev.action == "remounted" then
        remounted = remounted + 1
        assert.matches("mount_check:missing", table.concat(ev.checks, ","))
        assert.matches("detected_missing_file", table.concat(ev.checks, ","))
      end
    end
    assert.is_true(remounted > 0, "a remount was recorded")
    assert.equal(100, check_store(home))
  end)

  it("remounts when the mount is taken away from outside mid-copy, and completes", function()
    local dir = helper.tmpdir("vanish-mid")
    local files = many_files("mid", 100)
    local img = images.ext(dir .. "/mid.img", { size_mb = 64, files = files })
    local home = dir .. "/home"
    -- fsync per file and one thread: slow enough to be caught mid-copy
    local pol = policy(dir, "{ retry = { checkpoint = 3 }, copy = { batch = 20, threads = 1, durability = 'fsync' } }")
    local h = medium_of(img)
    local p = assert(proc.spawn { argv = { helper.ntt, "run", pol, img }, env = { NTT_HOME = home },
                                  stdout = "null", stderr = "null" })
    -- Once the copy is under way (and far from done), unmount the medium's
    -- filesystem from another process, as an operator or a dying driver would.
    local copied_then = runs.wait_copied(db(), h, 100)
    assert.truthy(copied_then, "the copy never got going")
    assert.is_true(copied_then < 2000, "the copy was over before the mount could be taken away")
    local unmounted = 0
    local r = helper.sh { "findmnt", "-rn", "-o", "TARGET" }
    for mp in r.stdout:gmatch("[^\n]+") do
      if mp:find("/" .. h, 1, true) then   -- <mount root>/<hash>/...
        helper.sh { "umount", "-l", mp }
        unmounted = unmounted + 1
      end
    end
    assert.equal(1, unmounted, "mounts: " .. r.stdout)
    local how, code = p:wait(240)
    assert.equal("exit", how)
    assert.equal(0, code)
    local copied = 0
    for _, row in ipairs(inodes(h)) do if row.state == "copied" then copied = copied + 1 end end
    assert.equal(2000, copied)
    local remounted = 0
    for _, ev in ipairs(problems(h).diagnostic_events or {}) do
      if ev.action == "remounted" then
        remounted = remounted + 1
        assert.matches("mount_check:missing", table.concat(ev.checks, ","))
      end
    end
    assert.is_true(remounted > 0, "a remount was recorded")
    assert.equal(2000, check_store(home))
  end)
end)
