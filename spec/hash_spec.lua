-- spec/hash_spec.lua: BLAKE3 (ntt.core.hash) against the official vectors
-- and b3sum, in every SIMD width the CPU has, and the `ntt hash` command.
local helper = require "spec.support.helper"
local hash = require "ntt.core.hash"
local proc = require "ntt.core.proc"

local VECTORS = os.getenv("NTT_BLAKE3_VECTORS")
if not VECTORS then
  for _, p in ipairs { "spec/fixtures/blake3-test-vectors.json", "/work/shared/vectors/blake3-test-vectors.json" } do
    local f = io.open(p)
    if f then f:close(); VECTORS = p; break end
  end
  VECTORS = VECTORS or "spec/fixtures/blake3-test-vectors.json"
end

-- The vectors file is flat: a key, a context, and cases of
-- {input_len, hash, keyed_hash, derive_key}; patterns are enough.
local function load_vectors()
  local f = io.open(VECTORS, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  local v = { key = s:match('"key"%s*:%s*"([^"]*)"'),
              context = s:match('"context_string"%s*:%s*"([^"]*)"'), cases = {} }
  for body in s:gmatch("{([^{}]*input_len[^{}]*)}") do
    v.cases[#v.cases + 1] = {
      len = tonumber(body:match('"input_len"%s*:%s*(%d+)')),
      hash = body:match('"hash"%s*:%s*"(%x+)"'),
      keyed = body:match('"keyed_hash"%s*:%s*"(%x+)"'),
      derive = body:match('"derive_key"%s*:%s*"(%x+)"'),
    }
  end
  return v
end

local function pattern_input(n)
  local t = {}
  for i = 0, n - 1 do t[#t + 1] = string.char(i % 251) end
  return table.concat(t)
end

local function b3sum(path, length)
  local argv = { "b3sum", "--num-threads", "1" }
  if length then argv[#argv + 1] = "--length"; argv[#argv + 1] = tostring(length) end
  argv[#argv + 1] = path
  local r = helper.sh(argv)
  return (r.stdout:match("^(%x+)"))
end

local function have_b3sum()
  local r = proc.run { argv = { "b3sum", "--version" } }
  return r and r.code == 0
end

local widths = {}
do
  local best = hash.simd(0)
  for _, w in ipairs { 1, 4, 8, 16 } do
    if w <= best then widths[#widths + 1] = w end
  end
end

describe("ntt.core.hash", function()
  local vectors = load_vectors()

  after_each(function() hash.simd(0) end)

  for _, w in ipairs(widths) do
    it(("passes every official vector (hash, keyed, derive, extended output) with %d lanes"):format(w), function()
      if not vectors then return pending("no vectors file at " .. VECTORS) end
      assert.equal(w, hash.simd(w))
      assert.is_true(#vectors.cases >= 30)
      for _, c in ipairs(vectors.cases) do
        local input = pattern_input(c.len)
        local n = #c.hash // 2
        assert.equal(c.hash, hash.new():update(input):hexdigest(n), "hash " .. c.len)
        assert.equal(c.hash:sub(1, 64), hash.sum(input), "sum " .. c.len)
        assert.equal(c.keyed, hash.keyed(vectors.key):update(input):hexdigest(n), "keyed " .. c.len)
        assert.equal(c.derive, hash.derive_key(vectors.context):update(input):hexdigest(n), "derive " .. c.len)
        -- Byte-at-a-time and uneven splits give the same digest.
        local h = hash.new()
        local i, step = 1, 1
        while i <= #input do
          h:update(input:sub(i, i + step - 1))
          i = i + step
          step = step % 1500 + 97
        end
        assert.equal(c.hash, h:hexdigest(n), "split " .. c.len)
      end
    end)
  end

  it("digest, hexdigest, hex, reset and close", function()
    local h = hash.new()
    assert.equal("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262", h:hexdigest())
    assert.equal(32, #h:digest())
    assert.equal(h:hexdigest(), hash.hex(h:digest()))
    assert.equal(h:hexdigest(100), hash.hex(h:digest(100)))
    assert.equal(h, h:update("abc"))
    assert.are_not.equal(hash.sum(""), h:hexdigest())
    h:reset()
    assert.equal(hash.sum(""), h:hexdigest())
    assert.equal("", h:digest(0))
    h:close()
    h:close()
    assert.matches("closed", tostring(h))
    assert.has_error(function() h:update("x") end)
    assert.has_error(function() hash.keyed("short") end)
    assert.equal("00ff41", hash.hex("\0\255A"))
  end)

  it("agrees with b3sum on random sizes around block and chunk boundaries", function()
    if not have_b3sum() then return pending("b3sum not installed") end
    local dir = helper.tmpdir("hash")
    local rnd = io.open("/dev/urandom", "rb")
    local sizes = { 0, 1, 63, 64, 65, 1023, 1024, 1025, 2047, 2048, 2049, 65535, 65536, 65537,
                    1048575, 1048576, 1048577, 3 * 1048576 + 17 }
    math.randomseed(os.time())
    for _ = 1, 12 do
      local base = ({ 64, 1024, 4096, 16384, 262144 })[math.random(5)] * math.random(1, 9)
      sizes[#sizes + 1] = base + math.random(-2, 2)
    end
    for _, n in ipairs(sizes) do
      local data = rnd:read(n) or ""
      local path = dir .. "/f" .. n
      helper.write(path, data)
      local want = b3sum(path)
      for _, w in ipairs(widths) do
        hash.simd(w)
        local hex, size = hash.file(path)
        assert.equal(want, hex, ("size %d, %d lanes"):format(n, w))
        assert.equal(n, size)
        assert.equal(want, hash.sum(data))
      end
      hash.simd(0)
      assert.equal(b3sum(path, 200), (hash.file(path, 200)))
    end
    rnd:close()
  end)

  it("updates ending exactly on chunk boundaries agree with b3sum and the one-shot digest", function()
    if not have_b3sum() then return pending("b3sum not installed") end
    local dir = helper.tmpdir("hashb")
    local rnd = io.open("/dev/urandom", "rb")
    local key = rnd:read(32)
    local ctx = "ntt hash_spec 2024-01-01 chunk boundaries"
    local MiB = 1048576
    local sizes = { 1024, 2048, 3072, 4096, 16384, 65536, MiB, MiB + 1024, 2 * MiB, 2 * MiB + 3072 }
    -- Piece lengths, cycled until the input is used up (the last piece is cut short).
    local splits = { { 1024 }, { 2048 }, { 4096, 1024 }, { 1024, 3072, 5120 }, { MiB }, { MiB - 1024, 1024 },
                     { 1000, 24 }, { 3000, 72, 2048 }, { 65536, 1 }, { 17, 1007, 64 * 1024 } }
    local function feed(h, data, split)
      local i, k = 1, 1
      while i <= #data do
        local n = split[k]
        h:update(data:sub(i, i + n - 1))
        i = i + n
        k = k % #split + 1
      end
      return h
    end
    local modes = {
      { name = "hash", new = hash.new, argv = {} },
      { name = "keyed", new = function() return hash.keyed(key) end, argv = { "--keyed" }, input = key },
      { name = "derive", new = function() return hash.derive_key(ctx) end, argv = { "--derive-key", ctx } },
    }
    for _, n in ipairs(sizes) do
      local data = rnd:read(n)
      local path = dir .. "/f" .. n
      helper.write(path, data)
      for _, m in ipairs(modes) do
        local argv = { "b3sum", "--num-threads", "1", "--length", "1000" }
        table.move(m.argv, 1, #m.argv, #argv + 1, argv)
        argv[#argv + 1] = path
        local want = helper.sh(argv, { input = m.input }).stdout:match("^(%x+)")
        assert.equal(2000, #want)
        local oneshot = m.new():update(data):hexdigest(1000)
        assert.equal(want, oneshot, ("%s, size %d, one shot"):format(m.name, n))
        for _, w in ipairs(widths) do
          hash.simd(w)
          for si, split in ipairs(splits) do
            local what = ("%s, size %d, %d lanes, split %d"):format(m.name, n, w, si)
            assert.equal(want, feed(m.new(), data, split):hexdigest(1000), what)
          end
          -- Finalize in the middle (on a boundary), then keep going.
          local what = ("%s, size %d, %d lanes"):format(m.name, n, w)
          local half = n // 2048 * 1024
          local h = feed(m.new(), data:sub(1, half), { 1024 })
          assert.equal(m.new():update(data:sub(1, half)):hexdigest(100), h:hexdigest(100), "prefix " .. what)
          h:update(data:sub(half + 1))
          assert.equal(want:sub(1, 64), h:hexdigest(), "continued " .. what)
        end
        hash.simd(0)
      end
      assert.equal(b3sum(path), (hash.file(path)))
      assert.equal(b3sum(path, 1000), (hash.file(path, 1000)))
    end
    rnd:close()
  end)

  it("hash.file agrees with b3sum mapped, read and chosen, across steps and windows", function()
    if not have_b3sum() then return pending("b3sum not installed") end
    local dir = helper.tmpdir("hashmap")
    local rnd = io.open("/dev/urandom", "rb")
    local MiB = 1048576
    -- Sparse files with random pieces around the 1 MiB blocks, the 8 MiB
    -- populate steps, the 64 MiB mapping threshold and the 256 MiB windows.
    local sizes = { 1, 4096, MiB + 1, 8 * MiB + 17, 64 * MiB - 1, 64 * MiB, 72 * MiB + 1023,
                    256 * MiB + 2048 + 5 }
    for _, n in ipairs(sizes) do
      local path = dir .. "/s" .. n
      local f = assert(io.open(path, "wb"))
      for _, off in ipairs { 0, MiB - 3, 8 * MiB - 100, 64 * MiB - 10, 256 * MiB - 50, n - 4096 } do
        if off >= 0 and off < n then
          f:seek("set", off)
          f:write(rnd:read(math.min(4096, n - off)))
        end
      end
      f:close()
      local want = b3sum(path)
      for _, how in ipairs { "auto", "map", "read" } do
        local hex, size = hash.file(path, nil, how)
        assert.equal(want, hex, ("size %d, %s"):format(n, how))
        assert.equal(n, size)
      end
      assert.equal(b3sum(path, 100), (hash.file(path, 100, "map")))
      os.remove(path)
    end
    rnd:close()
    assert.has_error(function() hash.file(dir, nil, "mmap") end)
  end)

  it("hash.file on threads agrees with b3sum, whole segments with and without a rest", function()
    if not have_b3sum() then return pending("b3sum not installed") end
    local dir = helper.tmpdir("hashthr")
    local MiB = 1048576
    local rnd = io.open("/dev/urandom", "rb")
    -- 1, 2 and 4 MiB segments: one segment only (streamed), exactly two,
    -- two plus a byte, an odd count with a rest, many
    local cases = { { MiB + 7, 1 }, { 2 * MiB, 1 }, { 2 * MiB + 1, 1 }, { 5 * MiB + 5000, 1 },
                    { 8 * MiB, 2 }, { 13 * MiB - 1, 4 }, { 37 * MiB + 1025, 1 } }
    for _, c in ipairs(cases) do
      local n, seg = c[1], c[2]
      local path = ("%s/t%d-%d"):format(dir, n, seg)
      local f = assert(io.open(path, "wb"))
      local left = n
      while left > 0 do
        local k = math.min(left, MiB)
        f:write(rnd:read(k))
        left = left - k
      end
      f:close()
      local want = b3sum(path)
      local hex, size = hash.file(path, nil, "threads", seg)
      assert.equal(want, hex, ("size %d, segments of %d MiB"):format(n, seg))
      assert.equal(n, size)
      assert.equal(b3sum(path, 16), (hash.file(path, 16, "threads", seg)))
      os.remove(path)
    end
    rnd:close()
    assert.has_error(function() hash.file(dir, nil, "threads", 3) end)
    local _, _, code = hash.file(dir .. "/missing", nil, "threads")
    assert.equal("ENOENT", code)
  end)

  it("hash.file on threads agrees with b3sum on sparse files: holes hashed unread", function()
    if not have_b3sum() then return pending("b3sum not installed") end
    local dir = helper.tmpdir("hashsparse")
    local MiB = 1048576
    local rnd = io.open("/dev/urandom", "rb")
    -- data islands: at the start, across a MiB and a segment boundary, one
    -- byte alone in a segment of holes, at the very end; and a file of holes only
    local files = {
      { size = 40 * MiB, islands = { { 0, 5000 }, { 3 * MiB - 10, 20 }, { 8 * MiB - 4096, 8192 },
                                     { 21 * MiB + 777, 1 }, { 40 * MiB - 3, 3 } } },
      { size = 33 * MiB + 513, islands = { { 17 * MiB, MiB }, { 33 * MiB + 500, 13 } } },
      { size = 24 * MiB, islands = {} },
    }
    for i, f in ipairs(files) do
      local path = ("%s/s%d"):format(dir, i)
      local fh = assert(io.open(path, "wb"))
      for _, isl in ipairs(f.islands) do
        fh:seek("set", isl[1])
        fh:write(rnd:read(isl[2]))
      end
      fh:close()
      assert(proc.run { argv = { "truncate", "-s", tostring(f.size), path } })
      for _, seg in ipairs { 1, 4 } do
        local hex, size = hash.file(path, nil, "threads", seg)
        assert.equal(b3sum(path), hex, ("file %d, segments of %d MiB"):format(i, seg))
        assert.equal(f.size, size)
      end
      os.remove(path)
    end
    rnd:close()
  end)

  it("hash.file fails with nil, msg, errname", function()
    local hex, msg, ename = hash.file("/nonexistent/x")
    assert.is_nil(hex)
    assert.matches("/nonexistent/x", msg)
    assert.equal("ENOENT", ename)
    local _, _, e2 = hash.file("/")
    assert.equal("EISDIR", e2)
  end)
end)

describe("ntt hash", function()
  it("prints b3sum's format, reports failures on stderr and exits 1", function()
    if not have_b3sum() then return pending("b3sum not installed") end
    local dir = helper.tmpdir("hashcmd")
    helper.write(dir .. "/a", "hello\n")
    helper.write(dir .. "/b b", string.rep("x", 5000))
    local r = helper.sh { helper.ntt, "hash", dir .. "/a", dir .. "/b b" }
    local want = helper.sh { "b3sum", dir .. "/a", dir .. "/b b" }
    assert.equal(want.stdout, r.stdout)
    r = helper.sh({ helper.ntt, "hash", dir .. "/a", dir .. "/missing" }, { may_fail = true })
    assert.equal(1, r.code)
    assert.matches("missing", r.stderr)
    assert.equal(1, select(2, r.stdout:gsub("\n", "")))
    r = helper.sh { helper.ntt, "hash", "--length", "100", dir .. "/a" }
    want = helper.sh { "b3sum", "--length", "100", dir .. "/a" }
    assert.equal(want.stdout, r.stdout)
  end)
end)
