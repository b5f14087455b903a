-- lua/ntt/copier/console.lua: what a console (ntt attach) sees of a
-- copier's batches in flight, and may do to them.
--
--   console.reading(batches) -> { {path=, ino=, fs_index=, thread=, size=, bytes=, age=} }
--                               the files being read, the longest first
--   console.skip(batches, sel, reason) -> path | nil   the file at path or
--                               inode sel abandoned now (recorded skipped by
--                               the operator with reason)
--   console.pause(batches, on)  holds the copy threads between files, or lets them go
-- batches: { { job=, items= }, ... } (ntt.copier's in flight)
local M = {}

function M.reading(batches)
  local out = {}
  for _, b in ipairs(batches) do
    for _, f in ipairs(b.job:live()) do
      local item = b.items[f.index]
      out[#out + 1] = { path = f.path, ino = item and item.ino, fs_index = item and item.fs_index,
                        thread = f.thread, size = f.size, bytes = f.bytes, age = math.floor(f.age * 10 + 0.5) / 10 }
    end
  end
  table.sort(out, function(a, b) return a.age > b.age end)
  return out
end

function M.skip(batches, sel, reason)
  for _, b in ipairs(batches) do
    for i, item in ipairs(b.items) do
      if item.path == sel or item.ino == sel then
        item.operator = reason
        b.job:skip(i)
        return item.path
      end
    end
  end
end

function M.pause(batches, on)
  for _, b in ipairs(batches) do b.job:pause(on) end
end

return M
