-- spec/host_spec.lua: the ntt binary as a Lua interpreter and as a CLI.
local helper = require "spec.support.helper"
local proc = require "ntt.core.proc"

local function ntt(args, opts)
  local argv = { helper.ntt }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  opts = opts or {}
  return assert(proc.run { argv = argv, input = opts.input, env = opts.env, timeout = 60 })
end

describe("the ntt host", function()
  it("prints one version, shared by C and Lua", function()
    local r = ntt { "version" }
    assert.equal(0, r.code)
    local v = r.stdout:match("^ntt (%S+)")
    assert.equal(require("ntt").version, v)
    assert.equal(require("ntt.core.util").version, v)
  end)

  it("runs -e chunks and scripts with a lua.c-style arg table", function()
    local dir = helper.tmpdir("host")
    helper.write(dir .. "/s.lua", "print(arg[0], arg[1], arg[2], select('#', ...), arg[-1] ~= nil)")
    local r = ntt { dir .. "/s.lua", "one", "two" }
    assert.equal(0, r.code)
    assert.equal(dir .. "/s.lua\tone\ttwo\t2\ttrue\n", r.stdout)
    r = ntt { "-e", "print(require'ntt'.version)" }
    assert.equal(require("ntt").version .. "\n", r.stdout)
  end)

  it("reads a chunk from stdin with -", function()
    local r = ntt({ "-" }, { input = "io.write(6*7)" })
    assert.equal("42", r.stdout)
  end)

  it("reports script errors with a traceback and exit status 1", function()
    local r = ntt { "-e", "error('boom')" }
    assert.equal(1, r.code)
    assert.matches("boom", r.stderr)
    assert.matches("stack traceback", r.stderr)
  end)

  it("rejects an unknown subcommand with a usage exit status", function()
    local r = ntt { "frobnicate" }
    assert.equal(64, r.code)
    assert.matches("unknown subcommand 'frobnicate'", r.stderr)
  end)

  it("gives real --help for the program and its subcommands", function()
    local r = ntt { "--help" }
    assert.equal(0, r.code)
    assert.matches("version", r.stdout)
    r = ntt { "version", "--help" }
    assert.equal(0, r.code)
    assert.matches("usage: ntt version", r.stdout)
  end)

  it("loads embedded modules under their repository chunk names", function()
    local r = ntt { "-e", "print(debug.getinfo(require('ntt.cli').main, 'S').source)" }
    assert.equal("@lua/ntt/cli.lua\n", r.stdout)
    r = ntt({ "-e", "print(debug.getinfo(require('ntt.cli').main, 'S').source)" },
            { env = { NTT_LUA_PATH = "/nonexistent" } })
    assert.equal(1, r.code)
    assert.matches("no ntt module", r.stderr)
  end)
end)

describe("ntt.core.proc", function()
  it("runs argv without a shell and returns nil, msg, errname when it cannot start", function()
    local r, msg, name = proc.run { argv = { "/nonexistent/tool" } }
    assert.is_nil(r)
    assert.matches("/nonexistent/tool", msg)
    assert.equal("ENOENT", name)
  end)

  it("kills a child that outlives its timeout", function()
    local t0 = require("ntt.core.util").monotonic()
    local r = proc.run { argv = { "sleep", "10" }, timeout = 0.3 }
    assert.is_true(r.timed_out)
    assert.equal(9, r.signal)
    assert.is_true(require("ntt.core.util").monotonic() - t0 < 5)
  end)

  it("a child spawned with parent_death gets that signal when ntt is killed; one without outlives it", function()
    local helper = require "spec.support.helper"
    local util = require "ntt.core.util"
    local dir = helper.tmpdir("pdeath")
    -- an ntt that spawns two sleeps, writes their pids, and waits to be killed
    local script = dir .. "/parent.lua"
    helper.write(script, [[
      local proc = require "ntt.core.proc"
      local a = assert(proc.spawn { argv = { "sleep", "60" }, parent_death = 15 })
      local b = assert(proc.spawn { argv = { "sleep", "60" } })
      local f = assert(io.open(arg[1], "w"))
      f:write(a:pid(), " ", b:pid(), "\n")
      f:close()
      require("ntt.core.util").sleep(60)
    ]])
    local pidfile = dir .. "/pids"
    local parent = assert(proc.spawn { argv = { helper.ntt, script, pidfile } })
    finally(function() parent:kill(9); parent:wait(5) end)
    local pids
    for _ = 1, 250 do
      local f = io.open(pidfile)
      pids = f and f:read("l")
      if f then f:close() end
      if pids then break end
      util.sleep(0.02)
    end
    local a, b = assert(pids, "the parent started its children"):match("(%d+) (%d+)")
    finally(function() os.execute("kill -9 " .. b .. " 2>/dev/null") end)
    local function alive(pid) return io.open("/proc/" .. pid .. "/stat") ~= nil and
      not io.open("/proc/" .. pid .. "/stat"):read("a"):match("^%d+ %b() Z") end
    assert.is_true(alive(a) and alive(b))
    parent:kill(9)
    parent:wait(5)
    local gone = false
    for _ = 1, 100 do
      if not alive(a) then gone = true break end
      util.sleep(0.02)
    end
    assert.is_true(gone, "the child with parent_death ended with its parent")
    assert.is_true(alive(b), "the child without it outlives its parent")
    assert.has_error(function() proc.spawn { argv = { "true" }, parent_death = 99 } end)
  end)
end)
