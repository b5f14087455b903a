-- spec/diagnose_spec.lua: the findings for a failing file (ntt.diagnose) come
-- from a failure's fields (err, phase), never from its message text.
local diagnose = require "ntt.diagnose"

local function failure(err, phase, msg)
  return { ok = false, status = "failed", err = err, phase = phase, msg = msg or "" }
end

describe("ntt.diagnose", function()
  it("classifies a failure from err and phase, with a message that says nothing", function()
    local cases = {
      { "EIO", "read", "detected_io_error" },
      -- once the file is open, any failing read is the medium failing
      -- (fusefat answers EPERM for an unreadable cluster)
      { "EPERM", "read", "detected_io_error" },
      { "ENXIO", "read", "detected_io_error" },
      { "EIO", "open", "detected_io_error" },
      { "ENODATA", "read", "detected_beyond_eof" },
      { "ENOENT", "open", "detected_missing_file" },
      { "ENOTDIR", "open", "detected_missing_file" },
      { "ESTALE", "open", "detected_missing_file" },
      { "EACCES", "open", "detected_permission_error" },
      { "EPERM", "open", "detected_permission_error" },
      { "EFBIG", "read", "detected_other:EFBIG" },
      { "EINTR", "read", "detected_other:EINTR" },
      { "ENOSPC", "write", "detected_other:ENOSPC" },
      { "ENOSPC", "store", "detected_other:ENOSPC" },
    }
    for _, c in ipairs(cases) do
      assert.equal(c[3], diagnose.classify(failure(c[1], c[2])), c[1] .. " in " .. c[2])
    end
  end)

  it("ignores the message text: the same fields give the same finding whatever it says", function()
    local texts = { "", "read at byte 4096: Input/output error", "attempt to access beyond end of device",
                    "beyond EOF", "short file: 0 of 10 bytes" }
    for _, msg in ipairs(texts) do
      assert.equal("detected_missing_file", diagnose.classify(failure("ENOENT", "open", msg)), msg)
      assert.equal("detected_io_error", diagnose.classify(failure("EIO", "read", msg)), msg)
      assert.equal("detected_other:EFBIG", diagnose.classify(failure("EFBIG", "read", msg)), msg)
    end
  end)

  it("raises when given something other than a failure's fields", function()
    assert.has_error(function() diagnose.classify("EIO", "read at byte 0: Input/output error") end,
      "diagnose.classify: expects a failed copy result's fields {err=, phase=, ...}")
    assert.has_error(function() diagnose.classify({ err = "EIO", msg = "read at byte 0" }) end)
    assert.has_error(function() diagnose.gather { err = "EIO", msg = "read at byte 0", kernel_unavailable = true } end)
  end)

  it("gathers the class from the fields, with the kernel lines of our devices only", function()
    local patterns = { { pattern = "I/O error, dev loop%d+", finding = "dmesg:io_error" },
                       { pattern = "beyond end of device", finding = "dmesg:beyond_eof" } }
    local lines = {
      "blk_update_request: I/O error, dev loop3, sector 4096",
      { text = "loop31: rw=0, want=20, limit=10: attempt to access beyond end of device" },
    }
    assert.same({ "detected_io_error", "dmesg:io_error" },
      diagnose.gather { err = "EPERM", phase = "read", kernel_lines = lines, devices = { "/dev/loop3" },
                        patterns = patterns })
    assert.same({ "detected_beyond_eof", "dmesg:beyond_eof", "dmesg:io_error" },
      diagnose.gather { err = "ENODATA", phase = "read", kernel_lines = lines,
                        devices = { "/dev/loop3", "/dev/loop31" }, patterns = patterns })
    assert.same({ "detected_permission_error", "dmesg:unavailable" },
      diagnose.gather { err = "EACCES", phase = "open", kernel_unavailable = true })
  end)

  it("confirms a failure repeated alike on a medium with no kernel to ask (repeat:<class>)", function()
    local function tries(n, err, offset, dt)
      local t = {}
      for i = 1, n do t[i] = { err = err, offset = offset, at = (i - 1) * dt } end
      return t
    end
    assert.is_true(diagnose.repeated(tries(5, "EIO", 0, 0.1), 5, 2))
    assert.is_false(diagnose.repeated(tries(4, "EIO", 0, 0.1), 5, 2))       -- not yet N attempts
    assert.is_false(diagnose.repeated(tries(5, "EIO", 0, 1.0), 5, 2))       -- spread over 4 s
    local moving = tries(5, "EIO", 0, 0.1)
    moving[4].offset = 4096                                                 -- another offset
    assert.is_false(diagnose.repeated(moving, 5, 2))
    local mixed = tries(8, "EIO", 0, 0.1)
    mixed[1].err = "ENOENT"                                                 -- older than the last 5
    assert.is_true(diagnose.repeated(mixed, 5, 2))
    mixed[6].err = "EACCES"
    assert.is_false(diagnose.repeated(mixed, 5, 2))
    local confirm = { attempts = 5, seconds = 2 }
    assert.same({ "detected_io_error", "dmesg:unavailable", "repeat:io_error" },
      diagnose.gather { err = "EIO", phase = "read", kernel_unavailable = true,
                        tries = tries(10, "EIO", 8192, 0.1), confirm = confirm })
    -- without tries (a medium whose kernel can confirm) there is no such finding
    assert.same({ "detected_io_error", "dmesg:unavailable" },
      diagnose.gather { err = "EIO", phase = "read", kernel_unavailable = true, confirm = confirm })
  end)

  it("takes findings from elsewhere; a read the view refused past the image's end is beyond EOF", function()
    local got = diagnose.gather { err = "EIO", phase = "read", kernel_unavailable = true,
                                  more = { "view:beyond_eof" } }
    assert.same({ "detected_beyond_eof", "detected_io_error", "dmesg:unavailable", "view:beyond_eof" }, got)
    assert.is_true(diagnose.beyond_eof(got))
    -- a hole the map left inside the image is not the image's end
    got = diagnose.gather { err = "EIO", phase = "read", kernel_unavailable = true, more = { "view:unrescued" } }
    assert.same({ "detected_io_error", "dmesg:unavailable", "view:unrescued" }, got)
    assert.is_false(diagnose.beyond_eof(got))
    assert.is_true(diagnose.beyond_eof { ["dmesg:beyond_eof"] = true })
  end)
end)

describe("the default policy's diagnose rules", function()
  local policy = require "ntt.policy"
  local rules = require "ntt.rules"
  local d = assert(policy.load("default"))

  local function decide(findings)
    local a = assert(rules.decide(d.diagnose, findings))
    return a.reason and (a.kind .. " " .. a.reason) or a.kind
  end

  it("skip a file the honest view refused past the image's end as DIAGNOSTIC_SKIP:BEYOND_EOF", function()
    local found = diagnose.gather { err = "EIO", phase = "read", kernel_unavailable = true,
                                    more = { "view:beyond_eof" } }
    assert.equal("skip DIAGNOSTIC_SKIP:BEYOND_EOF", decide(found))
    -- the finding alone is enough, and it wins over a confirmed I/O error
    assert.equal("skip DIAGNOSTIC_SKIP:BEYOND_EOF", decide { "view:beyond_eof" })
    assert.equal("skip DIAGNOSTIC_SKIP:BEYOND_EOF",
                 decide { "detected_io_error", "dmesg:io_error", "view:beyond_eof" })
    assert.equal("continue", decide { "detected_io_error", "view:unrescued" })
  end)

  it("skip a failing file as FAT_ERROR_SKIP when the kernel's FAT driver reports an error on our device", function()
    local lines = {
      "FAT-fs (loop7): error, fat_get_cluster: invalid cluster chain (i_pos 0)",
      "FAT-fs (loop70): error, invalid access to FAT (entry 0x00000abc)",
      "FAT-fs (loop8): Directory bread(block 1316) failed",
    }
    local function on(dev, err, phase)
      return diagnose.gather { err = err or "EIO", phase = phase or "read", kernel_lines = lines, devices = { dev },
                               patterns = d.kernel_patterns }
    end
    assert.same({ "detected_io_error", "dmesg:fat_error" }, on("/dev/loop7"))
    assert.equal("skip FAT_ERROR_SKIP", decide(on("/dev/loop7")))
    assert.same({ "detected_io_error", "dmesg:fat_error" }, on("loop8"))
    -- another device's FAT error says nothing about this file
    assert.same({ "detected_io_error" }, on("/dev/loop9"))
    assert.equal("continue", decide(on("/dev/loop9")))
    -- a FAT error beside a file that fails for another reason decides nothing
    assert.equal("continue", decide(on("/dev/loop7", "ENOENT", "open")))
    -- the kernel's own I/O error on the device keeps its rule
    assert.equal("skip IO_ERROR_CONFIRMED", decide { "detected_io_error", "dmesg:io_error", "dmesg:fat_error" })
  end)
end)
