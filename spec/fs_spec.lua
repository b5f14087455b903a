-- spec/fs_spec.lua: filesystem probing (ntt.core.fs) and the concurrency
-- policy built on it (ntt.concurrency).
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

  it("detects WSL from the kernel's own words", function()
    local f = io.open("/proc/sys/kernel/osrelease")
    local rel = f and f:read("a") or ""
    if f then f:close() end
    assert.equal(rel:lower():find("microsoft") ~= nil or rel:lower():find("wsl") ~= nil, fs.wsl())
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
end)
