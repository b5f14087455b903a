-- spec/support/mediadb.lua: media made up in the test database for the
-- specs that load a walk without `ntt run` (enumerate, retry, copier).
--
--   mediadb.newhash(n)        -> a medium hash unique to this process, n and
--                                the moment (n apart: one spec's media apart)
--   mediadb.connect_for(url, setup, teardown, set)  for one describe (its
--                                setup and teardown): a migrated connection
--                                opened in setup is handed to set(conn),
--                                closed in teardown
--   mediadb.open(url, label [, base]) -> t, for one describe:
--                                before_each(t.connect); after_each(t.close)
--   t.connect() / t.close()      open t.conn, a migrated connection / close it
--   t.medium(root)            -> the hash (newhash(base + i), i-th call) of a
--                                new 'directory' medium at root
--   t.rows(h, sql)            -> rows of sql with INODE and PATH naming the
--                                partitions of medium h
local util = require "ntt.core.util"
local pg = require "ntt.core.pg"

local M = {}

function M.newhash(n)
  return ("%08x%08x%016x"):format(util.pid(), n, math.floor(util.now() * 1e6))
end

function M.connect_for(url, setup, teardown, set)
  local db = require "ntt.db"
  local conn
  setup(function() conn = assert(db.connect { url = url, migrate = true }); set(conn) end)
  teardown(function() conn:close() end)
end

function M.open(url, label, base)
  local db = require "ntt.db"
  local t, seq = {}, 0
  function t.connect()
    t.conn = assert(pg.connect(url))
    assert(db.migrate(t.conn))
  end
  function t.close() t.conn:close() end

  function t.medium(root)
    seq = seq + 1
    local h = M.newhash((base or 0) + seq)
    assert(t.conn:exec("INSERT INTO medium (medium_hash, medium_human, kind, image_path) VALUES ($1, $2, 'directory', $3)",
                       h, label .. " " .. seq, root))
    return h
  end

  function t.rows(h, sql)
    local i, p = db.partition_names(h)
    return assert(t.conn:exec((sql:gsub("INODE", i):gsub("PATH", p))))
  end
  return t
end

return M
