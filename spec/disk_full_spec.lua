-- spec/disk_full_spec.lua: a disk that fills under a run -- the one ntt's
-- own database shares with the store (a real ext4 on a loop device, a
-- private cluster on it) -- stops the run cleanly with the store's
-- message, never with a failing database; and whatever stops a copy
-- midway, the run's summary counts the batches that were written.
local helper = require "spec.support.helper"
local runs = require "spec.support.runs"
local images = require "spec.support.images"
local proc = require "ntt.core.proc"
local json = require "ntt.json"
local fs = require "ntt.core.fs"
local db = require "ntt.db"
local copier = require "ntt.copier"
local room = require "ntt.copier.room"

local MiB = 1024 * 1024

describe("room in the store", function()
  it("cuts a batch to the files that fit, in claim order, a block each more", function()
    local rows = { { size = 4096 }, { size = 1 }, { size = 0 }, { size = 10000 } }
    -- 8192 + 8192 + 4096 + 16384
    assert.equal(0, room.fit(rows, 8191))
    assert.equal(1, room.fit(rows, 8192))
    assert.equal(3, room.fit(rows, 20480))
    assert.equal(3, room.fit(rows, 36863))
    assert.equal(4, room.fit(rows, 36864))
    assert.equal(36864, room.bytes(rows))
    -- the rest goes back to the database (only what was cut)
    local back
    local fake = { unclaim = function(_, list, worker) back = { list = list, worker = worker } return true end }
    local claimed = { { ino = 1, size = 4096 }, { ino = 2, size = 4096 }, { ino = 3, size = 4096 } }
    assert.equal(2, room.cut(fake, claimed, "w1", 16384))
    assert.same({ { ino = 1, size = 4096 }, { ino = 2, size = 4096 } }, claimed)
    assert.same({ list = { { ino = 3, size = 4096 } }, worker = "w1" }, back)
    back = nil
    assert.equal(2, room.cut(fake, claimed, "w1", 1 << 40))
    assert.is_nil(back)
  end)

  it("keeps room for ntt's database when it shares the store's disk", function()
    local space = { size = 200 * MiB }
    local pol = { store = { min_free_bytes = 1 << 30, min_free_fraction = 0.02 } }
    assert.equal(math.floor(0.02 * 200 * MiB), (copier.keep_free(pol, space, false)))
    local keep, for_db = copier.keep_free(pol, space, true)
    assert.equal(64 * MiB, keep)
    assert.is_true(for_db)
    pol.store.db_free_bytes = 1 * MiB
    keep, for_db = copier.keep_free(pol, space, true)
    assert.equal(math.floor(0.02 * 200 * MiB), keep)
    assert.is_false(for_db)
    -- a store told to keep nothing keeps nothing
    assert.equal(0, (copier.keep_free({ store = { min_free_bytes = 0, min_free_fraction = 0 } }, space, true)))
  end)
end)

-- A data root of its own on a size_mb MiB ext4 (a loop device), with ntt's
-- own cluster on it: -> its path, the image, and a function running `ntt
-- argv...` there.  The cluster is stopped and the disk unmounted when the
-- test ends.
local function small_home(finally, dir, size_mb)
  helper.sh { "chmod", "0755", dir }   -- (the private cluster runs as the postgres account)
  local home, img = dir .. "/home", dir .. "/home.img"
  images.truncate(img, size_mb * MiB)
  helper.sh { "mkfs.ext4", "-q", "-F", img }
  helper.sh { "mkdir", "-p", home }
  helper.sh { "mount", "-o", "loop", img, home }
  helper.sh { "chmod", "0755", home }
  local env = runs.env_of(dir, home)
  env.NTT_DB_URL = false   -- ntt's own cluster, on that disk
  local function ntt(argv)
    local full = { helper.ntt }
    for _, a in ipairs(argv) do full[#full + 1] = a end
    return assert(proc.run { argv = full, env = env, timeout = 300 })
  end
  finally(function()
    ntt { "db", "stop" }
    helper.sh({ "umount", "-l", home }, { may_fail = true })
  end)
  return home, img, ntt
end

describe("a disk that fills", function()
  local ok, why = runs.can_run()
  if not ok then
    it("stops the run cleanly", function() pending(why) end)
    return
  end
  after_each(runs.unmount)

  it("stops at the store's free space when the database shares the disk, and a rerun after growing it finishes", function()
    local dir = helper.tmpdir("diskfull")
    local home, img, ntt = small_home(finally, dir, 200)
    -- 40 files of 4 MiB, each its own content: more than the disk holds
    local tree = dir .. "/tree"
    helper.sh { "mkdir", "-p", tree }
    for i = 1, 40 do
      local head = ("%s diskfull %03d "):format(runs.tag, i)
      local f = assert(io.open(("%s/f%03d"):format(tree, i), "wb"))
      f:write((head:rep(4 * MiB // #head + 1)):sub(1, 4 * MiB))
      f:close()
    end
    local pol = runs.policy(dir, "{ copy = { batch = 8 } }")
    local r = ntt { "run", pol, "--tree", tree }
    assert.equal(2, r.code, r.stderr .. r.stdout)
    -- the store stopped it, naming why; the database never failed
    assert.matches("store " .. (home .. "/store"):gsub("%p", "%%%0") .. ": only [%d%.]+ [KMG]i?B free", r.stderr)
    assert.matches("store%.db_free_bytes: ntt's database is on that disk too", r.stderr)
    assert.is_nil(r.stderr:find("could not", 1, true), r.stderr)
    assert.is_nil(r.stderr:find("EDB", 1, true), r.stderr)
    local space = assert(fs.space(home))
    assert.is_true(space.avail > 16 * MiB, "free at the stop: " .. space.avail)
    -- the summary counts what the database holds, and some is still to copy
    local st = json.decode(ntt({ "status", "--json" }).stdout)[1]
    local copied = st.files.copied or 0
    assert.is_true(copied > 0 and copied < 40, json.encode(st.files))
    assert.matches("copied:%s+" .. copied .. " ", r.stdout)
    assert.equal(40 - copied, st.files.pending, json.encode(st.files))
    -- grow the disk (offline), run again: every file copied
    assert.equal(0, ntt({ "db", "stop" }).code)
    helper.sh { "umount", home }
    images.grow_ext(img, 600 * MiB)
    helper.sh { "mount", "-o", "loop", img, home }
    r = ntt { "run", pol, "--tree", tree }
    assert.equal(0, r.code, r.stderr .. r.stdout)
    st = json.decode(ntt({ "status", "--json" }).stdout)[1]
    assert.equal(40, st.files.copied, json.encode(st.files))
    assert.equal(40, runs.check_store(home .. "/store"))
  end)

  it("names the database's disk when a medium's entries do not fit on it", function()
    local dir = helper.tmpdir("dbdiskfull")
    local home, _, ntt = small_home(finally, dir, 100)
    -- 160,000 empty files: their rows and keys are more than the disk holds
    local tree = dir .. "/tree"
    for d = 1, 160 do
      local sub = ("%s/d%03d"):format(tree, d)
      helper.sh { "mkdir", "-p", sub }
      for f = 1, 1000 do assert(io.open(("%s/f%04d"):format(sub, f), "w")):close() end
    end
    local r = ntt { "run", runs.policy(dir), "--tree", tree }
    assert.equal(2, r.code, r.stderr .. r.stdout)
    assert.matches("stage enumerate failed: .*No space left on device: the disk of ntt's database, "
                   .. (home .. "/pg"):gsub("%p", "%%%0") .. " is full; free space there, then run again", r.stderr)
    -- the database is still there to say what it holds: the medium, no entry
    r = ntt { "status", "--json" }
    assert.equal(0, r.code, r.stderr)
    local st = json.decode(r.stdout)[1]
    assert.truthy(st and st.identified_at, r.stdout)
    assert.is_nil(st.enum_done, r.stdout)
  end)

  it("counts in the summary the batches written before the database failed the copy", function()
    local dir = helper.tmpdir("dbfails")
    local home = dir .. "/home"
    local tree = dir .. "/tree"
    helper.sh { "mkdir", "-p", tree }
    for i = 1, 30 do helper.write(("%s/f%02d"):format(tree, i), ("%s dbfails %d"):format(runs.tag, i)) end
    local r = runs.enumerate_only(dir, home, tree)
    assert.equal(1, r.code, r.stderr)
    local h = runs.medium_of(tree)
    local iname = db.partition_names(h)
    local conn = runs.db()
    -- the third batch's results hit a full disk, as the server says it
    local seq, fn = "ntt_spec_full_" .. h, "ntt_spec_full_" .. h
    assert(conn:exec_script(([[
      CREATE SEQUENCE %s;
      CREATE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF nextval('%s') > 20 THEN
          RAISE EXCEPTION 'could not extend file "base/0/0": No space left on device' USING ERRCODE = 'disk_full';
        END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER full_disk BEFORE UPDATE ON %s FOR EACH ROW
        WHEN (NEW.state = 'copied' AND OLD.state <> 'copied') EXECUTE FUNCTION %s()]])
      :format(seq, fn, seq, conn:escape_identifier(iname), fn)))
    finally(function()
      conn:exec(("DROP TRIGGER IF EXISTS full_disk ON %s"):format(conn:escape_identifier(iname)))
      conn:exec_script(("DROP FUNCTION IF EXISTS %s(); DROP SEQUENCE IF EXISTS %s"):format(fn, seq))
    end)
    local pol = runs.policy(dir, "{ copy = { batch = 10 } }", "copy.lua")
    r = runs.run(home, { pol, "--tree", tree })
    assert.equal(2, r.code, r.stderr .. r.stdout)
    assert.matches("No space left on device: the database server's disk is full; free space there, then run again",
                   r.stderr)
    -- two batches were written: the database and the summary say 20
    assert.equal(20, runs.copied(conn, h))
    assert.matches("copied:%s+20 ", r.stdout)
    -- the disk freed, the rest is copied
    assert(conn:exec(("DROP TRIGGER full_disk ON %s"):format(conn:escape_identifier(iname))))
    r = runs.run(home, { pol, "--tree", tree })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.equal(30, runs.copied(conn, h))
    assert.matches("copied:%s+10 ", r.stdout)
  end)
end)
