-- spec/support/summary.lua: busted output handler.
--
-- Shows busted's usual terminal output, then ends with the one line CI reads:
-- "N passed, N failed, N skipped", taken from busted's own counters: errors
-- (in a spec or in its before/after hooks) are failures; pending specs --
-- those that cannot run here and say why -- are skipped.
--
-- It also makes `finally` stack: busted keeps only the last function a test
-- registers, so a test that registered two cleanups (stop the process,
-- then unmount) silently lost the first.  Here every one runs, last first,
-- each even when another fails; the first failure is reported.
return function(options)
  local busted = require "busted"
  local term = require("busted.outputHandlers.utfTerminal")(options)
  busted.subscribe({ "test", "start" }, function(element)
    local env = element.env
    if env and env.finally then
      local list = {}
      env.finally(function()
        local first
        for i = #list, 1, -1 do
          local ok, err = pcall(list[i])
          if not ok and first == nil then first = err end
        end
        if first ~= nil then error(first, 0) end
      end)
      env.finally = function(fn) list[#list + 1] = fn end
    end
    return nil, true
  end)
  busted.subscribe({ "suite", "end" }, function()
    io.stdout:write(("\n%d passed, %d failed, %d skipped\n"):format(
      term.successesCount, term.failuresCount + term.errorsCount, term.pendingsCount))
    io.stdout:flush()
    return nil, true
  end)
  return term
end
