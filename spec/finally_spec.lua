-- spec/finally_spec.lua: the suite's `finally` stacks (spec/support/summary.lua):
-- every cleanup a test registers runs, last first -- plain busted would
-- keep only the last one, and a test that stopped a process and then
-- unmounted would leave the process running.
local ran = {}

describe("finally", function()
  it("takes several cleanups in one test", function()
    finally(function() ran[#ran + 1] = "first" end)
    finally(function() ran[#ran + 1] = "second" end)
    finally(function() ran[#ran + 1] = "third" end)
  end)

  it("ran every one of them, last first", function()
    assert.same({ "third", "second", "first" }, ran)
  end)
end)
