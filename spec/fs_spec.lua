-- spec/fs_spec.lua: the filesystem primitives and probing of ntt.core.fs,
-- and the concurrency policy built on the probe (ntt.concurrency).
local helper = require "spec.support.helper"
local fs = require "ntt.core.fs"
local concurrency = require "ntt.concurrency"

describe("ntt.core.fs", function()
  it("probes the filesystem kind from statfs magic", function()
    local p = assert(fs.probe("/proc"))
    assert.equal("proc", p.kind)
    assert.equal(0x9fa0, p.magic)
    assert.is_false(p.network)
    local t = assert(fs.probe("/dev/shm"))
    assert.equal("tmpfs", t.kind)
    local nope, msg, ename = fs.probe("/nonexistent/x")
    assert.is_nil(nope)
    assert.matches("nonexistent", msg)
    assert.equal("ENOENT", ename)
  end)

  it("exchanges two names in one step, a directory and a symbolic link alike", function()
    local dir = helper.tmpdir("fsx")
    helper.sh { "mkdir", dir .. "/d" }
    helper.write(dir .. "/d/f", "x")
    helper.sh { "ln", "-s", "/nonexistent", dir .. "/l" }
    assert.is_true(fs.exchange(dir .. "/d", dir .. "/l"))
    assert.equal("link", fs.stat(dir .. "/d", true).type)
    assert.equal("directory", fs.stat(dir .. "/l", true).type)
    assert.equal("file", fs.stat(dir .. "/l/f").type)
    local ok, msg, ename = fs.exchange(dir .. "/d", dir .. "/missing")
    assert.is_nil(ok)
    assert.matches("exchange .*/d .*/missing: No such file", msg)
    assert.equal("ENOENT", ename)
  end)

  it("tells ext4 from ext2 on real images", function()
    if not helper.is_root() then return pending("needs root to mount") end
    local dir = helper.tmpdir("fs")
    for _, kind in ipairs { "ext4", "ext2" } do
      local img, mnt = dir .. "/" .. kind .. ".img", dir .. "/" .. kind
      helper.sh { "mkdir", "-p", mnt }
      helper.sh { "mkfs." .. kind, "-q", img, "8M" }
      local r = helper.sh({ "mount", "-o", "loop,ro", img, mnt }, { may_fail = true })
      if r.code ~= 0 then return pending("cannot mount: " .. r.stderr) end
      local p = fs.probe(mnt)
      helper.sh { "umount", mnt }
      assert.equal(kind, p.kind)
      assert.equal(0xEF53, p.magic)
      assert.equal(kind, p.fstype)
    end
  end)

  it("names FUSE filesystems by their mount type", function()
    if not helper.is_root() then return pending("needs root to mount") end
    local dir = helper.tmpdir("fs")
    helper.sh { "mkdir", "-p", dir .. "/m" }
    helper.sh { "mkfs.ext2", "-q", dir .. "/img", "8M" }
    local r = helper.sh({ "fuse2fs", "-o", "ro", dir .. "/img", dir .. "/m" }, { may_fail = true })
    if r.code ~= 0 then return pending("fuse2fs failed: " .. r.stderr) end
    local p = fs.probe(dir .. "/m")
    helper.sh { "umount", dir .. "/m" }
    assert.equal("fuse", p.kind)
    assert.matches("^fuse", p.fstype)
    assert.is_false(p.network)
  end)

  it("space: the size and free bytes of the filesystem under a path", function()
    local dir = helper.tmpdir("space")
    local sp = assert(fs.space(dir))
    assert.is_true(sp.size > 0)
    assert.is_true(sp.free <= sp.size)
    assert.is_true(sp.avail <= sp.free)
    -- a file written shows in the free bytes of a small filesystem of its own
    if helper.is_root() then
      helper.sh { "mkdir", "-p", dir .. "/m" }
      local r = helper.sh({ "mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir .. "/m" }, { may_fail = true })
      if r.code == 0 then
        finally(function() helper.sh({ "umount", "-l", dir .. "/m" }, { may_fail = true }) end)
        local before = assert(fs.space(dir .. "/m"))
        assert.equal(4 * 1024 * 1024, before.size)
        helper.write(dir .. "/m/f", ("x"):rep(1024 * 1024))
        local after = assert(fs.space(dir .. "/m"))
        assert.equal(before.avail - 1024 * 1024, after.avail)
      end
    end
    local none, msg, code = fs.space(dir .. "/no/such")
    assert.is_nil(none)
    assert.matches("no/such", msg)
    assert.equal("ENOENT", code)
  end)

  it("detects WSL from the kernel's own words", function()
    local f = io.open("/proc/sys/kernel/osrelease")
    local rel = f and f:read("a") or ""
    if f then f:close() end
    assert.equal(rel:lower():find("microsoft") ~= nil or rel:lower():find("wsl") ~= nil, fs.wsl())
  end)
end)

describe("ntt.core.fs primitives", function()
  local function octal(s) return tonumber(s, 8) end

  it("stat: type, size, mode and owner; links followed unless asked", function()
    local dir = helper.tmpdir("fs")
    helper.write(dir .. "/f", "hello")
    assert(fs.chmod(dir .. "/f", octal "640"))
    helper.sh { "ln", "-s", "f", dir .. "/l" }
    local st = assert(fs.stat(dir .. "/f"))
    assert.same({ "file", 5, octal "640" }, { st.type, st.size, st.mode })
    assert.equal(require("ntt.core.util").euid(), st.uid)
    assert.equal("file", fs.stat(dir .. "/l").type)
    assert.equal("link", fs.stat(dir .. "/l", true).type)
    assert.equal("directory", fs.stat(dir).type)
    local null = assert(fs.stat("/dev/null"))
    assert.same({ "char", 1, 3 }, { null.type, null.major, null.minor })
    local nope, msg, code = fs.stat(dir .. "/missing")
    assert.same({ nil, dir .. "/missing: No such file or directory", "ENOENT" }, { nope, msg, code })
    assert.has_error(function() fs.stat() end)
  end)

  it("realpath resolves links and dots", function()
    local dir = fs.realpath(helper.tmpdir("fs"))
    assert(fs.mkdirp(dir .. "/a/b"))
    helper.sh { "ln", "-s", "a/b", dir .. "/l" }
    assert.equal(dir .. "/a/b", fs.realpath(dir .. "/l/../b/."))
    local nope, _, code = fs.realpath(dir .. "/missing/x")
    assert.same({ nil, "ENOENT" }, { nope, code })
  end)

  it("readdir lists raw names, sorted bytewise, without . and ..", function()
    local dir = helper.tmpdir("fs")
    local names = { "b", "a b", "back\\slash", "new\nline", "\xff\xfeinvalid", "Z", "a", ".hidden", "-dash" }
    for _, n in ipairs(names) do helper.write(dir .. "/" .. n, n) end
    assert(fs.mkdirp(dir .. "/sub"))
    names[#names + 1] = "sub"
    table.sort(names)
    assert.same(names, assert(fs.readdir(dir)))
    assert.same({}, assert(fs.readdir(dir .. "/sub")))
    local nope, msg, code = fs.readdir(dir .. "/missing")
    assert.is_nil(nope)
    assert.matches("missing: No such file", msg)
    assert.equal("ENOENT", code)
    assert.equal("ENOTDIR", select(3, fs.readdir(dir .. "/a")))
  end)

  it("mkdirp makes every missing directory; existing ones are fine", function()
    local dir = helper.tmpdir("fs")
    assert.is_true(fs.mkdirp(dir .. "/x/y//z/", octal "700"))
    assert.equal(octal "700", fs.stat(dir .. "/x/y/z").mode)
    assert.is_true(fs.mkdirp(dir .. "/x/y"))
    helper.sh { "ln", "-s", "x", dir .. "/lx" }
    assert.is_true(fs.mkdirp(dir .. "/lx/y/w"))
    assert.equal("directory", fs.stat(dir .. "/x/y/w").type)
    helper.write(dir .. "/file", "")
    assert.same({ nil, dir .. "/file: File exists", "EEXIST" }, { fs.mkdirp(dir .. "/file") })
    assert.same({ nil, dir .. "/file/sub: Not a directory", "ENOTDIR" }, { fs.mkdirp(dir .. "/file/sub") })
    assert.has_error(function() fs.mkdirp(dir .. "/m", -1) end)
    assert.has_error(function() fs.mkdirp(dir .. "/m", "755") end)
  end)

  it("owner names the account, or its number when it has no name", function()
    if not helper.is_root() then return pending("needs root to chown") end
    local dir = helper.tmpdir("fs")
    helper.write(dir .. "/f", "")
    assert.same({ "root", 0 }, { fs.owner(dir .. "/f") })
    assert(fs.chown(dir .. "/f", "nobody"))
    local uid = require("ntt.core.proc").user_ids("nobody")
    assert.same({ "nobody", uid }, { fs.owner(dir .. "/f") })
    helper.sh { "chown", "54321", dir .. "/f" }
    assert.same({ "54321", 54321 }, { fs.owner(dir .. "/f") })
    assert.equal("ENOENT", select(3, fs.owner(dir .. "/missing")))
    assert.same({ nil, "user 'no-such-account': no such account", "ENOENT" },
                { fs.chown(dir .. "/f", "no-such-account") })
  end)

  it("access answers for this process or for another account", function()
    local dir = helper.tmpdir("fs")
    helper.write(dir .. "/f", "")
    assert.is_true(fs.access(dir .. "/f", "rw"))
    assert.same({ false, dir .. "/f: Permission denied", "EACCES" }, { fs.access(dir .. "/f", "x") })
    assert.equal("ENOENT", select(3, fs.access(dir .. "/missing", "r")))
    assert.has_error(function() fs.access(dir, "q") end)
    assert.has_error(function() fs.access(dir, "") end)
    if not helper.is_root() then return pending("needs root to act as another account") end
    -- root may write anywhere; nobody only where the kernel says so
    assert(fs.chmod(dir, octal "755"))
    assert.is_true(fs.access(dir, "w"))
    assert.same({ false, dir .. ": Permission denied", "EACCES" }, { fs.access(dir, "w", "nobody") })
    assert.is_true(fs.access(dir, "rx", "nobody"))
    assert(fs.mkdirp(dir .. "/mine/deeper"))
    assert(fs.chown(dir .. "/mine", "nobody"))
    assert.is_true(fs.access(dir .. "/mine", "w", "nobody"))
    assert.is_false((fs.access(dir .. "/mine/deeper", "w", "nobody")))
    -- a parent the account cannot search hides everything below it
    assert(fs.chmod(dir, octal "700"))
    assert.same({ false, "EACCES" }, { (fs.access(dir .. "/mine", "w", "nobody")), select(3, fs.access(dir .. "/mine", "w", "nobody")) })
    assert.same({ nil, "user 'no-such-account': no such account", "ENOENT" },
                { fs.access(dir, "r", "no-such-account") })
  end)

  it("rmtree removes a tree, never follows links, stays on its filesystem", function()
    local dir = helper.tmpdir("fs")
    assert(fs.mkdirp(dir .. "/keep"))
    helper.write(dir .. "/keep/precious", "x")
    assert(fs.mkdirp(dir .. "/t/a/b"))
    helper.write(dir .. "/t/a/b/f", "x")
    helper.write(dir .. "/t/new\nline", "x")
    helper.sh { "ln", "-s", dir .. "/keep", dir .. "/t/a/link" }
    assert.is_true(fs.rmtree(dir .. "/t"))
    assert.is_nil(fs.stat(dir .. "/t", true))
    assert.equal("x", helper.read(dir .. "/keep/precious"))
    assert.is_true(fs.rmtree(dir .. "/t"))   -- already gone
    helper.sh { "ln", "-s", dir .. "/keep", dir .. "/l" }
    assert.is_true(fs.rmtree(dir .. "/l"))   -- the link, not its target
    assert.equal("x", helper.read(dir .. "/keep/precious"))
    if not helper.is_root() then return pending("needs root to mount") end
    assert(fs.mkdirp(dir .. "/m/mnt"))
    helper.sh { "mount", "-t", "tmpfs", "none", dir .. "/m/mnt" }
    helper.write(dir .. "/m/mnt/inside", "x")
    local ok, msg, code = fs.rmtree(dir .. "/m")
    helper.sh { "umount", dir .. "/m/mnt" }
    assert.same({ nil, dir .. "/m: Invalid cross-device link", "EXDEV" }, { ok, msg, code })
  end)

  it("mountinfo unescapes space, tab, newline and backslash in every field", function()
    local all = assert(fs.mountinfo())
    local root
    for _, m in ipairs(all) do if m.target == "/" then root = m end end
    assert.is_table(root)
    for _, k in ipairs { "id", "parent", "major", "minor" } do assert.equal("integer", math.type(root[k])) end
    assert.is_string(root.super_options)
    assert.is_table(root.optional)
    if not helper.is_root() then return pending("needs root to mount") end
    local dir = helper.tmpdir("fs")
    local odd = dir .. "/a b\\c\nd\te"
    assert(fs.mkdirp(odd))
    helper.sh { "mount", "-t", "tmpfs", "-o", "size=1m", "my src\\x", odd }
    local found
    for _, m in ipairs(assert(fs.mountinfo())) do if m.target == odd then found = m end end
    local probe = fs.probe(odd)
    local diagnose = require "ntt.diagnose"
    local check = diagnose.mount_check(odd)
    helper.sh { "umount", odd }
    assert.is_table(found)
    assert.equal("tmpfs", found.fstype)
    assert.equal("my src\\x", found.source)
    assert.equal("/", found.root)
    assert.matches("size=1024k", found.super_options)
    assert.same({ "tmpfs", "tmpfs" }, { probe.kind, probe.fstype })
    assert.equal("mount_check:ok", check)
    assert.equal("mount_check:missing", diagnose.mount_check(odd))
  end)
end)

describe("network FUSE types come from the policy", function()
  it("probe counts a FUSE type as network only when listed", function()
    assert.has_error(function() fs.probe("/", { netwrok_fuse = {} }) end, "fs.probe: unknown option 'netwrok_fuse' (did you mean 'network_fuse'?)")
    assert.has_error(function() fs.probe("/", { network_fuse = "fuse.sshfs" }) end)
    assert.is_false(assert(fs.probe("/proc", { network_fuse = { "fuse.sshfs" } })).network)
    if not helper.is_root() then return pending("needs root to mount") end
    local dir = helper.tmpdir("fs")
    assert(fs.mkdirp(dir .. "/m"))
    helper.sh { "mkfs.ext2", "-q", dir .. "/img", "8M" }
    local r = helper.sh({ "fuse2fs", "-o", "ro", dir .. "/img", dir .. "/m" }, { may_fail = true })
    if r.code ~= 0 then return pending("fuse2fs failed: " .. r.stderr) end
    local plain = fs.probe(dir .. "/m")
    local listed = fs.probe(dir .. "/m", { network_fuse = { "fuse.sshfs", plain.fstype } })
    local bad = pcall(fs.probe, dir .. "/m", { network_fuse = { 42 } })
    helper.sh { "umount", dir .. "/m" }
    assert.is_false(plain.network)
    assert.is_true(listed.network)
    assert.is_false(bad)
  end)

  it("the default policy lists them, a site policy adds to them, a typo is an error", function()
    local policy = require "ntt.policy"
    local default = assert(policy.load("default"))
    local list = default.copy.network_fuse
    assert.is_true(#list > 5)
    local has = {}
    for _, t in ipairs(list) do has[t] = true end
    assert.is_true(has["fuse.sshfs"] and has["fuse.rclone"])
    local site = policy.extend(default, { copy = { network_fuse = policy.append { "fuse.shelfcloud" } } })
    assert.equal("fuse.shelfcloud", site.copy.network_fuse[#site.copy.network_fuse])
    assert.equal(#list + 1, #site.copy.network_fuse)
    local ok, err = pcall(policy.extend, default, { copy = { network_fuse = { "sshfs" } } })
    assert.is_false(ok)
    assert.matches('"fuse.sshfs"', err)
    ok, err = pcall(policy.extend, default, { copy = { network_fuses = {} } })
    assert.is_false(ok)
    assert.matches("network_fuse", err)
  end)
end)

describe("ntt.concurrency", function()
  it("chooses threads from the probe", function()
    assert.equal(1, (concurrency.default({ kind = "9p", network = true }, { cores = 8 })))
    assert.equal(2, (concurrency.default({ kind = "nfs", network = true }, { cores = 8 })))
    assert.equal(2, (concurrency.default({ kind = "fuse", fstype = "fuse.sshfs", network = true }, { cores = 8 })))
    assert.equal(8, (concurrency.default({ kind = "ext4", network = false }, { cores = 2 })))
    assert.equal(4, (concurrency.default({ kind = "ext4" }, { cores = 1 })))
    assert.equal(16, (concurrency.default({ kind = "xfs" }, { cores = 64 })))
    assert.is_true(concurrency.default(assert(fs.probe("/"))) >= 1)
    assert.has_error(function() concurrency.default(nil) end)
  end)

  it("climbs while throughput grows, steps back when it does not", function()
    local c = concurrency.controller { threads = 2, max = 8, hold = 2 }
    -- Throughput scales with threads up to 4, then flattens.
    local function rate(n) return math.min(n, 4) * 100 end
    local seen = {}
    for _ = 1, 12 do
      local n = c:threads()
      local _, reason = c:observe { files = rate(n), errors = 0, seconds = 1 }
      seen[#seen + 1] = reason
    end
    assert.equal(4, c:threads())
    assert.is_truthy(table.concat(seen, " "):find("revert"))
    assert.is_truthy(table.concat(seen, " "):find("hold"))
  end)

  it("halves on errors and drops on latency, within bounds", function()
    local c = concurrency.controller { threads = 8, min = 1, max = 8 }
    assert.same({ 4, "errors" }, { c:observe { files = 100, errors = 30, seconds = 1 } })
    assert.same({ 2, "errors" }, { c:observe { files = 100, errors = 50, seconds = 1 } })
    assert.same({ 1, "errors" }, { c:observe { files = 100, errors = 50, seconds = 1 } })
    assert.same({ 1, "errors" }, { c:observe { files = 100, errors = 50, seconds = 1 } })
    c = concurrency.controller { threads = 4, max = 8, max_latency = 1 }
    assert.same({ 3, "latency" }, { c:observe { files = 10, errors = 0, seconds = 5 } })
    assert.same({ 3, "no data" }, { c:observe { files = 0, seconds = 1 } })
    -- Few files: errors do not count yet.
    c = concurrency.controller { threads = 4, max = 8 }
    assert.equal(5, (c:observe { files = 5, errors = 5, seconds = 0.01 }))
    assert.has_error(function() concurrency.controller { min = 4, max = 2 } end)
  end)

  it("never climbs above its ceiling (the policy's threads: 9p -> 1)", function()
    local c = concurrency.controller { threads = 1, max = 1, hold = 0 }
    for i = 1, 30 do
      -- ever faster batches: a controller without a ceiling would climb
      local n = c:observe { files = 100 * i, errors = 0, seconds = 1 }
      assert.equal(1, n)
    end
    c = concurrency.controller { threads = 3, max = 3, hold = 0 }
    for i = 1, 30 do assert.is_true(c:observe { files = 100 * i, errors = 0, seconds = 1 } <= 3) end
  end)
end)
