-- lua/ntt/states.lua: the inode states and reason strings, one list for
-- the loader (src/pg/states.h), enumerate and the copier.
--
--   states.LIST              the labels of the enum inode_state, in order
--   states.PENDING, .COPIED, .SKIPPED, .FAILED_RETRYABLE, .FAILED_PERMANENT,
--   .EXCLUDED, .NON_FILE, .DAMAGED          each label by name
--   states.REASONS           reasons: the loader's (excluded, directory,
--                            symlink, ...) and the copier's (no_path, not_mounted,
--                            damaged, salvaged, after_attempts, given_up;
--                            the last three are formats)
--   states.failed(s)         true for failed_retryable and failed_permanent
-- An unknown name raises (a typo is a bug, not a nil).
local core = require "ntt.core.load"

local M = { LIST = {}, REASONS = {} }

for i, s in ipairs(core.STATES) do
  M.LIST[i] = s
  M[s:upper()] = s
end

for k, v in pairs(core.REASONS) do M.REASONS[k] = v end
M.REASONS.no_path = "no path to read: the load left none that is not excluded"
M.REASONS.not_mounted = "filesystem p%d is not mounted"
M.REASONS.damaged = "overlaps unrescued areas of the image"
M.REASONS.salvaged = "salvaged: the readable bytes are stored, the unrescued ranges as zeros"
M.REASONS.after_attempts = "%s after %d attempts: %s"
M.REASONS.given_up = "given up by policy: %s"
M.REASONS.operator = "skipped by the operator: %s"
M.REASONS.stalled = "read stalled: no progress for %.0f s at byte %d (copy.stall_timeout)"

function M.failed(s)
  return s == M.FAILED_RETRYABLE or s == M.FAILED_PERMANENT
end

local function strict(t, what)
  return setmetatable(t, { __index = function(_, k)
    error(("ntt.states: no %s named '%s'"):format(what, tostring(k)), 2)
  end })
end
strict(M.REASONS, "reason")
return strict(M, "state")
