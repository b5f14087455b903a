-- lua/ntt/stage/copy.lua: every regular file of the medium into the store,
-- by this process and (with --workers N) N-1 worker processes claiming
-- batches from the same database.
--
-- Files overlapping unrescued areas of the image (mapfile + FIEMAP) are
-- recorded as damaged with their byte ranges, never stored as complete
-- (copy.damaged = "salvage": their readable bytes are stored, the damaged
-- ranges as zeros, and the row stays damaged with blob and ranges).
-- copy_done is set only when no file of the medium is left pending.
--
-- Files an earlier run left failed_retryable are tried again first
-- (copy.retry_failed, default true): made pending with their attempts reset,
-- so each run gives them a fresh retry.max (ctx.counts.retried).  A store
-- fault (ntt.copier) stops the copy and the whole run (ctx.halt): the
-- counts so far are kept, the medium is not blamed.
local copier = require "ntt.copier"
local rows_mod = require "ntt.copier.rows"
local runs = require "ntt.runs"
local config = require "ntt.config"
local media = require "ntt.media"
local cmedia = require "ntt.core.media"
local cfat = require "ntt.core.fat"
local mount = require "ntt.mount"
local progress = require "ntt.progress"
local reader = require "ntt.reader"
local proc = require "ntt.core.proc"
local json = require "ntt.json"
local util = require "ntt.core.util"
local live = require "ntt.live"

local M = {}

-- FAT read by a FUSE driver (no FIEMAP there): ntt.core.fat maps its files.
local FAT = { vfat = true, msdos = true, fat = true, fat12 = true, fat16 = true, fat32 = true }

-- Everything the copier needs to work on a mounted medium.
function M.setup(ctx)
  local m = ctx.medium
  local mres = ctx.mount_result or {}
  local devices, fsinfo = {}, {}
  for _, fs in ipairs(mres.filesystems or {}) do
    if fs.device then devices[#devices + 1] = fs.device end
    fsinfo[fs.fs_index] = { offset = fs.offset or 0,
                            fat = FAT[fs.fstype or ""] and fs.driver ~= "kernel" or false }
  end
  -- A file's extents, physical offsets relative to its filesystem.
  local function extents_of(item)
    local f = fsinfo[item.fs_index] or { offset = 0 }
    if f.fat and m.image_path then return cfat.extents(m.image_path, f.offset, item.path) end
    return cmedia.fiemap(item.root .. "/" .. item.path)
  end
  local salvage = (ctx.policy.copy or {}).damaged == "salvage"
  local damage_of
  local map = ctx.inspection and ctx.inspection.map
  if map and m.size and #map:holes(m.size) > 0 then
    damage_of = function(item)
      local extents = extents_of(item)
      if not extents then return nil end
      local f = fsinfo[item.fs_index] or { offset = 0 }
      -- a salvage zeroes what the honest view refuses (whole pages), so
      -- the engine never asks it for a refused byte
      local ranges = salvage and media.refused(map, extents, f.offset, item.size, { device_pages = f.fat })
        or media.damage(map, extents, f.offset, item.size)
      return ranges   -- file_offset, length, and where in the image with its map status
    end
  end
  -- Why the honest view fails a file's reads: past the end of the image
  -- file, or over bytes the map does not mark rescued (findings view:*).
  -- A file whose every byte the view serves is "view:readable": its read
  -- errors are not the medium's (the default rules try it again rather
  -- than skip it on the kernel's lines about other files).
  local view_of
  if mres.view and mres.view.image_size then
    view_of = function(item)
      local extents = item.path and extents_of(item)
      if not extents then return {} end
      local f = fsinfo[item.fs_index] or { offset = 0 }
      local found = media.view_findings(extents, f.offset, item.size, mres.view.image_size, map,
                                        { device_pages = f.fat })
      if #found == 0 and #extents > 0 then found[1] = "view:readable" end
      return found
    end
  end
  -- A lost mount (its FUSE driver or the honest view gone, unmounted, not
  -- reachable) is mounted again by the helper, which under the medium's
  -- lock finds the mount it recorded dead, takes it down and mounts afresh
  -- -- or, when another process got there first, hands back that mount.
  -- Never an unmount of our own: another run may be reading the mount.
  -- mount.remounts in a row per medium and process: a file copied since
  -- the last remount starts the count again (a mount that keeps dying
  -- stops the copy; one lost now and then over a long copy does not).
  -- A directory is never remounted.
  local remounts, budget = 0, (ctx.policy.mount or {}).remounts or 3
  local function remount_ok() remounts = 0 end
  local function remount()
    if m.kind == "directory" then return nil, "a directory medium is not remounted", "EINVAL" end
    if remounts >= budget then
      return nil, ("remount budget spent (%d in a row, mount.remounts)"):format(budget), "EAGAIN"
    end
    remounts = remounts + 1
    local mp = ctx.policy.mount or {}
    local res, err, code = mount.mount(m.hash, m.image_path, { map = m.map_path, timeout = mp.timeout,
                                                               reader = mp.reader, expect = m.stat })
    if not res then return nil, err, code end
    local roots = mount.roots_of(res)
    ctx.roots, ctx.mount_result = roots, res
    for i = #devices, 1, -1 do devices[i] = nil end
    for _, fs in ipairs(res.filesystems or {}) do
      if fs.device then devices[#devices + 1] = fs.device end
    end
    return roots
  end
  return { db = ctx.db, log = ctx.log, policy = ctx.policy, medium = m, roots = ctx.roots,
           devices = devices, damage_of = damage_of, view = view_of, remount = remount, remount_ok = remount_ok,
           view_file = ctx.mount_result and ctx.mount_result.view and ctx.mount_result.view.file,
           salvage = salvage, store_root = config.path("store") }
end

local function self_binary()
  local i = 0
  while arg and arg[i - 1] ~= nil do i = i - 1 end
  return arg and arg[i] or "ntt"
end

-- copy.deleted = "recover": the deleted files a reader can read, into the store.
local function recover_deleted(ctx)
  if (ctx.policy.copy or {}).deleted ~= "recover" or not ctx.roots then return true end
  local s, err, code, state = reader.recover(ctx.db, config.path("store"), ctx.medium.hash, ctx.roots)
  if not s then return nil, err, code, state end
  if s.recovered + s.failed > 0 then
    ctx.log:info("deleted_recovered", { medium = ctx.medium.hash, recovered = s.recovered, failed = s.failed })
  end
  return true
end

function M.run(ctx)
  local m = ctx.medium
  if not m then return nil, "copy needs identify first", "EINVAL" end
  local conn = ctx.db
  local rok, rerr, rcode, rstate = recover_deleted(ctx)
  if not rok then return nil, rerr, rcode, rstate end
  local rows = rows_mod.open(conn, m.hash)
  local counts = rows:counts()
  if not counts then
    ctx.log:info("copy_skipped", { medium = m.hash, reason = "not enumerated" })
    return true
  end
  local pending = counts.pending
  if ctx.roots and #ctx.roots > 0 and (ctx.policy.copy or {}).retry_failed ~= false then
    local n, rerr, rcode, rstate = rows:retry_failed()
    if not n then return nil, rerr, rcode, rstate end
    if n > 0 then
      ctx.counts.retried = (ctx.counts.retried or 0) + n
      pending = pending + n
      ctx.log:info("retry_failed", { medium = m.hash, files = n },
                   ("%s: %d files an earlier run left failed_retryable are tried again"):format(m.human or m.hash, n))
    end
  end
  if pending == 0 then
    rows:copy_done(true)
    ctx.log:info("copy_skipped", { medium = m.hash, reason = "nothing pending" })
    return true
  end
  if not ctx.roots or #ctx.roots == 0 then return true end
  -- More workers: processes of their own, each claiming from the database.
  local children = {}
  -- --limit N: at most N files of the medium, so one process claims them all
  local workers = ctx.limit and 1 or ctx.workers or 1
  for _ = 2, workers do
    local out = os.tmpname()   -- the worker's counts, one JSON line
    local p = proc.spawn { argv = { self_binary(), "worker", ctx.policy_path, m.hash }, stdout = out }
    if p then
      children[#children + 1] = { proc = p, pid = p:pid(), out = out }
      live.worker(p:pid(), m.hash, "running")
    else
      os.remove(out)
    end
  end
  local pg = (ctx.policy.progress or {})
  local size = rows:pending_size()
  local pr = progress.new { label = "copy " .. (m.human or m.hash), total = pending,
                            total_bytes = size and size.bytes, interval = pg.interval, bar = pg.bar }
  local unprogress = live.progress(pr)
  local opts = M.setup(ctx)
  opts.limit = ctx.limit
  -- The workers run in sessions of their own (a ^C at the terminal does not
  -- reach them): the signal this process got is passed on, once; each
  -- stops after its batch, its claims released.
  local forwarded
  local function forward()
    local sig = util.interrupted()
    if not sig or forwarded then return end
    forwarded = sig
    local n = 0
    for _, c in ipairs(children) do
      if not c.reaped and c.proc:kill(sig) then n = n + 1 end
    end
    ctx.workers_stopped = n
  end
  if #children == 0 then
    -- the engine's counts while each batch runs (files finished, bytes read)
    opts.progress = function(files, bytes) pr:set(files, bytes) end
    opts.on_batch = function(s) pr:set(s.files) end
  else
    -- Other processes copy too: the medium's rows say how far all got
    -- (counted at most once per progress interval: it reads the table).
    local last, interval = -math.huge, pg.interval or 5
    opts.on_batch = function(s)
      forward()
      local now = util.monotonic()
      if now - last < interval then return end
      last = now
      local n = rows:finished()
      if n then pr:set(math.max(0, n - (counts.total - pending)), s.bytes) end
    end
  end
  -- A worker that died leaves its batch claimed: hand it back now rather
  -- than after its lease, and say so.
  local function reaped(p, how, code)
    p.reaped = true
    live.worker(p.pid, m.hash, ("%s %s"):format(tostring(how), tostring(code)))
    if how == "exit" and code == 0 then return end
    if how == "exit" and code == 3 then return end   -- stopped by the store: its claims are released
    if forwarded then
      ctx.log:info("worker_stopped", { medium = m.hash, pid = p.pid, how = how, code = code })
      rows:release_prefix(copier.worker_prefix(p.pid))
      return
    end
    ctx.log:error("worker_failed", { medium = m.hash, pid = p.pid, how = how, code = code },
                  ("copy worker %d ended: %s %s"):format(p.pid, tostring(how), tostring(code)))
    rows:release_prefix(copier.worker_prefix(p.pid))
  end
  opts.idle = function()
    forward()
    for _, c in ipairs(children) do
      if not c.reaped then
        local how, code = c.proc:wait(0)
        if how then reaped(c, how, code) end
      end
    end
  end
  local stats, err, code, state, partial = copier.run(opts)
  unprogress()
  pr:finish()
  forward()
  for _, c in ipairs(children) do
    -- a stopped worker has a minute to write its batch, then it is killed;
    -- the console stays served while the last workers finish
    local deadline
    while not c.reaped do
      local how, wcode = c.proc:wait(0)
      if how then
        reaped(c, how, wcode)
      else
        if util.interrupted() and not forwarded then forward() end   -- the signal came while waiting
        if forwarded then
          deadline = deadline or util.monotonic() + 60
          if util.monotonic() > deadline then
            c.proc:kill(9)
            reaped(c, c.proc:wait(10))
          end
        end
        if not c.reaped then live.sleep(0.2) end
      end
    end
  end
  local fault = not stats and type(state) == "table" and state.side == "store" and state or nil
  if fault then
    -- the store stopped the copy: what was copied still counts, and the run stops
    ctx.halt, stats = true, fault.stats
  end
  -- Any other failure (a query the database refused ...) ends the stage,
  -- but the batches written before it were copied all the same: the run's
  -- counts say so.
  local failed = not stats and not fault and partial
  if failed then stats = partial end
  if not stats then
    for _, c in ipairs(children) do os.remove(c.out) end
    return nil, err, code, state
  end
  stats.reasons = stats.reasons or {}
  stats.rule_hits = stats.rule_hits or {}
  for _, c in ipairs(children) do
    -- its counts are its last whole line of counts (one after each batch: a
    -- worker killed midway has its written batches counted; a policy may
    -- have printed lines of its own)
    local f, w = io.open(c.out, "rb"), nil
    if f then
      for l in f:lines() do
        local okj, x = pcall(json.decode, l)
        if okj and type(x) == "table" and tonumber(x.copied) then w = x end
      end
      f:close()
    end
    os.remove(c.out)
    if w then
      for _, k in ipairs(copier.COUNTS) do
        stats[k] = (stats[k] or 0) + (tonumber(w[k]) or 0)
      end
      for r, n in pairs(type(w.reasons) == "table" and w.reasons or {}) do
        stats.reasons[r] = (stats.reasons[r] or 0) + (tonumber(n) or 0)
      end
      for r, n in pairs(type(w.rule_hits) == "table" and w.rule_hits or {}) do
        stats.rule_hits[r] = (stats.rule_hits[r] or 0) + (tonumber(n) or 0)
      end
    end
  end
  for _, k in ipairs(copier.COUNTS) do
    ctx.counts[k] = (ctx.counts[k] or 0) + stats[k]
  end
  ctx.counts.seconds = (ctx.counts.seconds or 0) + stats.seconds
  ctx.counts.reasons = ctx.counts.reasons or {}
  for r, n in pairs(stats.reasons) do ctx.counts.reasons[r] = (ctx.counts.reasons[r] or 0) + n end
  if fault or failed then
    return nil, err, code, fault or state
  end
  if rows:pending() == 0 then rows:copy_done() end
  ctx.log:info("copied", { medium = m.hash, files = stats.files, copied = stats.copied, new = stats.new,
                           deduplicated = stats.deduplicated, skipped = stats.skipped, failed = stats.failed,
                           damaged = stats.damaged, bytes = stats.bytes, seconds = stats.seconds,
                           batches = stats.batches, claim_seconds = stats.claim_seconds,
                           threads = stats.threads, kernel = stats.kernel, rule_hits = stats.rule_hits })
  -- Which diagnose rules decided (every worker's), added to the run's row.
  if ctx.run_id and next(stats.rule_hits) then
    local ok, rerr = runs.add_rule_hits(conn, ctx.run_id, stats.rule_hits)
    if not ok then ctx.log:warn("run_not_recorded", { run = ctx.run_id, error = rerr }) end
  end
  -- ^C stops the copier after its batch (claims released): counted above,
  -- and the run ends here with the code that makes its exit status 130.
  if util.interrupted() then
    ctx.copy_stopped = true
    return nil, "interrupted", "EINTR"
  end
  return true
end

return M
