-- spec/support/summary.lua: busted output handler.
--
-- Shows busted's usual terminal output, then ends with the one line CI reads:
-- "N passed, N failed, N skipped", counted from the real results (errors are
-- failures; pending specs -- those that cannot run here and say why -- are
-- skipped).
return function(options)
  local busted = require "busted"
  local term = require("busted.outputHandlers.utfTerminal")(options)
  local counts = { success = 0, failure = 0, error = 0, pending = 0 }
  local function count(kind)
    return function() counts[kind] = counts[kind] + 1; return nil, true end
  end
  busted.subscribe({ "test", "end" }, function(_, _, status)
    if counts[status] then counts[status] = counts[status] + 1 end
    return nil, true
  end)
  busted.subscribe({ "error", "file" }, count("error"))
  busted.subscribe({ "error", "describe" }, count("error"))
  busted.subscribe({ "suite", "end" }, function()
    io.stdout:write(("\n%d passed, %d failed, %d skipped\n"):format(
      counts.success, counts.failure + counts.error, counts.pending))
    io.stdout:flush()
    return nil, true
  end)
  return term
end
