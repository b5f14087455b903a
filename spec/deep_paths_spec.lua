-- spec/deep_paths_spec.lua: a file deeper than PATH_MAX (4096 bytes of
-- path: a backup nested in a backup) is walked, copied, linked into the
-- tree, verified and exported like any other.  The kernel refuses such a
-- path in one call (ENAMETOOLONG); ntt opens it a stretch of whole names
-- at a time, beneath its root, following no link (paths_open_beneath and
-- paths_stat, src/os/paths.c).
local helper = require "spec.support.helper"
local runs = require "spec.support.runs"
local proc = require "ntt.core.proc"
local fs = require "ntt.core.fs"

describe("a file deeper than PATH_MAX", function()
  local ok, why = runs.can_run()
  if not ok then
    it("runs", function() pending(why) end)
    return
  end

  it("is copied, linked into the tree, verified and exported", function()
    local dir = helper.tmpdir("deep")
    local tree = dir .. "/shelf"
    local name = ("n"):rep(200)
    -- 25 levels of 200-byte names: 5,000 bytes of path, made a level at a
    -- time (perl-base is in every Debian; a shell's cd gives up past PATH_MAX)
    helper.sh { "perl", "-e", [[
      my ($top, $name, $tag) = @ARGV;
      mkdir $top or die; open(my $t, ">", "$top/top.txt") or die; print $t "top\n"; close $t;
      chdir $top or die;
      for (1 .. 25) { mkdir $name or die "mkdir: $!"; chdir $name or die "chdir: $!"; }
      open(my $f, ">", "deep.txt") or die; print $f "deep $tag\n"; close $f or die;
    ]], tree, name, runs.tag }
    local rel = (name .. "/"):rep(25) .. "deep.txt"
    assert.is_true(#rel > 4096)
    local st = assert(fs.stat(tree .. "/" .. rel))   -- fs.stat reaches it too
    local size = ("deep %s\n"):format(runs.tag):len()
    assert.equal(size, st.size)
    local home = dir .. "/home"
    local function ntt(argv)
      local full = { helper.ntt }
      for _, a in ipairs(argv) do full[#full + 1] = a end
      return assert(proc.run { argv = full, env = runs.env_of(dir, home), timeout = 300 })
    end
    local r = ntt { "run", runs.policy(dir), "--tree", tree }
    assert.equal(0, r.code, r.stderr)
    -- (the suite's database holds other specs' media: this one by its path)
    local row = assert(runs.db():exec("SELECT medium_hash FROM medium WHERE image_path = $1",
                                      (assert(fs.realpath(tree)))))[1]
    local h = assert(row, "the medium is recorded").medium_hash
    assert.equal(2, runs.copied(runs.db(), h))
    -- the tree stage's link to it
    local linked = assert(fs.stat(home .. "/tree/" .. h .. "/p0/" .. rel))
    assert.equal(size, linked.size)
    r = ntt { "verify", "--medium", h }
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.matches("0 tree paths wrong", r.stdout, 1, true)
    r = ntt { "export", h, dir .. "/out" }
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local out = assert(fs.stat(dir .. "/out/p0/" .. rel))
    assert.equal(size, out.size)
    assert.equal(st.mtime_ns, out.mtime_ns)
  end)
end)
