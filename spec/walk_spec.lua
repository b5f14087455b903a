-- spec/walk_spec.lua: ntt.core.walk enumerates one filesystem byte-exact.
--
-- Oracles are independent of the walker: find(1) for the set of entries
-- and their inode facts, io.open / a cd chain for opening recorded paths.
local helper = require "spec.support.helper"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local walk = require "ntt.core.walk"

-- Every record of a walk, keyed by path (a path seen twice fails).
local function collect(root, opts)
  local w = assert(walk.open(root, opts))
  local by, list = {}, {}
  while true do
    local batch, msg = w:next()
    assert(batch or msg == nil, msg)
    if not batch then break end
    for _, r in ipairs(batch) do
      assert(by[r.path] == nil, "path reported twice: " .. r.path)
      by[r.path] = r
      list[#list + 1] = r
    end
  end
  local res = w:result()
  w:close()
  return by, res, list
end

-- find's view: path -> { type, ino, nlink, size }.
local function find_view(root)
  local r = helper.sh { "find", root, "-xdev", "-printf", "%y %i %n %s %P\\0" }
  local view, n = {}, 0
  for rec in r.stdout:gmatch("([^%z]*)%z") do
    local y, i, nl, s, p = rec:match("^(%S) (%d+) (%d+) (%d+) (.*)$")
    assert(y, "unparsed find record")
    view[p] = { type = y, ino = tonumber(i), nlink = tonumber(nl), size = tonumber(s) }
    n = n + 1
  end
  return view, n
end

local function count(t) local n = 0 for _ in pairs(t) do n = n + 1 end return n end

local function assert_same_as_find(root, by, skip)
  local view = find_view(root)
  for p, f in pairs(view) do
    if not (skip and skip(p)) then
      local r = by[p]
      assert(r, ("find lists %q, the walk does not"):format(p))
      assert.equal(f.type, r.type)
      assert.equal(f.ino, r.ino)
      assert.equal(f.nlink, r.nlink)
      assert.equal(f.size, r.size)
    end
  end
  for p in pairs(by) do
    if not (skip and skip(p)) then
      assert(view[p], ("the walk lists %q, find does not"):format(p))
    end
  end
end

-- One line per record with every field, for comparing walks.
local function key(r)
  return table.concat({ r.path, r.name, r.type, r.ino, r.parent, r.mode, r.nlink, r.size,
                        r.mtime_ns, r.uid, r.gid, tostring(r.target), tostring(r.rdev),
                        tostring(r.mountpoint) }, "\0")
end

local function keys(list)
  local k = {}
  for i, r in ipairs(list) do k[i] = key(r) end
  table.sort(k)
  return k
end

local ODD = {
  "new\nline", "cr\rmid", "trailing cr\r", "Icon\r", "fs\28sep", "back\\nslash", "back\\rslash",
  "a\\", "hash#mark", 'double"quote', "single'quote", "\xff\xfe", "tab\tname", " lead space",
  "-dash", "\1\2\3", ("L"):rep(255), "caf\xc3\xa9", "x\xc3(y",
}

-- ODD names as files (content = name) plus a directory with odd names inside.
local function build_odd(root)
  for _, n in ipairs(ODD) do helper.write(root .. "/" .. n, n) end
  helper.sh { "mkdir", root .. "/d\nir\r" }
  helper.write(root .. "/d\nir\r/in\28side\\n", "inside")
end

-- A chain of depth directories (50-byte names), a file "leaf" at the bottom.
local function deep_names(depth)
  local c = {}
  for i = 1, depth do c[i] = ("%03d"):format(i) .. ("q"):rep(47) end
  return c
end

-- (perl-base is essential in Debian; its chdir has no PATH_MAX limit, a shell's cd has)
local function build_deep(root, comps)
  local argv = { "perl", "-e", 'chdir(shift) or die "$!"; for (@ARGV) { mkdir($_) or die "$!"; chdir($_) or die "$!" } open(my $f, ">", "leaf") or die "$!"; print $f "deep"', root }
  for _, c in ipairs(comps) do argv[#argv + 1] = c end
  helper.sh(argv)
end

-- Open a recorded path by walking its components relatively (any length).
local function cat_rel(root, path)
  local argv = { "perl", "-e", 'chdir(shift) or die "$!"; my $f = pop; for (@ARGV) { chdir($_) or die "$!" } open(my $h, "<", $f) or die "$!"; print <$h>', root }
  for c in (path .. "/"):gmatch("([^/]*)/") do argv[#argv + 1] = c end
  return helper.sh(argv).stdout
end

local function run_ntt(script, args, timeout)
  local dir = helper.tmpdir("walkscript")
  helper.write(dir .. "/s.lua", script)
  local argv = { helper.ntt, dir .. "/s.lua" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  return assert(proc.run { argv = argv, timeout = timeout or 120 })
end

describe("ntt.core.walk", function()
  it("records every name byte-exact, and each path opens back", function()
    local root = helper.tmpdir("walk")
    build_odd(root)
    local by, res = collect(root, { threads = 3 })
    assert.equal(#ODD + 3, res.entries)
    assert.equal(2, res.dirs)
    assert.same({}, res.errors)
    for _, n in ipairs(ODD) do
      local r = by[n]
      assert(r, ("missing %q"):format(n))
      assert.equal(n, r.name)
      assert.equal("f", r.type)
      assert.equal(#n, r.size)
      assert.equal(n, helper.read(root .. "/" .. r.path))
    end
    local inner = by["d\nir\r/in\28side\\n"]
    assert.equal("in\28side\\n", inner.name)
    assert.equal(by["d\nir\r"].ino, inner.parent)
    assert.equal("inside", helper.read(root .. "/" .. inner.path))
    assert_same_as_find(root, by)
  end)

  it("includes the root as path \"\" with itself as parent", function()
    local root = helper.tmpdir("walk")
    helper.write(root .. "/f", "x")
    local by = collect(root)
    local r = by[""]
    assert.equal("d", r.type)
    assert.equal("", r.name)
    assert.equal(r.ino, r.parent)
    assert.equal(r.ino, by.f.parent)
  end)

  it("walks paths longer than PATH_MAX (depth 100)", function()
    local root = helper.tmpdir("walk")
    local comps = deep_names(100)
    build_deep(root, comps)
    local by, res = collect(root, { threads = 2 })
    assert.same({}, res.errors)
    local leaf = table.concat(comps, "/") .. "/leaf"
    assert(#leaf > 4096)
    local r = by[leaf]
    assert(r, "deep leaf not found")
    assert.equal("f", r.type)
    assert.equal(102, res.entries)
    assert.equal("deep", cat_rel(root, r.path))
    assert_same_as_find(root, by)
  end)

  it("gives hardlinks one inode and two paths", function()
    local root = helper.tmpdir("walk")
    helper.sh { "mkdir", root .. "/sub" }
    helper.write(root .. "/one", "same")
    helper.sh { "ln", root .. "/one", root .. "/sub/two" }
    local by = collect(root)
    assert.equal(by.one.ino, by["sub/two"].ino)
    assert.equal(2, by.one.nlink)
    assert.equal(2, by["sub/two"].nlink)
    assert.equal(by.sub.ino, by["sub/two"].parent)
  end)

  it("records symlinks with their target and never follows them", function()
    local root = helper.tmpdir("walk")
    helper.sh { "mkdir", root .. "/sub" }
    helper.write(root .. "/sub/f", "x")
    helper.sh { "ln", "-s", "sub", root .. "/to_dir" }
    helper.sh { "ln", "-s", "loop", root .. "/loop" }
    helper.sh { "ln", "-s", "no\nwhere\r\xff", root .. "/dangling" }
    helper.sh { "ln", "-s", "/", root .. "/to_slash" }
    local by, res = collect(root)
    assert.equal(7, res.entries)
    assert.equal("l", by.to_dir.type)
    assert.equal("sub", by.to_dir.target)
    assert.equal("loop", by.loop.target)
    assert.equal("no\nwhere\r\xff", by.dangling.target)
    assert.equal("/", by.to_slash.target)
    assert.is_nil(by["to_dir/f"])
    assert.is_nil(by.sub.target)
  end)

  it("returns the same records with 1 and 8 threads", function()
    local root = helper.tmpdir("walk")
    build_odd(root)
    for d = 1, 20 do
      helper.sh { "mkdir", "-p", root .. "/t" .. d .. "/u" .. d }
      for f = 1, 30 do helper.write(root .. "/t" .. d .. "/u" .. d .. "/f" .. f, ("%d"):format(f)) end
    end
    local _, r1, l1 = collect(root, { threads = 1, batch = 7 })
    local _, r8, l8 = collect(root, { threads = 8 })
    assert.equal(r1.entries, r8.entries)
    assert.equal(#ODD + 3 + 40 + 600, #l1)
    assert.same(keys(l1), keys(l8))
    assert.equal(r1.entries, walk.count(root, { threads = 8 }).entries)
  end)

  it("writes an audit file that reads back byte-exact, plain and zstd", function()
    local root = helper.tmpdir("walk")
    build_odd(root)
    helper.sh { "ln", "-s", "t\na\rr\28get", root .. "/link" }
    local _, _, list = collect(root)
    local out = helper.tmpdir("walkout")
    for _, name in ipairs { "/audit.bin", "/audit.zst" } do
      local res = assert(walk.to_file(root, out .. name, { threads = 2 }))
      assert.equal(#list, res.entries)
      local recs, back = assert(walk.read_file(out .. name))
      assert.same(keys(list), keys(recs))
      assert.equal(res.entries, back.entries)
      assert.equal(res.dirs, back.dirs)
      assert.is_false(back.stalled)
    end
    local raw = helper.read(out .. "/audit.bin")
    local zst = helper.read(out .. "/audit.zst")
    assert.equal("NTTWALK1", raw:sub(1, 8))
    assert.equal("\x28\xb5\x2f\xfd", zst:sub(1, 4))
    helper.write(out .. "/cut.bin", raw:sub(1, #raw - 3))
    local no, msg, err = walk.read_file(out .. "/cut.bin")
    assert.is_nil(no)
    assert.matches("cut.bin", msg)
    assert.equal("EBADMSG", err)
    -- no temporary file is left behind
    local ls = helper.sh { "ls", "-A", out }
    assert.equal("audit.bin\naudit.zst\ncut.bin\n", ls.stdout)
  end)

  it("follows the binding conventions", function()
    local root = helper.tmpdir("walk")
    local no, msg, err = walk.open(root .. "/missing")
    assert.is_nil(no)
    assert.matches("missing", msg)
    assert.equal("ENOENT", err)
    assert.has_error(function() walk.open(root, { treads = 2 }) end)
    assert.has_error(function() walk.count(root, { threads = "many" }) end)
    local w = assert(walk.open(root))
    assert.matches("^ntt.Walker %(", tostring(w))
    w:close()
    w:close()
    assert.equal("ntt.Walker (closed)", tostring(w))
    assert.has_error(function() w:next() end)
    do local w2 <close> = assert(walk.open(root)); assert(w2:next()) end
    -- a walker dropped mid-walk is collected without trouble
    local w3 = assert(walk.open(root)); w3 = nil; collectgarbage()
    assert.is_nil(w3)
    assert.is_nil(select(1, walk.to_file(root, root .. "/no/such/dir/x.bin")))
  end)

  it("returns interrupted when SIGINT arrives", function()
    local root = helper.tmpdir("walk")
    build_odd(root)
    local r = run_ntt([[
      local util = require "ntt.core.util"
      local walk = require "ntt.core.walk"
      util.raise_on_interrupt(false)
      require("ntt.core.proc").run { argv = { "kill", "-INT", tostring(util.pid()) } }
      while not util.interrupted() do util.sleep(0.01) end
      local no, msg, err, res = walk.count(arg[1])
      local w = walk.open(arg[1])
      local b, m2, e2 = w:next()
      print(tostring(no), msg, err, tostring(res.interrupted), tostring(b), m2, e2, tostring(w:result().interrupted))
      w:close()
      util.clear_interrupt()
    ]], { root })
    assert.equal(0, r.code, r.stderr)
    assert.equal("nil\tinterrupted\tEINTR\ttrue\tnil\tinterrupted\tEINTR\ttrue\n", r.stdout)
  end)

  describe("memory", function()
    it("does not grow with the tree (50k vs 200k entries)", function()
      local root = helper.tmpdir("walkmem")
      local make = [[
        local proc = require "ntt.core.proc"
        local root, from, to = arg[1], tonumber(arg[2]), tonumber(arg[3])
        for d = from, to do
          local dir = root .. "/d" .. d
          assert(proc.run { argv = { "mkdir", dir } }.code == 0)
          for f = 1, 1000 do assert(io.open(dir .. "/f" .. f, "w")):close() end
        end
      ]]
      local measure = [[
        local walk = require "ntt.core.walk"
        local r = assert(walk[arg[2] ] == walk.count and walk.count(arg[1], { threads = 4 })
                         or walk.to_file(arg[1], arg[3], { threads = 4 }))
        local hwm
        for l in io.lines("/proc/self/status") do hwm = hwm or l:match("^VmHWM:%s*(%d+)") end
        print(r.entries, hwm)
      ]]
      local out = helper.tmpdir("walkmemout")
      local function hwm(mode)
        local r = run_ntt(measure, { root, mode, out .. "/a.zst" })
        assert.equal(0, r.code, r.stderr)
        local n, kb = r.stdout:match("^(%d+)\t(%d+)")
        return tonumber(n), tonumber(kb)
      end
      assert.equal(0, run_ntt(make, { root, 1, 50 }, 300).code)
      local n1, c1 = hwm("count")
      local _, f1 = hwm("to_file")
      assert.equal(50 * 1001 + 1, n1)
      assert.equal(0, run_ntt(make, { root, 51, 200 }, 600).code)
      local n2, c2 = hwm("count")
      local _, f2 = hwm("to_file")
      assert.equal(200 * 1001 + 1, n2)
      assert(c2 - c1 < 4096, ("count: VmHWM %d kB at 50k, %d kB at 200k"):format(c1, c2))
      assert(f2 - f1 < 4096, ("to_file: VmHWM %d kB at 50k, %d kB at 200k"):format(f1, f2))
    end)
  end)

  describe("as root", function()
    local function need_root()
      if not helper.is_root() then pending("needs root (loop and tmpfs mounts)") return false end
      return true
    end

    it("walks a loop-mounted ext4 image and stops at nested mounts", function()
      if not need_root() then return end
      local base = helper.tmpdir("walkext4")
      local src, mnt, img = base .. "/src", base .. "/mnt", base .. "/fs.img"
      helper.sh { "mkdir", src, mnt }
      build_odd(src)
      helper.sh { "mkdir", src .. "/nested", src .. "/bind_here", src .. "/sub" }
      helper.write(src .. "/nested/hidden", "covered by the tmpfs")
      helper.write(src .. "/sub/s", "s")
      helper.sh { "mkfs.ext4", "-q", "-F", "-d", src, img, "32M" }
      local mounted = {}
      finally(function()
        for i = #mounted, 1, -1 do proc.run { argv = { "umount", "-l", mounted[i] }, timeout = 30 } end
      end)
      helper.sh { "mount", "-o", "loop", img, mnt }
      mounted[#mounted + 1] = mnt
      -- mke2fs -d aborts on paths longer than PATH_MAX: add the deep chain mounted
      local comps = deep_names(100)
      build_deep(mnt, comps)
      helper.sh { "mount", "-o", "remount,ro", mnt }
      helper.sh { "mount", "-t", "tmpfs", "tmpfs", mnt .. "/nested" }
      mounted[#mounted + 1] = mnt .. "/nested"
      helper.write(mnt .. "/nested/in_tmpfs", "other fs")
      helper.sh { "mount", "--bind", mnt .. "/sub", mnt .. "/bind_here" }
      mounted[#mounted + 1] = mnt .. "/bind_here"

      local by, res = collect(mnt, { threads = 4 })
      assert.same({}, res.errors)
      for _, n in ipairs(ODD) do assert.equal(n, helper.read(mnt .. "/" .. by[n].path)) end
      assert.equal("deep", cat_rel(mnt, table.concat(comps, "/") .. "/leaf"))
      assert.is_true(by.nested.mountpoint)
      assert.is_true(by.bind_here.mountpoint)
      assert.is_nil(by["nested/in_tmpfs"])
      assert.is_nil(by["nested/hidden"])
      assert.is_nil(by["bind_here/s"])
      assert.is_nil(by.sub.mountpoint)
      assert.equal(2, res.mountpoint_count)
      local mp = {}
      for _, m in ipairs(res.mountpoints) do mp[#mp + 1] = m.path end
      table.sort(mp)
      assert.same({ "bind_here", "nested" }, mp)
      -- find -xdev does not notice the bind mount (same device): skip below it
      assert_same_as_find(mnt, by, function(p) return p:match("^bind_here/") end)
    end)
  end)

  describe("on a misbehaving FUSE filesystem", function()
    local bin
    local function fixture()
      if not helper.is_root() then pending("needs root to mount FUSE") return nil end
      if bin then return bin end
      local pc = proc.run { argv = { "pkg-config", "--cflags", "--libs", "fuse3" } }
      if not pc or pc.code ~= 0 then pending("libfuse3-dev is not installed") return nil end
      local dir = helper.tmpdir("walkfs")
      local argv = { "cc", "-O1", "-o", dir .. "/walkfs", "spec/fixtures/walkfs.c" }
      for w in pc.stdout:gmatch("%S+") do argv[#argv + 1] = w end
      helper.sh(argv)
      bin = dir .. "/walkfs"
      return bin
    end

    local function mount(hang)
      local mnt = helper.tmpdir("walkfsmnt")
      local p = assert(proc.spawn { argv = { bin, "-f", mnt }, env = { WALKFS_HANG = tostring(hang or 0) },
                                    stdout = "null", stderr = "null" })
      local t0 = util.monotonic()
      repeat
        local found = false
        for l in io.lines("/proc/self/mounts") do
          if l:find(" " .. mnt .. " ", 1, true) then found = true end
        end
        if found then break end
        util.sleep(0.05)
      until util.monotonic() - t0 > 10
      return mnt, p
    end

    local function unmount(mnt, p)
      p:kill(9)
      p:wait(10)
      proc.run { argv = { "umount", "-l", mnt }, timeout = 30 }
    end

    it("reports unreadable entries and duplicate names, and goes on", function()
      if not fixture() then return end
      local mnt, p = mount()
      finally(function() unmount(mnt, p) end)
      local by, res = collect(mnt, { threads = 2 })
      assert(by["z/last"] and by["ok/a"] and by["ok/b"] and by["badstat/fine"])
      assert.equal("same", by["dup/same"].name)
      assert(by["dup/other"])
      assert.equal(1, res.duplicate_count)
      assert.equal("dup/same", res.duplicates[1].path)
      local errs = {}
      for _, e in ipairs(res.errors) do errs[e.path] = e end
      assert.equal("EIO", errs.eio.err)
      assert.matches("getdents64", errs.eio.msg)
      assert.equal("EIO", errs["badstat/broken"].err)
      assert.is_nil(by["badstat/broken"])
      assert.equal(2, res.error_count)
      assert.is_false(res.stalled)
    end)

    for _, threads in ipairs { 1, 4 } do
      it(("gives up on a directory whose listing hangs (%d threads)"):format(threads), function()
        if not fixture() then return end
        local mnt, p = mount(120)
        finally(function() unmount(mnt, p) end)
        local r = run_ntt([[
          local proc, util = require "ntt.core.proc", require "ntt.core.util"
          local walk = require "ntt.core.walk"
          local t0 = util.monotonic()
          local w = assert(walk.open(arg[1], { stall_timeout = 2, threads = tonumber(arg[3]) }))
          local n = 0
          while true do local b = w:next(); if not b then break end n = n + #b end
          local res = w:result()
          w:close()
          io.write(("stalled=%s path=%s entries=%d n=%d seconds=%.1f\n"):format(
            tostring(res.stalled), tostring(res.stalled_path), res.entries, n, util.monotonic() - t0))
          io.flush()
          -- the stuck thread wakes when its filesystem goes away, and leaves
          proc.run { argv = { "kill", "-9", arg[2] } }
          util.sleep(1)
        ]], { mnt, tostring(p:pid()), tostring(threads) }, 60)
        assert.equal(0, r.code, r.stderr)
        local stalled, path, entries, n, secs = r.stdout:match(
          "^stalled=(%S+) path=(%S+) entries=(%d+) n=(%d+) seconds=([%d.]+)")
        assert.equal("true", stalled)
        assert.equal("hang", path)
        assert.equal(entries, n)
        assert(tonumber(secs) >= 2 and tonumber(secs) < 10, "stall took " .. secs .. " s")
        if threads > 1 then   -- the other directories were still walked
          assert.equal(13, tonumber(entries))
        end
      end)
    end
  end)
end)
