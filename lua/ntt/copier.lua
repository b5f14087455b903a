-- lua/ntt/copier.lua: claim batches of a medium's files, copy them into the
-- store, retry and diagnose failures, record every decision.
--
--   copier.run(opts) -> stats | nil, msg, code
--     opts = { db=, log=, policy=, medium={hash=, human=, image_path=, map_path=},
--              roots={ {fs_index=, root=} }, devices={ "loop3", ... }, view_file=the honest view's file,
--              remount_ok=function() called when files were copied (the remounts in a row start again),
--              map=parsed mapfile or nil, worker=id, store_root=, remount=function() -> roots,
--              damage_of=function(item) -> damaged ranges, salvage=bool (store those
--              files with their damaged ranges as zeros; the row stays damaged),
--              view=function(item) -> the honest view's findings for a failing file,
--              on_batch=function(stats) after each batch, idle=function() while others hold claims,
--              limit=N: claim at most N files, then stop (ntt run --limit)
--              progress=function(files, bytes) the engine's counts (files finished, bytes read)
--              about five times a second while a batch runs }
--   stats = { files=, copied=, new=, deduplicated=, skipped=, failed=, damaged=, salvaged=,
--             bytes=, seconds=, batches=, claim_seconds=, reasons={reason -> n},
--             rule_hits={rule label -> n}, threads=, fs_kind=, kernel= }
--   A failing query ends the run: its claims are released and it returns
--   nil, msg, "EDB", SQLSTATE (docs/errors.md), stats (the batches written
--   before it; so does any other failure, after its own code and state).
--   A store fault ends it too: a file failing on the store's side (the
--   engine's side = "store": ENOSPC, EDQUOT, EROFS, EIO writing, syncing or
--   renaming in the store), or less free space in the store than the policy
--   keeps (store.min_free_bytes / min_free_fraction, checked before each
--   claim).  Nothing of the batch is written: no attempt counted, no
--   diagnosis, no problem on the medium; every claim is released and it
--   returns nil, msg, errno name ("ENOSPC" for the low-space check),
--   fault = { side = "store", store =, err =, avail =, keep =, pending =,
--   pending_bytes =, need =, stats = the counts so far }.  msg names the
--   store and the free space the medium's pending files need.
--
-- This module drives the batches; the SQL is ntt.copier.rows', the retries
-- and diagnosis ntt.copier.retry's.  Claims: one short transaction takes up
-- to copy.batch pending inodes in (fs_index, dir_key, ino) order with FOR
-- UPDATE SKIP LOCKED and stamps them with this worker and a lease; results
-- are written in one transaction per batch.  A batch's first copy runs in
-- the background (copy.start) while the next batch is claimed and the
-- previous batch commits and has its results written.  An expired lease (a killed worker)
-- makes rows claimable again.
--
-- While it runs, the copier is one of the run's live copiers (ntt.live):
-- its waits service the control socket, and a console can see the files
-- being read, skip one now (recorded skipped, reason "skipped by the
-- operator: ..."), pause, lower or raise the thread ceiling (from the next
-- batch) and ask for a remount (before the next batch).
local copy = require "ntt.core.copy"
local store_mod = require "ntt.core.store"
local util = require "ntt.core.util"
local fs = require "ntt.core.fs"
local json = require "ntt.json"
local concurrency = require "ntt.concurrency"
local rows_mod = require "ntt.copier.rows"
local room_mod = require "ntt.copier.room"
local roots_mod = require "ntt.copier.roots"
local retry = require "ntt.copier.retry"
local S = require "ntt.states"
local liveness = require "ntt.liveness"
local live = require "ntt.live"

local M = {}

-- The additive counts of a copier's stats (what workers report and a run sums).
M.COUNTS = { "files", "copied", "new", "deduplicated", "skipped", "failed", "damaged", "salvaged", "bytes" }

-- host:pid:boot:start:random (boot: the first 8 digits of this boot's id,
-- start: the process's start time); every claim of a process starts with
-- worker_prefix(pid).
function M.worker_prefix(pid)
  return ("%s:%d:"):format(util.hostname() or "host", pid or util.pid())
end

function M.worker_id()
  local me = liveness.me()
  return ("%s%s:%s:%04x"):format(M.worker_prefix(), me.boot:sub(1, 8), tostring(me.start or ""),
                                 math.random(0, 0xffff))
end

-- Whether the claimer a worker id names is a process of this host that is
-- gone (its claims can be taken at once; another host's wait for their lease).
-- An id of the older form host:pid:random is judged by its pid alone.
function M.claimer_dead(id)
  local host, pid, boot, start = id:match("^(.*):(%d+):(%x*):(%d*):%x+$")
  if not host then host, pid = id:match("^(.*):(%d+):%x+$") end
  if not host then return false end
  return liveness.dead { host = host, pid = tonumber(pid), boot = boot, start = tonumber(start or "") }
end

-- Threads from the source filesystem, as the policy says.
local function threads_for(cp, roots)
  local first_root = roots[1] and roots[1].root
  local probe = first_root and fs.probe(first_root, { network_fuse = cp.network_fuse })
    or { kind = "unknown", network = false }
  local threads = cp.threads
  if type(threads) == "function" then threads = threads(probe) end
  return math.max(1, math.tointeger(threads) or concurrency.default(probe)), probe
end

-- The free bytes a store keeps: the smaller of store.min_free_bytes and
-- store.min_free_fraction of its filesystem (a small store is not asked
-- for more than it has), but at least store.db_free_bytes when ntt's own
-- database lives on the same filesystem (shares_db): its next WAL segment
-- alone is 16 MiB, and a database that cannot write fails the run where
-- a store that keeps room stops it cleanly.  A store that keeps nothing
-- (both 0) keeps nothing.
function M.keep_free(policy, space, shares_db)
  local sp = policy.store or {}
  local bytes = sp.min_free_bytes or 1024 * 1024 * 1024
  local frac = sp.min_free_fraction or 0.02
  local keep = math.min(bytes, math.floor(frac * ((space and space.size) or 0)))
  local floor = shares_db and keep > 0 and (sp.db_free_bytes or 64 * 1024 * 1024) or 0
  return math.max(keep, floor), floor > keep
end

-- Whether ntt's private cluster keeps its data on the store's filesystem.
function M.shares_db(store_root)
  local config = require "ntt.config"
  if config.db_url() then return false end
  local a, b = fs.stat(config.path("pg")), fs.stat(store_root)
  return a ~= nil and b ~= nil and a.dev == b.dev
end

-- What the engine gets for each item (damaged ranges of a salvage as zeros).
local function batch_of(list, roots)
  local batch = {}
  for i, item in ipairs(list) do
    batch[i] = { root = roots[item.fs_index], path = item.path, size = item.size, id = i }
    if item.damage then
      local zero = {}
      for k, d in ipairs(item.damage) do zero[k] = { offset = d.file_offset, length = d.length } end
      table.sort(zero, function(a, b) return a.offset < b.offset end)
      batch[i].zero = zero
    end
  end
  return batch
end

function M.run(o)
  local conn, log, policy, m = o.db, o.log, o.policy, o.medium
  local cp = policy.copy or {}
  local rows = rows_mod.open(conn, m.hash)
  local st, serr, scode = store_mod.open(o.store_root)
  if not st then
    -- a store that cannot even be opened is a store fault like any other
    local fault = { side = "store", store = o.store_root, err = scode, msg = serr, stats = { files = 0 } }
    for _, k in ipairs(M.COUNTS) do fault.stats[k] = 0 end
    fault.stats.reasons, fault.stats.rule_hits, fault.stats.seconds = {}, {}, 0
    local space = fs.space(o.store_root)
    fault.keep = M.keep_free(policy, space)
    return nil, room_mod.fault_message(fault, rows, m), scode, fault
  end
  local swept = require("ntt.copier.temps").sweep(o.store_root)   -- (killed processes' temps)
  if swept and swept.files > 0 then log:info("store_temps_swept", { store = o.store_root, files = swept.files, bytes = swept.bytes }) end
  local roots = {}
  for _, r in ipairs(o.roots) do roots[r.fs_index] = r.root end
  local threads, probe = threads_for(cp, o.roots)
  -- The policy's count is a ceiling: the controller moves below it, never
  -- above (a 9p source stays at 1 thread however fast it seems).
  local ctl = cp.adapt and concurrency.controller { threads = threads, max = threads } or nil
  local stats = { files = 0, copied = 0, new = 0, deduplicated = 0, skipped = 0, failed = 0, damaged = 0, salvaged = 0,
                  bytes = 0, batches = 0, claim_seconds = 0, reasons = {}, threads = threads, claimed = 0,
                  fs_kind = probe.kind }
  local t_start = util.monotonic()
  local worker = o.worker or M.worker_id()
  local watch = roots_mod.watch(roots, o.remount, log, m, o.view_file)   -- (a mount swapped under the run)
  local diag = retry.new { rows = rows, policy = policy, log = log, medium = m, worker = worker, roots = roots,
                           devices = o.devices, remount = watch.remount, view = o.view,
                           view_file = o.view_file }
  local processed, errored = 0, 0
  -- The claims of a process of this host that is gone (killed, or from
  -- before a reboot) are taken back at once: at the start, and every 2 s
  -- while others hold claims.  Another host's claims wait for their lease.
  local next_reclaim = -math.huge
  local function reclaim()
    local t = util.monotonic()
    if t < next_reclaim then return true end
    next_reclaim = t + 2
    local ids, err, code, state = rows:claimers()
    if not ids then return nil, err, code, state end
    local dead = {}
    for _, id in ipairs(ids) do
      if id ~= worker and M.claimer_dead(id) then dead[#dead + 1] = id end
    end
    if #dead == 0 then return true end
    local n, e, c, s = rows:release_claimers(dead)
    if not n then return nil, e, c, s end
    log:info("claims_reclaimed", { medium = m.hash, files = n, claimers = dead },
             ("%s: %d files claimed by %d gone process(es) taken back"):format(m.human or m.hash, n, #dead))
    return true
  end
  local batch_n, lease = cp.batch or 200, cp.lease or 600
  local store_root = o.store_root
  local shares_db = M.shares_db(store_root)
  -- Before each claim: is there room in the store?  (nil, and the bytes it
  -- can take above what it keeps, when there is)
  local function low_space()
    local space = fs.space(store_root)
    if not space then return nil end
    local keep, for_db = M.keep_free(policy, space, shares_db)
    local full = { side = "store", store = store_root, err = "ENOSPC", low = true, avail = space.avail, keep = keep,
                   for_db = for_db }
    if space.avail < keep then return full end
    -- (a store that keeps nothing free runs until its disk says full)
    return nil, keep > 0 and space.avail - keep or nil, full
  end
  local function engine_opts()
    return { threads = ctl and ctl:threads() or threads, durability = cp.durability or "batch", buffer = cp.buffer,
             digests = cp.digests }
  end

  -- Claim a batch and find its paths (the database's part of take: done
  -- while the previous batch commits).
  -- inflight: bytes a batch still being copied may yet write.
  local function claim(inflight)
    local full, room, if_none = low_space()
    if full then return nil, "store low on space", "ENOSPC", full end
    local t0 = util.monotonic()
    -- o.limit: this process claims at most that many files (ntt run --limit)
    local want = o.limit and math.min(batch_n, o.limit - stats.claimed) or batch_n
    if want <= 0 then return { rows = {}, items = {}, final = {}, timing = { claim = 0, copy = 0, wait = 0 } } end
    local claimed, err, code, state = rows:claim(want, worker, lease)
    if not claimed then return nil, err, code, state end
    if room and #claimed > 0 then
      -- (with a batch still being copied, nothing that fits now may fit once
      -- it is written: the next claim, after it, decides)
      local first, n0 = claimed[1].size, #claimed
      local kept, kerr, kcode, kstate = room_mod.cut(rows, claimed, worker, room - (inflight or 0))
      if not kept then return nil, kerr, kcode, kstate end
      if kept < n0 then
        log:info("batch_cut", { medium = m.hash, files = kept, claimed = n0, room = room, inflight = inflight or 0 })
      end
      if kept == 0 and (inflight or 0) == 0 then
        if_none.next = first
        return nil, "store low on space", "ENOSPC", if_none
      end
    end
    stats.claimed = stats.claimed + #claimed
    stats.claim_seconds = stats.claim_seconds + (util.monotonic() - t0)
    local b = { rows = claimed, items = {}, final = {}, timing = { claim = util.monotonic() - t0, copy = 0, wait = 0 } }
    if #claimed == 0 then return b end
    stats.batches = stats.batches + 1
    local tp = util.monotonic()
    local paths, perr, pcode = rows:paths(claimed)
    if not paths then return nil, perr, pcode end
    b.timing.paths = util.monotonic() - tp
    b.paths = paths
    return b
  end

  -- Set aside what of a claimed batch is not to be copied (with the roots
  -- of now: a remount may have come between claim and classify).
  local function classify(b)
    local items, final, paths = b.items, b.final, b.paths
    for _, r in ipairs(b.rows) do
      local path = paths[rows_mod.key(r.fs_index, r.ino)]
      local item = { fs_index = r.fs_index, ino = r.ino, size = r.size, attempts = r.attempts,
                     root = roots[r.fs_index], path = path }
      local ranges = path and item.root and o.damage_of and o.damage_of(item)
      if ranges and #ranges == 0 then ranges = nil end
      if not path then
        -- the load leaves every pending row a path that is not excluded
        final[#final + 1] = { fs_index = r.fs_index, ino = r.ino, state = S.FAILED_PERMANENT, reason = S.REASONS.no_path }
      elseif not item.root then
        final[#final + 1] = { fs_index = r.fs_index, ino = r.ino, state = S.FAILED_RETRYABLE,
                              reason = S.REASONS.not_mounted:format(r.fs_index) }
      elseif ranges and not o.salvage then
        final[#final + 1] = { fs_index = r.fs_index, ino = r.ino, state = S.DAMAGED,
                              reason = S.REASONS.damaged, damage = json.array(ranges) }
      else
        -- a salvage stores the readable bytes, the unrescued ranges as zeros
        -- (never read), and the row stays damaged with its ranges
        item.damage = ranges
        items[#items + 1] = item
      end
    end
    return b
  end

  -- Claim a batch, find its paths, set aside what is not to be copied.
  local function take()
    local b, err, code, state = claim()
    if not b then return nil, err, code, state end
    if #b.rows == 0 then return b end
    return classify(b)
  end

  -- Sorts one copy's results into the batch's final entries; returns the
  -- items that failed (each with its res) and how many.
  local function sort(b, list, results)
    local final, failed = b.final, {}
    if o.remount_ok then
      for _, res in ipairs(results) do
        if res.ok then o.remount_ok(); break end
      end
    end
    for i, res in ipairs(results) do
      local item = list[i]
      if res.ok and item.damage then
        final[#final + 1] = { fs_index = item.fs_index, ino = item.ino, state = S.DAMAGED, blobid = res.blob,
                              size = res.bytes, damage = json.array(item.damage), reason = S.REASONS.salvaged,
                              salvaged = true, sha256 = res.sha256 }
      elseif res.ok then
        final[#final + 1] = { fs_index = item.fs_index, ino = item.ino, state = S.COPIED,
                              blobid = res.blob, size = res.bytes, new = res.new, sha256 = res.sha256 }
      elseif res.skipped and item.stalled then   -- (ntt.copier.stall: the next run tries it again)
        final[#final + 1] = { fs_index = item.fs_index, ino = item.ino, state = S.FAILED_RETRYABLE,
                              reason = S.REASONS.stalled:format(item.stalled.seconds, item.stalled.offset) }
      elseif res.skipped then
        final[#final + 1] = { fs_index = item.fs_index, ino = item.ino, state = S.SKIPPED,
                              reason = S.REASONS.operator:format(item.operator or "no reason given") }
      elseif res.err == "EINTR" then
        final[#final + 1] = { fs_index = item.fs_index, ino = item.ino, state = S.PENDING, release = true }
      elseif res.side == "store" then
        -- the store failed, not the file: the batch stops here, untouched
        b.fault = b.fault or { side = "store", store = store_root, err = res.err, msg = res.msg }
      else
        item.res = res
        failed[#failed + 1] = item
      end
    end
    return failed
  end

  -- The first copy of a batch runs in the background while the previous
  -- batch's results are written and the next batch is claimed.
  local want_remount
  local function start(b)
    if #b.items == 0 then return true end
    if want_remount and watch.remount then
      -- asked from the console: here no job reads (the previous batch's reads are done)
      want_remount = false
      local r, rerr = watch.remount()
      log:info("operator_remount", { medium = m.hash, ok = r ~= nil, error = rerr })
    end
    local same, werr, wcode, wstate = watch.check()
    if not same then return nil, werr, wcode, wstate end
    b.timing.threads = ctl and ctl:threads() or threads
    b.started = util.monotonic()
    b.job = copy.start(st, batch_of(b.items, roots), engine_opts())
    if live.state.paused then b.job:pause(true) end
    return true
  end

  -- The engine's counts for progress: jobs collected, and those running.
  local prev, cur
  local seen_files, seen_bytes = 0, 0
  local function report()
    if not o.progress then return end
    local f, by = seen_files, seen_bytes
    for _, b in ipairs { prev or false, cur or false } do
      if b and b.job then
        local a, c = b.job:progress()
        f, by = f + a, by + c
      end
    end
    o.progress(f, by)
  end
  -- Waits service the console and the progress line.
  local function await(job)
    while not job:wait_done(0.2) do report(); live.service() end
    local a, c = job:progress()
    seen_files, seen_bytes = seen_files + a, seen_bytes + c
    return job:wait()
  end
  local function await_reads(job)
    while not job:wait_reads(0.2) do report(); live.service() end
  end

  -- Wait for the first copy, then retry what failed until decided.
  -- `reading` is a later batch's job that may still be reading: retries
  -- (and a remount) wait for its reads, so no directory is read by two threads.
  local function finish(b, reading)
    if not b.job then return true end
    local timing = b.timing
    local tw = util.monotonic()
    local results = await(b.job)
    b.job = nil
    timing.wait = util.monotonic() - tw
    local failed = sort(b, b.items, results)
    timing.copy = timing.copy + (util.monotonic() - b.started)
    if b.fault then return nil, "store fault", b.fault.err, b.fault end
    if ctl then
      local was = ctl:threads()
      local n, why = ctl:observe { files = #results, errors = #failed, seconds = util.monotonic() - b.started }
      if n ~= was then
        log:debug("copy_threads", { medium = m.hash, from = was, to = n, reason = why, ceiling = threads })
      end
    end
    processed = processed + #results
    if #failed > 0 and not util.interrupted() and reading and reading.job then reading.job:wait_reads() end
    local ok, e, c, s = diag:settle(failed, b.final, function(list)
      local same, werr, wcode, wstate = watch.check()   -- (a retry opens the roots anew)
      if not same then return nil, werr, wcode, wstate end
      local t0 = util.monotonic()
      local again = sort(b, list, copy.batch(st, batch_of(list, roots), engine_opts()))
      timing.copy = timing.copy + (util.monotonic() - t0)
      if b.fault then return nil, "store fault", b.fault.err, b.fault end
      return again
    end)
    -- the medium's error rate counts the files that ended unread, not every
    -- failed attempt: files read after a remount (a lost mount fails them
    -- all alike) are no error of the medium
    for _, f in ipairs(b.final) do
      if not f.release and (f.state == S.SKIPPED or f.state == S.FAILED_PERMANENT or f.state == S.FAILED_RETRYABLE) then
        errored = errored + 1
      end
    end
    return ok, e, c, s
  end

  -- Each file skipped, failed or damaged: one line in the logs (errors.jsonl).
  local LOST = { [S.SKIPPED] = "file_skipped", [S.FAILED_RETRYABLE] = "file_failed",
                 [S.FAILED_PERMANENT] = "file_failed", [S.DAMAGED] = "file_damaged" }
  local function tell(b)
    for _, f in ipairs(b.final) do
      local event = not f.release and LOST[f.state]
      if event then
        local path = b.paths and b.paths[rows_mod.key(f.fs_index, f.ino)]
        log:detail("warn", event, { medium = m.hash, fs_index = f.fs_index, ino = f.ino, path = path,
                                    state = f.state, reason = f.reason },
                   ("%s: p%d %s: %s (%s)"):format(m.human or m.hash, f.fs_index,
                                                  tostring(path or ("ino " .. f.ino)):gsub("%c", "?"),
                                                  f.state, tostring(f.reason)))
      end
    end
  end

  -- One transaction for the batch's results, then its diagnostic events.
  local function write(b)
    local timing = b.timing
    local tw = util.monotonic()
    local ok, err, code, state = rows:write(b.final, worker)
    if not ok then return nil, err, code, state end
    -- counted once written: a batch a store fault stopped, or whose results
    -- the database refused, is not counted
    for _, f in ipairs(b.final) do
      if f.state == S.COPIED then
        stats.copied = stats.copied + 1
        stats.bytes = stats.bytes + (f.size or 0)
        if f.new then stats.new = stats.new + 1 else stats.deduplicated = stats.deduplicated + 1 end
      end
      if f.salvaged then stats.salvaged = stats.salvaged + 1 end
      if f.state == S.SKIPPED then stats.skipped = stats.skipped + 1
      elseif S.failed(f.state) then stats.failed = stats.failed + 1
      elseif f.state == S.DAMAGED then stats.damaged = stats.damaged + 1 end
      if f.state ~= S.PENDING then stats.files = stats.files + 1 end
      if f.state == S.SKIPPED then stats.reasons[f.reason] = (stats.reasons[f.reason] or 0) + 1 end
    end
    tell(b)
    timing.write = util.monotonic() - tw
    log:info("copy_batch", { medium = m.hash, files = #b.rows, claim = timing.claim, paths = timing.paths,
                             copy = timing.copy, wait = timing.wait, write = timing.write,
                             threads = timing.threads })
    ok, err, code, state = diag:record(processed, errored)
    if not ok then return nil, err, code, state end
    if o.on_batch then o.on_batch(stats) end
    return true
  end

  local function finish_write(b, reading)
    local ok, err, code, state = finish(b, reading)
    if not ok then return nil, err, code, state end
    return write(b)
  end

  -- Batch k reads while batch k-1 commits (syncfs waits for its
  -- writeback), then has its results and retries handled and written.
  local function drive()
    local err, code, state
    local rok, re, rc, rs = reclaim()
    if not rok then return nil, re, rc, rs end
    cur, err, code, state = take()
    if not cur then return nil, err, code, state end
    while true do
      if #cur.rows == 0 then
        if prev then
          local ok, e, c, s = finish_write(prev)
          prev = nil
          if not ok then return nil, e, c, s end
        end
        -- Others may still hold claims: wait for them, or for their leases.
        local left, e, c, s = rows:pending()
        if not left then return nil, e, c, s end
        if left == 0 or util.interrupted() or (o.limit and stats.claimed >= o.limit) then break end
        if o.idle then o.idle() end
        local rok, re, rc, rs = reclaim()
        if not rok then return nil, re, rc, rs end
        live.sleep(0.5)
        cur, err, code, state = take()
        if not cur then return nil, err, code, state end
      else
        local sok, se, sc, ss = start(cur)
        if not sok then return nil, se, sc, ss end
        -- The next claim is made while the previous batch commits (its
        -- syncfs waits for the disk); its files are sorted after that
        -- batch's retries, which may have remounted.
        local nxt
        if not util.interrupted() then nxt, err, code, state = claim(room_mod.bytes(cur.items)) end
        -- (a claim that failed, a store low on space among others, stops
        -- the run only once the previous batch is written)
        if prev then
          local ok, e, c, s = finish_write(prev, cur)
          prev = nil
          if not ok then return nil, e, c, s end
        end
        if not nxt and err then return nil, err, code, state end
        -- (interrupted meanwhile: the claim is released at the end, unread)
        if util.interrupted() then nxt = nil end
        if nxt and #nxt.rows > 0 then classify(nxt) end
        if cur.job then await_reads(cur.job) end
        prev, cur = cur, nxt
        if not cur then break end
      end
    end
    if prev then
      local b = prev
      prev = nil
      return finish_write(b)
    end
    return true
  end
  -- What the console sees of this copier, and may change.
  local function in_flight()
    local out = {}
    for _, b in ipairs { prev or false, cur or false } do if b and b.job then out[#out + 1] = b end end
    return out
  end
  local handle = { medium = m, worker = worker }
  function handle.threads() return ctl and ctl:threads() or threads end
  function handle.ceiling() return threads end
  function handle.set_threads(n)
    threads = n
    if ctl then ctl:ceiling(n) end
  end
  local cc = require "ntt.copier.console"
  function handle.reading() return cc.reading(in_flight()) end
  function handle.skip(sel, reason) return cc.skip(in_flight(), sel, reason) end
  function handle.pause(on) cc.pause(in_flight(), on) end
  function handle.remount() want_remount = true end
  function handle.kernel() return diag.kernel or {} end
  function handle.rule_hits() return diag:rule_hits() end
  function handle.counts()
    local c = {}
    for _, k in ipairs(M.COUNTS) do c[k] = stats[k] end
    c.batches = stats.batches
    return c
  end
  local unregister = live.copier(handle)
  -- Claims renewed while the copy runs: a batch slower than the lease (9p, a big
  -- file) never lapses to another worker that would read its files again.
  local unkeep = live.every(lease / 3, function() assert(rows:renew(worker, lease)) end,
                            function(e) log:warn("lease_not_renewed", { medium = m.hash, error = tostring(e) }) end)
  local stalls = cp.stall_timeout and cp.stall_timeout > 0 and require("ntt.copier.stall").watch(cp.stall_timeout, log, m)
  local unstall = stalls and live.every(math.min(1, cp.stall_timeout / 4), function() stalls.check(in_flight()) end)
  -- (a raising hook or bug still gets its jobs closed and claims released)
  local done, ok, err, code, state = pcall(drive)
  unregister()
  unkeep()
  if unstall then unstall() end
  for _, b in ipairs { prev or false, cur or false } do
    if b and b.job then b.job:close() end
  end
  -- Leave nothing claimed by this worker that it did not write.
  if not (done and ok) or util.interrupted() then rows:release(worker) end
  diag:close()
  st:close()
  if not done then error(ok, 0) end
  stats.seconds = util.monotonic() - t_start
  if not ok and type(state) == "table" and state.side == "store" then
    state.keep = state.keep or M.keep_free(policy, fs.space(store_root), M.shares_db(store_root))
    state.stats = stats
    stats.rule_hits = diag:rule_hits()
    local msg = room_mod.fault_message(state, rows, m)
    log:info("store_fault", { medium = m.hash, store = state.store, err = state.err, avail = state.avail,
                              keep = state.keep, pending = state.pending, pending_bytes = state.pending_bytes,
                              need = state.need, low = state.low or false })
    return nil, msg, state.err, state
  end
  stats.rule_hits = diag:rule_hits()
  stats.kernel = diag.kernel
  if not ok then return nil, err, code, state, stats end
  return stats
end

return M
