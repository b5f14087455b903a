-- spec/install_spec.lua: `make install DESTDIR=…` stages a tree whose ntt
-- finds its helper and its policies by name from any directory; the bash
-- completion registers itself; the worker unit and the examples are there.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local proc = require "ntt.core.proc"

describe("make install", function()
  local ok, why = runs.can_run()
  if not ok then
    it("installs a working ntt", function() pending(why) end)
    return
  end

  it("stages a tree whose ntt runs `default` and the README's policy path from another directory", function()
    local dir = helper.tmpdir("install")
    local stage, prefix = dir .. "/stage", "/opt/ntt-spec"
    local san = helper.build == "build-san" and "SAN=1" or "SAN=0"
    local r = assert(proc.run { argv = { "make", "-s", "install", san, "DESTDIR=" .. stage, "PREFIX=" .. prefix },
                                timeout = 600 })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local root = stage .. prefix
    for _, f in ipairs { "/bin/ntt", "/bin/ntt-mount-helper", "/share/ntt/policies/default.lua",
                         "/share/ntt/examples/site.lua", "/share/man/man1/ntt.1", "/share/doc/ntt/operations.md",
                         "/share/ntt/sudoers.ntt", "/share/ntt/mount-helper.conf.example",
                         "/lib/systemd/system/ntt-worker@.service", "/share/bash-completion/completions/ntt" } do
      assert.is_truthy(io.open(root .. f), f)
    end
    assert.is_truthy(helper.read(root .. "/lib/systemd/system/ntt-worker@.service")
                     :find("ExecStart=" .. prefix .. "/bin/ntt worker ${NTT_POLICY} %i", 1, true))
    assert.is_truthy(helper.read(root .. "/share/ntt/sudoers.ntt"):find(prefix .. "/bin/ntt-mount-helper", 1, true))
    -- the man page has examples
    assert.matches("\n%.SH EXAMPLES\n", helper.read(root .. "/share/man/man1/ntt.1"))
    -- an image, run from another directory by policy name and by the README's path
    local img = dir .. "/disk.img"
    images.ext(img, { size_mb = 4, files = { ["hello.txt"] = "installed " .. runs.tag } })
    local elsewhere = dir .. "/elsewhere"
    helper.sh { "mkdir", "-p", elsewhere }
    local input
    local function ntt(...)
      return assert(proc.run { argv = { root .. "/bin/ntt", ... }, cwd = elsewhere, input = input,
                               env = { NTT_HOME = dir .. "/home", NTT_LUA_PATH = "" }, timeout = 300 })
    end
    r = ntt("run", "default", img)
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local h = runs.medium_of(img)
    assert.equal(1, runs.copied(runs.db(), h))
    r = ntt("run", "policies/default.lua", img)
    assert.equal(0, r.code, r.stderr .. r.stdout)
    -- the installed policy file is the one found by name
    helper.write(root .. "/share/ntt/policies/spec_site.lua",
                 'return require("ntt").policy.extend("default", { retry = { max = 17 } })\n')
    input = "policy.retry.max\n"
    r = ntt("repl", "spec_site")
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("ntt> 17\n", r.stdout)
    -- bash completion
    r = assert(proc.run { argv = { "bash", "-c", "source '" .. root .. "/share/bash-completion/completions/ntt'; complete -p ntt" },
                          timeout = 30 })
    assert.equal(0, r.code, r.stderr)
    assert.matches("complete %-F _ntt ntt", r.stdout)
    r = assert(proc.run { argv = { "bash", "-c", "source '" .. root .. "/share/bash-completion/completions/ntt'; " ..
                                   "COMP_WORDS=(ntt run sp); COMP_CWORD=2; PATH='" .. root .. "/bin':$PATH _ntt; " ..
                                   "printf '%s\\n' \"${COMPREPLY[@]}\"" }, cwd = elsewhere, timeout = 30 })
    assert.matches("spec_site", r.stdout)
    r = assert(proc.run { argv = { "bash", "-c", "source '" .. root .. "/share/bash-completion/completions/ntt'; " ..
                                   "COMP_WORDS=(ntt pro); COMP_CWORD=1; PATH='" .. root .. "/bin':$PATH _ntt; " ..
                                   "printf '%s\\n' \"${COMPREPLY[@]}\"" }, cwd = elsewhere, timeout = 30 })
    assert.equal("problems\n", r.stdout)
  end)
end)
