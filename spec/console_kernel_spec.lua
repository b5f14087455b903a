-- spec/console_kernel_spec.lua: a decision the kernel's lines took part in
-- keeps the last of them with its diagnostic event; ntt.console.kernel and
-- failing read them back (a made-up medium: no partitions, no mount).
local json = require "ntt.json"
local runs = require "spec.support.runs"
local console = require "ntt.console"

describe("kernel lines", function()
  it("are kept with a diagnostic event whose findings came from them (the last 5)", function()
    local d = require("ntt.copier.retry").new { policy = {}, devices = { "/dev/loop3" } }
    for i = 1, 7 do d.kernel_lines[i] = ("I/O error, dev loop3, sector %d"):format(i) end
    d:event({ res = { err = "EIO", msg = "read" }, ino = 5, fs_index = 0 }, 3, { "dmesg:io_error" }, "skipped")
    d:event({ res = { err = "ENOENT", msg = "open" }, ino = 6, fs_index = 0 }, 3, { "detected_missing_file" }, "continuing")
    d:close()
    assert.same({ "I/O error, dev loop3, sector 3", "I/O error, dev loop3, sector 4", "I/O error, dev loop3, sector 5",
                  "I/O error, dev loop3, sector 6", "I/O error, dev loop3, sector 7" }, d.events[1].kernel)
    assert.is_nil(d.events[2].kernel)
  end)

  local ok, why = runs.can_run()
  if not ok then
    it("are read back by kernel(h)", function() pending(why) end)
    return
  end

  it("are read back by kernel(h), with the findings; a medium not enumerated has nothing failing", function()
    local conn = runs.db()
    local h = require("ntt.core.hash").sum("console kernel " .. runs.tag):sub(1, 40)
    local events = json.array {
      { ino = 5, fs_index = 0, checks = json.array { "detected_io_error", "dmesg:io_error" }, action = "skipped",
        timestamp = "2026-12-06T03:00:00.000Z", kernel = json.array { "I/O error, dev loop3, sector 9" } },
      { ino = 6, fs_index = 0, checks = json.array { "detected_missing_file" }, action = "continuing" },
    }
    assert(conn:exec("INSERT INTO medium (medium_hash, medium_human, kind, problems) VALUES ($1, $2, 'image', $3::jsonb)",
                     h, "kernel-" .. runs.tag, json.encode { diagnostic_events = events }))
    finally(function() conn:exec("DELETE FROM medium WHERE medium_hash = $1", h) end)
    local k = assert(console.kernel(conn, "kernel-" .. runs.tag))
    assert.equal(1, #k)
    assert.equal(5, k[1].ino)
    assert.same({ "dmesg:io_error" }, k[1].findings)
    assert.same({ "I/O error, dev loop3, sector 9" }, k[1].lines)
    assert.same({}, assert(console.failing(conn, h)))
    local m = assert(console.medium(conn, h:sub(1, 20)))
    assert.equal(2, m.events)
    assert.same({ "diagnostic_events" }, m.problems)
    local p = assert(console.problems(conn, h))
    assert.equal(1, #p)
    assert.equal(2, p[1].detail.count)
    local none, err, code = console.retry(conn, h, "x")
    assert.is_nil(none)
    assert.equal("ENOENT", code, err)
    local _, _, bad = console.blob(conn, "nothex")
    assert.equal("EINVAL", bad)
  end)
end)
