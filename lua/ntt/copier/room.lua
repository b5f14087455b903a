-- lua/ntt/copier/room.lua: a claimed batch cut to what the store can take.
--
--   room.fit(claimed, room) -> how many of claimed, from the first, fit in
--     room bytes
--   room.bytes(items) -> what they may take on the store's disk (a batch
--     still being copied may write that much yet)
--   room.cut(rows, claimed, worker, room) -> kept | nil, msg, code, SQLSTATE
--     claimed: the batch's rows in claim order ({fs_index=, ino=, size=});
--     room: the bytes the store can still take above what it keeps free.
--     Keeps the longest head of claimed that fits in room, gives the rest
--     back (pending, unclaimed: the next claim takes them first) and
--     returns how many it kept -- 0 when not even the first file fits.
--   room.fault_message(fault, rows, medium) -> the one message of a store
--     fault (ntt.copier), once the medium's claims are back
--
-- The free space a store keeps (store.min_free_bytes / min_free_fraction)
-- is checked before each claim, but one batch of small files is a few
-- hundred MiB: begun with just that much free, it filled the disk the
-- store shares with the database, and the database then failed the run on
-- its own next write.  A file is taken to need its size in whole blocks
-- and a block more (a fan-out directory), as if none were in the store
-- already: a cut may be more careful than it had to be.  What other
-- processes' batches will write is not known here: with several workers,
-- the free space kept is the margin.
local fs = require "ntt.core.fs"

local M = {}

local function mib(n) return require("ntt.progress").bytes(n) end

local STORE_ERRORS = { ENOSPC = "No space left on device", EDQUOT = "Disk quota exceeded",
                       EROFS = "Read-only file system", EIO = "Input/output error" }

-- The one message of a store fault, once the medium's claims are back.
function M.fault_message(fault, rows, m)
  local left = rows:pending_size()
  if left then fault.pending, fault.pending_bytes = left.files, left.bytes end
  local space = fs.space(fault.store)
  if space then fault.avail = space.avail end
  local what = m.human or m.hash
  local why
  local keys = fault.for_db and "store.db_free_bytes: ntt's database is on that disk too"
               or "store.min_free_bytes, min_free_fraction"
  if fault.low and fault.next then
    why = ("only %s free: its next file (%s) would leave less than the %s it keeps free (%s)")
          :format(mib(fault.avail or 0), mib(fault.next), mib(fault.keep), keys)
  elseif fault.low then
    why = ("only %s free, below the %s it keeps free (%s)"):format(mib(fault.avail or 0), mib(fault.keep), keys)
  else
    why = ("%s (%s)"):format(STORE_ERRORS[fault.err] or fault.msg or fault.err, fault.err)
  end
  local need = fault.pending_bytes and math.max(0, fault.pending_bytes + fault.keep - (fault.avail or 0))
  fault.need = need
  local tail
  if fault.low or fault.err == "ENOSPC" or fault.err == "EDQUOT" then
    tail = ("free at least %s there (or grow it), then run again"):format(mib(need or fault.keep))
  elseif fault.err == "EROFS" then
    tail = "make it writable, then run again"
  else
    tail = "check the store (its disk, its permissions), then run again"
  end
  return ("store %s: %s; copy of %s stopped, its %s files still to copy need up to %s plus %s kept free, %s free: %s (nothing was counted against the medium)")
         :format(fault.store, why, what, tostring(fault.pending or "?"), mib(fault.pending_bytes or 0),
                 mib(fault.keep), mib(fault.avail or 0), tail)
end

-- What a file may take on the store's disk: its blocks, and one block more
-- for a new fan-out directory (a fresh store makes one for most blobs).
local BLOCK = 4096
local function takes(size)
  return (math.max(0, size or 0) + BLOCK - 1) // BLOCK * BLOCK + BLOCK
end

function M.fit(claimed, room)
  local sum, kept = 0, 0
  for i, r in ipairs(claimed) do
    sum = sum + takes(r.size)
    if sum > room then break end
    kept = i
  end
  return kept
end

function M.bytes(items)
  local n = 0
  for _, it in ipairs(items or {}) do n = n + takes(it.size) end
  return n
end

function M.cut(rows, claimed, worker, room)
  local kept = M.fit(claimed, room)
  if kept == #claimed then return kept end
  local back = table.move(claimed, kept + 1, #claimed, 1, {})
  for i = #claimed, kept + 1, -1 do claimed[i] = nil end
  local ok, err, code, state = rows:unclaim(back, worker)
  if not ok then return nil, err, code, state end
  return kept
end

return M
