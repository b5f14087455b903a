-- lua/ntt/db.lua: connecting, migrating and partitioning ntt's database.
--
--   db.connect([url | {url=, autostart=true, migrate=false}]) -> Conn | nil, msg, code
--       url defaults to $NTT_DB_URL, else the private cluster's URL (that
--       cluster is initialised and started first unless autostart=false).
--       migrate=true applies pending migrations (refusing a newer schema).
--   db.migrations()          -> array of { version=, name=, path= }, sorted
--   db.required()            -> the highest migration version ntt knows
--   db.version(conn)         -> the applied version (0: none) | nil, msg, code
--   db.migrate(conn)         -> version, applied (array of names) | nil, msg, code
--       each migration in its own transaction, under an advisory lock
--       (concurrent workers wait), recorded in schema_migrations.
--   db.check(conn)           -> version | nil, msg, "ESCHEMAOLD"|"ESCHEMANEW"
--   db.tx(conn, fn, ...)     -> fn's results after COMMIT | nil, msg, code
--       fn(conn, ...) raising -> ROLLBACK and re-raise; fn returning
--       nil, msg, code -> ROLLBACK and those are returned.
--   db.array(list [, n])     -> '{...}' array literal for a $n::type[] parameter
--   db.valid_hash(h)         -> boolean  (^[0-9a-f]{16,64}$)
--   db.partition_names(h)    -> inode name, path name (from the full hash)
--   db.partitions(conn, h)   -> inode, path (quoted, for SQL) | false when the
--                               medium has none | nil, msg, code, state
--   db.ensure_partitions(conn, h [, {create=false}]) -> inode name, path name, exists
--       | nil, msg, code   (create=false only checks: a load makes its own)
local pg = require "ntt.core.pg"
local embed = require "ntt.core.embed"
local fs = require "ntt.core.fs"
local config = require "ntt.config"

local M = {}

-- Two-int advisory lock keys: ("ntt", 1) migrations, ("ntt", 2) partitions.
local LOCK_NS = 0x6e7474
local LOCK_MIGRATE, LOCK_PARTITIONS = 1, 2
M.LOCK_NS, M.LOCK_PARTITIONS = LOCK_NS, LOCK_PARTITIONS

function M.connect(opts)
  if type(opts) == "string" then opts = { url = opts } end
  opts = opts or {}
  local url = opts.url or config.db_url()
  local conn, err, code
  if not url then
    local cluster = require("ntt.cluster").default()
    url = cluster:url()
    conn = pg.connect(url)            -- already running: no pg_ctl needed
    if not conn and opts.autostart ~= false then
      local ok, serr, scode, sstate = cluster:start { init = true }
      if not ok then return nil, serr, scode, sstate end
    end
  end
  if not conn then conn, err, code = pg.connect(url) end
  if not conn then return nil, err, code end
  if opts.migrate then
    local v, merr, mcode = M.migrate(conn)
    if not v then conn:close(); return nil, merr, mcode end
  end
  return conn
end

-- ---------------------------------------------------------------- migrations

local MIGRATION_DIR = "lua/ntt/migrations/"

function M.migrations()
  local seen, list = {}, {}
  local function add(path)
    local file = path:match("([^/]+)$")
    local v, name = file:match("^(%d+)_([%w_%-]+)%.sql$")
    if v and not seen[file] then
      seen[file] = true
      list[#list + 1] = { version = tonumber(v), name = file, path = MIGRATION_DIR .. file }
    end
  end
  if embed.root then   -- a source tree in development: its files, not the binary's
    for _, f in ipairs(fs.readdir(embed.root .. "/" .. MIGRATION_DIR) or {}) do add(f) end
  end
  for _, p in ipairs(embed.list()) do
    if p:sub(1, #MIGRATION_DIR) == MIGRATION_DIR then add(p) end
  end
  table.sort(list, function(a, b) return a.version < b.version end)
  for i = 2, #list do
    if list[i].version == list[i - 1].version then
      error(("db: two migrations share version %d (%s, %s)"):format(list[i].version,
        list[i - 1].name, list[i].name))
    end
  end
  return list
end

function M.required()
  local list = M.migrations()
  return #list > 0 and list[#list].version or 0
end

function M.version(conn)
  local r, err, code = conn:exec("SELECT to_regclass('schema_migrations') IS NOT NULL AS present")
  if not r then return nil, err, code end
  if not r[1].present then return 0 end
  r, err, code = conn:exec("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")
  if not r then return nil, err, code end
  return r[1].v
end

-- A PostgreSQL array literal for a $n parameter (cast it in the SQL:
-- $1::text[]).  list[1..n]; nil -> NULL, booleans -> t/f, numbers as is,
-- strings quoted (bytes that are not UTF-8 become '?': text must be).
local function element(v)
  local t = type(v)
  if v == nil then return "NULL" end
  if t == "boolean" then return v and "t" or "f" end
  if t == "number" then return tostring(v) end
  v = tostring(v)
  if not utf8.len(v) then
    local out, i = {}, 1
    while i <= #v do
      local ok, nxt = pcall(utf8.offset, v, 2, i)
      local c = ok and nxt and v:sub(i, nxt - 1)
      if c and utf8.len(c) then out[#out + 1] = c; i = nxt else out[#out + 1] = "?"; i = i + 1 end
    end
    v = table.concat(out)
  end
  return '"' .. v:gsub('[\\"]', "\\%0") .. '"'
end

function M.array(list, n)
  local out = {}
  for i = 1, n or #list do out[i] = element(list[i]) end
  return "{" .. table.concat(out, ",") .. "}"
end

function M.tx(conn, fn, ...)
  local ok, err, code, state = conn:begin()
  if not ok then return nil, err, code, state end
  local res = table.pack(pcall(fn, conn, ...))
  if not res[1] then
    conn:rollback()
    error(res[2], 0)
  end
  if res[2] == nil and res.n >= 3 then
    conn:rollback()
    return table.unpack(res, 2, res.n)
  end
  ok, err, code, state = conn:commit()
  if not ok then
    if select(2, conn:status()) ~= "idle" then conn:rollback() end
    return nil, err, code, state
  end
  return table.unpack(res, 2, res.n)
end

local function unlock(conn, key)
  conn:exec("SELECT pg_advisory_unlock($1, $2)", LOCK_NS, key)
end

function M.migrate(conn)
  local list = M.migrations()
  local _, err, code = conn:exec("SELECT pg_advisory_lock($1, $2)", LOCK_NS, LOCK_MIGRATE)
  if err then return nil, "db migrate: " .. err, code end
  local applied = {}
  local function step()
    local ok, e, c = conn:exec([[CREATE TABLE IF NOT EXISTS schema_migrations (
        version    integer PRIMARY KEY,
        name       text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now())]])
    if not ok then return nil, e, c end
    local current
    current, e, c = M.version(conn)
    if not current then return nil, e, c end
    if current > (#list > 0 and list[#list].version or 0) then
      return nil, ("schema version %d is newer than this ntt knows (%d): upgrade ntt")
        :format(current, list[#list] and list[#list].version or 0), "ESCHEMANEW"
    end
    local done = {}
    local rows
    rows, e, c = conn:exec("SELECT version FROM schema_migrations")
    if not rows then return nil, e, c end
    for _, r in ipairs(rows) do done[r.version] = true end
    for _, m in ipairs(list) do
      if not done[m.version] then
        local sql, gerr = embed.get(m.path)
        if not sql then return nil, gerr, "ENOENT" end
        ok, e, c = M.tx(conn, function()
          local r1, e1, c1 = conn:exec_script(sql)
          if not r1 then return nil, ("%s: %s"):format(m.name, e1), c1 end
          return conn:exec("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                           m.version, m.name)
        end)
        if not ok then return nil, e, c end
        applied[#applied + 1] = m.name
      end
    end
    return M.version(conn)
  end
  local pok, v, e, c = pcall(step)
  unlock(conn, LOCK_MIGRATE)
  if not pok then error(v, 0) end
  if not v then return nil, "db migrate: " .. tostring(e), c end
  return v, applied
end

function M.check(conn)
  local v, err, code = M.version(conn)
  if not v then return nil, err, code end
  local need = M.required()
  if v < need then
    return nil, ("database schema is version %d, this ntt requires %d: run `ntt db migrate`")
      :format(v, need), "ESCHEMAOLD"
  elseif v > need then
    return nil, ("database schema is version %d, newer than this ntt (%d): upgrade ntt")
      :format(v, need), "ESCHEMANEW"
  end
  return v
end

-- ---------------------------------------------------------------- partitions

function M.valid_hash(h)
  return type(h) == "string" and #h >= 16 and #h <= 64 and h:match("^[0-9a-f]+$") ~= nil
end

-- Identifiers are limited to 63 bytes: "inode_p_" + 55 fits; a longer hash
-- is named by the md5 of the FULL hash under a distinct prefix (never a
-- prefix of the hash, which two media can share).
local NAME_MAX_HASH = 55

function M.partition_names(h)
  if not M.valid_hash(h) then
    error(("db: invalid medium hash %q (want 16-64 lowercase hex)"):format(tostring(h)), 2)
  end
  if #h <= NAME_MAX_HASH then return "inode_p_" .. h, "path_p_" .. h end
  local d = require("ntt.md5").hex(h)   -- md5sum's digest: the names already made stay
  return "inode_h_" .. d, "path_h_" .. d
end

function M.partitions(conn, h)
  local it, pt = M.partition_names(h)
  it, pt = conn:escape_identifier(it), conn:escape_identifier(pt)
  local r, err, code, state = conn:exec("SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL AS present",
                                        it, pt)
  if not r then return nil, err, code, state end
  if not r[1].present then return false end
  return it, pt
end

function M.ensure_partitions(conn, h, opts)
  local create = not (opts and opts.create == false)
  if not M.valid_hash(h) then
    return nil, ("invalid medium hash %q (want 16-64 lowercase hex)"):format(tostring(h)), "EINVAL"
  end
  local iname, pname = M.partition_names(h)
  return M.tx(conn, function()
    local r, err, code = conn:exec("SELECT pg_advisory_xact_lock($1, $2)", LOCK_NS, LOCK_PARTITIONS)
    if not r then return nil, err, code end
    r, err, code = conn:exec("SELECT 1 AS x FROM medium WHERE medium_hash = $1", h)
    if not r then return nil, err, code end
    if #r == 0 then return nil, ("no medium %s: insert it first"):format(h), "ENOENT" end
    -- The partitions that already hold this hash (whatever their names).
    r, err, code = conn:exec([[
      SELECT c.relname AS name, p.relname AS parent
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
       WHERE p.oid IN ('inode'::regclass, 'path'::regclass)
         AND pg_get_expr(c.relpartbound, c.oid) = 'FOR VALUES IN (' || quote_literal($1) || ')']], h)
    if not r then return nil, err, code end
    local have = {}
    for _, row in ipairs(r) do have[row.parent] = row.name end
    if have.inode and have.inode ~= iname or have.path and have.path ~= pname then
      return nil, ("medium %s already has partitions %s/%s"):format(h, tostring(have.inode),
        tostring(have.path)), "EEXIST"
    end
    local lit = conn:escape_literal(h)
    local qi, qp = conn:escape_identifier(iname), conn:escape_identifier(pname)
    if have.inode and have.path then return iname, pname, true end
    if have.inode or have.path then
      return nil, ("medium %s has only one of its partitions %s/%s"):format(h, iname, pname), "EEXIST"
    end
    if not create then return iname, pname, false end
    for _, t in ipairs { { qi, "inode" }, { qp, "path" } } do
      r, err, code = conn:exec(("CREATE TABLE %s PARTITION OF %s FOR VALUES IN (%s)"):format(t[1], t[2], lit))
      if not r then return nil, err, code end
    end
    r, err, code = conn:exec("SELECT ntt_partition_keys($1::regclass, $2::regclass)", qi, qp)
    if not r then return nil, err, code end
    return iname, pname, true
  end)
end

return M
