-- spec/json_spec.lua: the JSON module.
local json = require "ntt.json"

describe("ntt.json", function()
  it("encodes with sorted keys, arrays and escapes", function()
    assert.equal('{"a":1,"b":[true,false,"x"],"c":{"d":null}}',
                 json.encode { c = { d = json.null }, b = { true, false, "x" }, a = 1 })
    assert.equal('"line\\nbreak\\ttab \\"q\\" \\\\ \\u001c"', json.encode("line\nbreak\ttab \"q\" \\ \28"))
    assert.equal("[]", json.encode(json.array {}))
    assert.equal("{}", json.encode({}))
    assert.equal("1.5", json.encode(1.5))
  end)

  it("always produces valid UTF-8 for arbitrary bytes", function()
    local s = json.encode("ok \xff\xfe é \xc3")
    assert.truthy(utf8.len(s))
    assert.equal('"ok \\u00ff\\u00fe é \\u00c3"', s)
  end)

  it("round-trips through decode", function()
    local v = { a = { 1, 2.5, "ü\n" }, b = { c = true }, n = -3 }
    assert.same(v, json.decode(json.encode(v)))
    assert.equal(json.null, json.decode("null"))
    assert.equal("\u{1F600}", json.decode('"\\ud83d\\ude00"'))
  end)

  it("reports malformed input with the byte position", function()
    local v, err = json.decode('{"a": [1, 2}')
    assert.is_nil(v)
    assert.matches("json: expected ',' or ']' at byte", err)
    assert.is_nil((json.decode("[1] x")))
    assert.has_error(function() json.encode({ [{}] = 1 }) end)
  end)
end)
