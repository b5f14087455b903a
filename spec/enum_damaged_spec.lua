-- spec/enum_damaged_spec.lua: `ntt run` on an ext4 image with a damaged
-- directory block: the directory is a problem of the medium and of the
-- run (exit 1), and once the block is good again a rerun walks that
-- directory alone, loads and copies what is in it, and exits 0.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local hash = require "ntt.core.hash"
local json = require "ntt.json"
local runs = require "spec.support.runs"

local MiB = images.MiB
local tag = runs.tag

local run, db = runs.run, runs.db

local bytes = helper.bytes_at

describe("a damaged directory", function()
  local ok, why = runs.can_run()
  if not ok then
    it("is a problem, and is walked again", function() pending(why) end)
    return
  end

  after_each(runs.unmount)

  it("is recorded as a problem (exit 1), and a rerun walks it alone once readable (exit 0)", function()
    local dir = helper.tmpdir("damdir")
    local files = { ["top.txt"] = "top " .. tag, ["good/g1.txt"] = "good one " .. tag,
                    ["broken/b1.txt"] = "broken one " .. tag, ["broken/b2.txt"] = "broken two " .. tag,
                    ["broken/sub/b3.txt"] = "below " .. tag }
    for i = 1, 30 do files[("many/f%02d"):format(i)] = ("many %d %s"):format(i, tag) end
    local fsimg = images.ext(dir .. "/p1.img", { size_mb = 8, block = 4096, files = files })
    -- the directory's one block, as debugfs sees it in the filesystem
    local r = helper.sh { "debugfs", "-R", "blocks /broken", fsimg }
    local block = assert(tonumber(r.stdout:match("%d+")), r.stdout)
    -- an image is named by its whole content, so the repaired image would be
    -- another medium (a new rescue); named by a hash, it stays this one
    -- (the same medium remounted)
    local img = images.mbr(dir .. "/" .. hash.sum("damdir " .. tag, 16) .. ".img",
                           { size_mb = 12, parts = { { start_mb = 2, size_mb = 8, image = fsimg } } })
    local at = 2 * MiB + block * 4096
    local good = bytes(img, at, 4096)
    local h0 = runs.medium_of(img)
    bytes(img, at, 4096, ("\xde\xad\xbe\xef"):rep(1024))
    assert.equal(h0, runs.medium_of(img))
    local home = dir .. "/home"
    local pol = runs.policy(dir, '{ hooks = { on_problem = function(h, kind) print("heard " .. h .. " " .. kind) end } }')
    r = run(home, { pol, img })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    assert.matches("medium problems recorded: 1\n", r.stdout)
    assert.matches("broken", r.stderr)                    -- said, with the place
    local h = h0
    assert.matches("heard " .. h .. " enum_errors", r.stdout)
    local p = json.decode(assert(db():exec("SELECT problems::text AS p FROM medium WHERE medium_hash = $1", h))[1].p)
    assert.equal(1, p.enum_errors.count, json.encode(p))
    assert.equal("broken", p.enum_errors.first[1].path)
    local f = assert(db():exec([[SELECT fs_index, path, err, retry, resolved_at FROM enum_failure
                                  WHERE medium_hash = $1]], h))
    assert.equal(1, #f)
    assert.equal(1, f[1].fs_index)
    assert.equal("broken", f[1].path)
    assert.is_true(f[1].retry)
    assert.truthy(f[1].err == "EBADMSG" or f[1].err == "EUCLEAN" or f[1].err == "EIO", f[1].err)
    local function path_rows()
      local out = {}
      for _, row in ipairs(assert(db():exec(("SELECT p.path, i.state::text AS state, i.blobid FROM path_p_%s p JOIN inode_p_%s i USING (fs_index, ino)"):format(h, h)))) do
        out[row.path] = row
      end
      return out
    end
    local before = path_rows()
    assert.equal("copied", before["top.txt"].state)
    assert.equal("copied", before["many/f07"].state)
    assert.truthy(before.broken)
    assert.is_nil(before["broken/b1.txt"])
    -- a rerun while still damaged: still a problem, nothing else walked
    r = run(home, { "-v", pol, img })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    assert.matches("1 unreadable place%(s%) walked again %(p1:'broken'%): 0 now read, 1 still unreadable", r.stderr)
    assert.matches("medium problems recorded: 1\n", r.stdout)
    -- repaired (a better rescue, a remount): the block is good again
    bytes(img, at, 4096, good)
    assert.equal(h0, runs.medium_of(img))
    r = run(home, { "-v", pol, img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    -- broken alone was walked again
    assert.matches("1 unreadable place%(s%) walked again %(p1:'broken'%): 1 now read, 0 still unreadable", r.stderr)
    local retried
    for line in helper.read(home .. "/log/ops.jsonl"):gmatch("[^\n]+") do
      local e = json.decode(line)
      if e.event == "enumerate_retried" then retried = e end
    end
    assert.truthy(retried)
    assert.equal(1, retried.resolved)
    assert.is_true(retried.entries <= 6, "entries walked again: " .. retried.entries)   -- the root, broken and its 4
    assert.matches("files found:%s+3\n", r.stdout)
    assert.matches("copied:%s+3 ", r.stdout)
    assert.matches("medium problems recorded: 0\n", r.stdout)
    local after = path_rows()
    assert.equal(hash.sum("broken one " .. tag), after["broken/b1.txt"].blobid)
    assert.equal(hash.sum("broken two " .. tag), after["broken/b2.txt"].blobid)
    assert.equal(hash.sum("below " .. tag), after["broken/sub/b3.txt"].blobid)
    for path, row in pairs(before) do assert.equal(row.blobid, after[path].blobid, path) end
    f = assert(db():exec("SELECT resolved_at IS NOT NULL AS resolved FROM enum_failure WHERE medium_hash = $1", h))
    assert.is_true(f[1].resolved)
    p = json.decode(assert(db():exec("SELECT problems::text AS p FROM medium WHERE medium_hash = $1", h))[1].p)
    assert.is_nil(p.enum_errors)
    -- and then there is nothing left to walk
    r = run(home, { "-v", pol, img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("enumerate_skipped.*already enumerated", r.stderr)
  end)
end)
