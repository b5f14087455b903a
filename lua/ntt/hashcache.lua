-- lua/ntt/hashcache.lua: the whole-content hash of an image file, computed
-- once and remembered (table image_hash_cache, migration 008).
--
--   hashcache.new(conn) -> cache
--   cache:get(path, st) -> { hash=, sampled=, unreadable_bytes= } | false
--                        | nil, msg, "EDB", sqlstate
--       st is fs.stat(path): a row counts only while the file has the same
--       device, inode, size, mtime and ctime (a write moves ctime even when
--       mtime is set back afterwards).
--   cache:put(path, st, hash, sampled [, unreadable_bytes]) -> true | nil, msg, "EDB", sqlstate
local M = {}
local Cache = {}
Cache.__index = Cache

function M.new(conn)
  if type(conn) ~= "table" and type(conn) ~= "userdata" then
    error("hashcache.new: a database connection expected", 2)
  end
  return setmetatable({ conn = conn }, Cache)
end

function Cache:get(path, st)
  local r, err, code, state = self.conn:exec([[
    SELECT content_hash, sampled_hash, unreadable_bytes FROM image_hash_cache
     WHERE path = $1 AND dev = $2 AND ino = $3 AND size = $4 AND mtime_ns = $5 AND ctime_ns = $6]],
    path, st.dev, st.ino, st.size, st.mtime_ns, st.ctime_ns)
  if not r then return nil, err, code, state end
  local row = r[1]
  if not row then return false end
  return { hash = row.content_hash, sampled = row.sampled_hash,
           unreadable_bytes = row.unreadable_bytes and tonumber(row.unreadable_bytes) or nil }
end

function Cache:put(path, st, hash, sampled, unreadable)
  local r, err, code, state = self.conn:exec([[
    INSERT INTO image_hash_cache (path, dev, ino, size, mtime_ns, ctime_ns, content_hash,
                                  sampled_hash, unreadable_bytes, hashed_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
    ON CONFLICT (path) DO UPDATE
       SET dev = EXCLUDED.dev, ino = EXCLUDED.ino, size = EXCLUDED.size,
           mtime_ns = EXCLUDED.mtime_ns, ctime_ns = EXCLUDED.ctime_ns,
           content_hash = EXCLUDED.content_hash, sampled_hash = EXCLUDED.sampled_hash,
           unreadable_bytes = EXCLUDED.unreadable_bytes, hashed_at = now()]],
    path, st.dev, st.ino, st.size, st.mtime_ns, st.ctime_ns, hash, sampled, unreadable)
  if not r then return nil, err, code, state end
  return true
end

return M
