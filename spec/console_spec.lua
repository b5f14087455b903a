-- spec/console_spec.lua: `ntt repl --medium H` over the database, through a
-- terminal (tmux): help() lists the helpers, failing() lists a medium's
-- failed files with their errors, retry(path) after the cause is fixed
-- copies the file (state copied, its blob in the store hashing to its name).
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local hash = require "ntt.core.hash"
local term = require "spec.support.term"

local tty = term.new { socket = "ntt-console-spec", target = "c", history = true, wait = 20 }
local tmux, send, screen, wait_for = tty.tmux, tty.send, tty.screen, tty.wait_for

describe("ntt repl --medium H", function()
  local ok, why = runs.can_run()
  local has, no_tmux = term.have()
  if not has then why, ok = no_tmux, false end
  if not ok then
    it("lists failing files and retries one", function() pending(why) end)
    return
  end
  after_each(function() tmux("kill-server") end)

  it("lists failing files with their errors; retry(path) after the fix copies the file", function()
    local dir = helper.tmpdir("console")
    local home, tree = dir .. "/home", dir .. "/tree"
    helper.sh { "mkdir", "-p", tree .. "/sub" }
    local t = runs.tag
    local files = { ["a.txt"] = "console a " .. t, ["sub/gone.txt"] = "console gone " .. t }
    images.files(tree, files)
    local r = runs.enumerate_only(dir, home, tree)
    assert.equal(1, r.code, r.stderr .. r.stdout)
    os.remove(tree .. "/sub/gone.txt")
    local pol = runs.policy(dir, [[{
  retry = { checkpoint = 2, max = 3, backoff = { base = 0.001, factor = 1, cap = 0.001 } },
  diagnose = { { ntt.always, ntt.CONTINUE } },
}]], "copy.lua")
    r = runs.run(home, { pol, "--tree", tree })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    local h = runs.medium_of(tree)
    tty.start(200, 60, "env", "NTT_HISTORY=" .. dir .. "/history",
         "NTT_HOME=" .. home, "NTT_DB_URL=" .. assert(helper.db_url()), "TERM=xterm",
         helper.ntt, "repl", "--medium", h:sub(1, 12), pol)
    wait_for("ntt>")
    assert.matches("helpers default to medium " .. h:sub(1, 12), screen())
    send("help()", "Enter")
    wait_for("retry%(h, path%)")
    assert.matches("failing%(h %[, limit%]%)", screen())
    send("C-l")
    send("failing()", "Enter")
    local s = wait_for('path = "sub/gone.txt"')
    assert.matches('state = "failed_retryable"', s)
    assert.matches("attempts = 3", s)
    assert.matches("ENOENT", s)
    assert.not_matches('path = "a.txt"', s)
    -- the cause fixed: the file is back; retry copies it now
    images.files(tree, { ["sub/gone.txt"] = files["sub/gone.txt"] })
    send('retry("sub/gone.txt")', "Enter")
    s = wait_for('state = "copied"')
    local blob = hash.sum(files["sub/gone.txt"])
    assert.matches(blob, s)
    local row = assert(runs.db():exec(([[SELECT i.state::text AS state, i.blobid, i.attempts, i.claimed_by
                                           FROM path_p_%s p JOIN inode_p_%s i USING (fs_index, ino)
                                          WHERE p.path = 'sub/gone.txt']]):format(h, h)))[1]
    assert.equal("copied", row.state)
    assert.equal(blob, row.blobid)
    assert.is_nil(row.claimed_by)
    local stored = home .. "/store/by-hash/" .. blob:sub(1, 2) .. "/" .. blob:sub(3, 4) .. "/" .. blob
    assert.equal(blob, hash.sum(helper.read(stored)))
    -- nothing failing any more; the medium's copy is done again
    send("C-l")
    send("#failing()", "Enter")
    wait_for("\n0\n")
    local m = assert(runs.db():exec("SELECT copy_done IS NOT NULL AS done FROM medium WHERE medium_hash = $1", h))[1]
    assert.is_true(m.done)
    -- a path the medium does not have: an answer, not an error
    send('retry("no/such/file")', "Enter")
    wait_for("no file .-no/such/file.-ENOENT")
  end)

  it("retry on an image mounts it for the file and unmounts what it mounted; remount mounts again", function()
    local dir = helper.tmpdir("console-img")
    local home, img = dir .. "/home", dir .. "/disk.img"
    local t = runs.tag
    images.ext(img, { size_mb = 4, files = { ["one.txt"] = "image one " .. t, ["two.txt"] = "image two " .. t } })
    local r = runs.run(home, { runs.policy(dir, '{ stages = { "identify", "inspect", "mount", "enumerate", "unmount" } }'), img })
    assert.equal(1, r.code, r.stderr .. r.stdout)   -- left pending
    local h = runs.medium_of(img)
    local mount = require "ntt.mount"
    local function mounted()
      local st = mount.status(h, img)
      return #mount.roots_of(st) > 0
    end
    assert.is_false(mounted())
    local function repl(input)
      return assert(proc.run { argv = { helper.ntt, "repl", "--medium", h }, input = input,
                               env = { NTT_HOME = home }, timeout = 120 })
    end
    r = repl('x = retry("/one.txt"); print("state", x.state, x.blob)\n')
    assert.equal(0, r.code, r.stderr)
    assert.matches("state\tcopied\t" .. hash.sum("image one " .. t), r.stdout)
    assert.is_false(mounted())   -- it mounted the medium for the file, and unmounted it
    assert.equal(1, runs.copied(runs.db(), h))
    r = repl('roots = remount(); print("roots", #roots, roots[1].fs_index)\n')
    assert.matches("roots\t1\t0", r.stdout)
    assert.is_true(mounted())
    -- mounted already: retry uses that mount and leaves it
    r = repl('x = retry("two.txt"); print("state", x.state)\n')
    assert.matches("state\tcopied", r.stdout)
    assert.is_true(mounted())
    mount.unmount(h, img)
  end)
end)
