-- spec/support/summary.lua: busted output handler.
--
-- Shows busted's usual terminal output, then ends with the one line CI reads:
-- "N passed, N failed, N skipped", taken from busted's own counters: errors
-- (in a spec or in its before/after hooks) are failures; pending specs --
-- those that cannot run here and say why -- are skipped.
return function(options)
  local busted = require "busted"
  local term = require("busted.outputHandlers.utfTerminal")(options)
  busted.subscribe({ "suite", "end" }, function()
    io.stdout:write(("\n%d passed, %d failed, %d skipped\n"):format(
      term.successesCount, term.failuresCount + term.errorsCount, term.pendingsCount))
    io.stdout:flush()
    return nil, true
  end)
  return term
end
