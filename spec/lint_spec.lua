-- spec/lint_spec.lua: no Lua module or policy spawns a process for a
-- filesystem primitive (ntt.core.fs has them all), and no module reaches
-- for a shell at all (io.popen, os.execute).  `make lint` greps for the
-- same on single lines; this check also sees an argv spread over lines.
local luasrc = require "spec.support.luasrc"

-- Programs that only do what ntt.core.fs does in-process.
local PRIMITIVES = {}
for _, p in ipairs { "ls", "find", "stat", "test", "mkdir", "rm", "rmdir", "cp", "mv", "cat",
                     "readlink", "realpath", "du", "df", "chmod", "chown", "touch", "ln" } do
  PRIMITIVES[p] = true
end

-- The text with comments blanked out (strings kept, line breaks kept), so a
-- comment that mentions io.popen is not a finding.
local function code_only(text)
  local out, i, n = {}, 1, #text
  while i <= n do
    local c = text:sub(i, i)
    if c == "-" and text:sub(i, i + 1) == "--" then
      local stop = luasrc.comment_end(text, i)
      out[#out + 1] = text:sub(i, stop):gsub("[^\n]", " ")
      i = stop + 1
    elseif c == '"' or c == "'" then
      local j = i + 1
      while j <= n do
        local d = text:sub(j, j)
        if d == "\\" then j = j + 2
        elseif d == c or d == "\n" then break
        else j = j + 1 end
      end
      out[#out + 1] = text:sub(i, j)
      i = j + 1
    else   -- plain code up to the next quote or dash (a lone dash included)
      local j = text:find("[-\"']", i + 1) or n + 1
      out[#out + 1] = text:sub(i, j - 1)
      i = j
    end
  end
  return table.concat(out)
end

local function line_of(text, pos)
  local _, breaks = text:sub(1, pos):gsub("\n", "")
  return breaks + 1
end

-- Findings "name:line: what" for one file's text.
local function check(name, text)
  local code = code_only(text)
  local found = {}
  local function add(pos, what)
    found[#found + 1] = { line = line_of(code, pos), text = ("%s:%d: %s"):format(name, line_of(code, pos), what) }
  end
  for _, call in ipairs { "io%.popen", "os%.execute" } do
    local s = 1
    while true do
      local a, b = code:find("%f[%w_.]" .. call .. "%f[^%w_]", s)
      if not a then break end
      add(a, call:gsub("%%", "") .. " runs a shell")
      s = b + 1
    end
  end
  -- A table constructor whose first item is a string naming a program,
  -- after argv = or as the argument of run/spawn (any wrapper of proc.run).
  for _, lead in ipairs { "argv%s*=%s*{%s*", "run%s*%(?%s*{%s*", "spawn%s*%(?%s*{%s*" } do
    local s = 1
    while true do
      local a, b, q = code:find("%f[%w_]" .. lead .. "([\"'])", s)
      if not a then break end
      local prog = code:match("^([^\"'\n]*)" .. q, b + 1)
      local base = prog and prog:match("([^/]*)$")
      if base and PRIMITIVES[base] then
        add(a, ("spawns '%s' for a filesystem primitive: use ntt.core.fs"):format(prog))
      end
      s = b + 1
    end
  end
  table.sort(found, function(x, y) return x.line < y.line end)
  local list = {}
  for _, f in ipairs(found) do list[#list + 1] = f.text end
  return list
end

describe("lint: no process for a filesystem primitive", function()
  it("finds shells and primitive programs, and names file:line", function()
    local text = table.concat({
      'local proc = require "ntt.core.proc"',
      '-- io.popen("ls") in a comment is fine, and so is "rm" in a string: "run { \\"rm\\" }"',
      'local p = io.popen("ls /tmp")',
      'proc.run { argv = { "mkdir", "-p", dir }, timeout = 30 }',
      'local r = proc.run {',
      '  argv = {',
      '    "/usr/bin/find", dir, "-type", "f" } }',
      'run { "chown", user, dir }',
      'proc.spawn({ "cat", file })',
      'os.execute("true")',
      'proc.run { argv = { "pg_ctl", "start" } }',
      'proc.run { argv = { "lsblk" } }',
      '--[[ a block comment: proc.run { argv = { "rm", "-rf", "/" } } ]]',
    }, "\n")
    assert.same({
      "x.lua:3: io.popen runs a shell",
      "x.lua:4: spawns 'mkdir' for a filesystem primitive: use ntt.core.fs",
      "x.lua:6: spawns '/usr/bin/find' for a filesystem primitive: use ntt.core.fs",
      "x.lua:8: spawns 'chown' for a filesystem primitive: use ntt.core.fs",
      "x.lua:9: spawns 'cat' for a filesystem primitive: use ntt.core.fs",
      "x.lua:10: os.execute runs a shell",
    }, check("x.lua", text))
  end)

  it("holds for every file under lua/ and policies/", function()
    local files = luasrc.files("policies", nil, luasrc.files("lua"))
    assert.is_true(#files > 20)
    local found = {}
    for _, path in ipairs(files) do
      local text = luasrc.read(path)
      for _, line in ipairs(check(path, text)) do found[#found + 1] = line end
    end
    assert(#found == 0, "\n" .. table.concat(found, "\n"))
  end)
end)
