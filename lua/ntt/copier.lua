-- lua/ntt/copier.lua: claim batches of a medium's files, copy them into the
-- store, retry and diagnose failures, record every decision.
--
--   copier.run(opts) -> stats | nil, msg
--     opts = { db=, log=, policy=, medium={hash=, human=, image_path=, map_path=},
--              roots={ {fs_index=, root=} }, devices={ "loop3", ... },
--              map=parsed mapfile or nil, worker=id, store_root=, remount=function() -> roots,
--              damage_of=function(item) -> damaged ranges, salvage=bool (store those
--              files with their damaged ranges as zeros; the row stays damaged),
--              on_batch=function(stats) after each batch, idle=function() while others hold claims }
--   stats = { files=, copied=, new=, deduplicated=, skipped=, failed=, damaged=, salvaged=,
--             bytes=, seconds=, batches=, claim_seconds=, reasons={reason -> n} }
--
-- Claims: one short transaction takes up to copy.batch pending inodes in
-- (fs_index, dir_key, ino) order with FOR UPDATE SKIP LOCKED and stamps
-- them with this worker and a lease; results are written in one transaction
-- per batch.  A batch's first copy runs in the background (copy.start)
-- while the previous batch's results are written and the next is claimed.  An expired lease (a killed worker) makes rows claimable again.
-- A failing file is retried inside the batch with backoff; every attempt is
-- counted in its row (shared by all workers); at the checkpoint the
-- findings go to the policy's diagnose rules; at the maximum it gives up.
local copy = require "ntt.core.copy"
local store_mod = require "ntt.core.store"
local util = require "ntt.core.util"
local kmsg = require "ntt.core.kmsg"
local fs = require "ntt.core.fs"
local json = require "ntt.json"
local db = require "ntt.db"
local rules = require "ntt.rules"
local diagnose = require "ntt.diagnose"
local problems = require "ntt.problems"
local concurrency = require "ntt.concurrency"

local M = {}

-- The additive counts of a copier's stats (what workers report and a run sums).
M.COUNTS = { "files", "copied", "new", "deduplicated", "skipped", "failed", "damaged", "salvaged", "bytes" }

local IO_FINDINGS = { detected_io_error = true, detected_beyond_eof = true }

local function q(conn, sql, ...)
  local r, err, code = conn:exec(sql, ...)
  if not r then error({ db = true, msg = err, code = code }, 0) end
  return r
end

local function backoff(b, attempt)
  local d = (b.base or 0.02) * (b.factor or 1.5) ^ math.max(0, attempt - 1)
  return math.min(d, b.cap or 0.25)
end

-- host:pid:random; every claim of a process starts with worker_prefix(pid).
function M.worker_prefix(pid)
  return ("%s:%d:"):format(util.hostname() or "host", pid or util.pid())
end

function M.worker_id()
  return ("%s%04x"):format(M.worker_prefix(), math.random(0, 0xffff))
end

-- Claim up to n pending inodes; returns the rows.
local function claim(conn, it, hash, worker, n, lease)
  return db.tx(conn, function()
    return q(conn, ([[
      WITH c AS (
        SELECT fs_index, ino FROM %s
         WHERE medium_hash = $4 AND state = 'pending' AND (claimed_by IS NULL OR lease_until < now())
         ORDER BY fs_index, dir_key, ino
         LIMIT $1 FOR UPDATE SKIP LOCKED)
      UPDATE %s i SET claimed_by = $2, lease_until = now() + make_interval(secs => $3)
        FROM c WHERE i.medium_hash = $4 AND i.fs_index = c.fs_index AND i.ino = c.ino
      RETURNING i.fs_index, i.ino, i.size, i.attempts, i.dir_key]]):format(it, it), n, worker, lease, hash)
  end)
end

-- First non-excluded path of each claimed inode.
local function paths_of(conn, pt, rows, hash)
  local fsi, inos = {}, {}
  for i, r in ipairs(rows) do fsi[i] = r.fs_index; inos[i] = r.ino end
  local res = q(conn, ([[
    SELECT DISTINCT ON (p.fs_index, p.ino) p.fs_index, p.ino, p.path
      FROM %s p JOIN unnest($1::int[], $2::bigint[]) AS c(fs_index, ino)
        ON p.medium_hash = $3 AND p.fs_index = c.fs_index AND p.ino = c.ino
     WHERE p.exclude_reason IS NULL
     ORDER BY p.fs_index, p.ino, p.path]]):format(pt),
    "{" .. table.concat(fsi, ",") .. "}", "{" .. table.concat(inos, ",") .. "}", hash)
  local map = {}
  for _, r in ipairs(res) do map[r.fs_index .. ":" .. r.ino] = r.path end
  return map
end

local function trim(s, n)
  s = tostring(s or "")
  return #s > n and s:sub(1, n) or s
end

function M.run(o)
  local conn, log, policy, m = o.db, o.log, o.policy, o.medium
  local cp, rp = policy.copy or {}, policy.retry or {}
  local checkpoint, max_attempts = rp.checkpoint or 10, rp.max or 50
  local history = rp.history or 10
  local it_name, pt_name = db.partition_names(m.hash)
  local it, pt = conn:escape_identifier(it_name), conn:escape_identifier(pt_name)
  local st, serr = store_mod.open(o.store_root)
  if not st then return nil, serr end
  local roots = {}
  for _, r in ipairs(o.roots) do roots[r.fs_index] = r.root end
  -- Threads from the source filesystem, as the policy says.
  local first_root = o.roots[1] and o.roots[1].root
  local probe = first_root and fs.probe(first_root, { network_fuse = cp.network_fuse })
    or { kind = "unknown", network = false }
  local threads = cp.threads
  if type(threads) == "function" then threads = threads(probe) end
  threads = math.max(1, math.tointeger(threads) or concurrency.default(probe))
  local ctl = cp.adapt and concurrency.controller { threads = threads, max = math.max(threads, 16) } or nil
  local kernel, kerr = kmsg.open()
  local kernel_lines = {}
  local stats = { files = 0, copied = 0, new = 0, deduplicated = 0, skipped = 0, failed = 0, damaged = 0, salvaged = 0,
                  bytes = 0, batches = 0, claim_seconds = 0, reasons = {}, threads = threads,
                  fs_kind = probe.kind }
  local t_start = util.monotonic()
  local worker = o.worker or M.worker_id()
  local rule_hits = {}
  local events = {}
  local processed, errored = 0, 0
  local summary_once = {}

  local function read_kernel()
    if not kernel then return end
    for _, rec in ipairs(kernel:read()) do
      for _, d in ipairs(o.devices or {}) do
        if rec.text:find((d:gsub("^/dev/", "")), 1, true) then
          kernel_lines[#kernel_lines + 1] = rec.text
          if #kernel_lines > 500 then table.remove(kernel_lines, 1) end
          break
        end
      end
    end
  end

  local function event(item, attempts, checks, action, res)
    events[#events + 1] = {
      ino = item.ino, fs_index = item.fs_index, retry_count = attempts, checks = json.array(checks),
      action = action, timestamp = require("ntt.log").timestamp(util.now()), worker_id = worker,
      exception_type = res.err, exception_msg = trim(res.msg, 100),
    }
  end

  local batch_n = cp.batch or 200
  local lease = cp.lease or 600
  local engine_opts = function()
    return { threads = ctl and ctl:threads() or threads, durability = cp.durability or "batch", buffer = cp.buffer }
  end

  -- Claim a batch, find its paths, set aside what is not to be copied.
  local function take()
    local t0 = util.monotonic()
    local rows, cerr, ccode = claim(conn, it, m.hash, worker, batch_n, lease)
    if not rows then error({ db = true, msg = cerr, code = ccode }, 0) end
    stats.claim_seconds = stats.claim_seconds + (util.monotonic() - t0)
    local b = { rows = rows, items = {}, final = {}, timing = { claim = util.monotonic() - t0, copy = 0, wait = 0 } }
    if #rows == 0 then return b end
    stats.batches = stats.batches + 1
    local tp = util.monotonic()
    local paths = paths_of(conn, pt, rows, m.hash)
    b.timing.paths = util.monotonic() - tp
    local items, final = b.items, b.final
    for _, r in ipairs(rows) do
      local path = paths[r.fs_index .. ":" .. r.ino]
      local item = { fs_index = r.fs_index, ino = r.ino, size = r.size, attempts = r.attempts,
                     root = roots[r.fs_index], path = path }
      if not path then
        final[#final + 1] = { fs_index = r.fs_index, ino = r.ino, state = "excluded",
                              reason = "every path excluded by policy" }
      elseif not item.root then
        final[#final + 1] = { fs_index = r.fs_index, ino = r.ino, state = "failed_retryable",
                              reason = ("filesystem p%d is not mounted"):format(r.fs_index) }
      elseif o.damage_of then
        local ranges = o.damage_of(item)
        if ranges and #ranges > 0 and o.salvage then
          -- The readable bytes are stored, the unrescued ranges as zeros
          -- (never read), and the row stays damaged with its ranges.
          item.damage = ranges
          items[#items + 1] = item
        elseif ranges and #ranges > 0 then
          final[#final + 1] = { fs_index = r.fs_index, ino = r.ino, state = "damaged",
                                reason = "overlaps unrescued areas of the image", damage = json.array(ranges) }
        else
          items[#items + 1] = item
        end
      else
        items[#items + 1] = item
      end
    end
    return b
  end

  local function batch_of(list)
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

  -- The first copy of a batch runs in the background while the previous
  -- batch's results are written and the next batch is claimed.
  local function start(b)
    if #b.items == 0 then return end
    b.timing.threads = ctl and ctl:threads() or threads
    b.started = util.monotonic()
    b.job = copy.start(st, batch_of(b.items), engine_opts())
  end

  -- Wait for the first copy, then retry what failed, with backoff, until
  -- decided.  `reading` is a later batch's job that may still be reading:
  -- retries wait for its reads, so no directory is read by two threads.
  local function finish(b, reading)
    if not b.job then return end
    local final = b.final
    local timing = b.timing
    local pending = b.items
    local round = 0
    while #pending > 0 do
      round = round + 1
      local results, bt
      if round == 1 then
        local tw = util.monotonic()
        results = b.job:wait()
        b.job = nil
        timing.wait = util.monotonic() - tw
        bt = b.started
      else
        bt = util.monotonic()
        results = copy.batch(st, batch_of(pending), engine_opts())
      end
      local failed = {}
      local nerr = 0
      for i, res in ipairs(results) do
        local item = pending[i]
        if res.ok and item.damage then
          final[#final + 1] = { fs_index = item.fs_index, ino = item.ino, state = "damaged", blobid = res.blob,
                                size = res.bytes, damage = json.array(item.damage),
                                reason = "salvaged: the readable bytes are stored, the unrescued ranges as zeros" }
          stats.salvaged = stats.salvaged + 1
        elseif res.ok then
          final[#final + 1] = { fs_index = item.fs_index, ino = item.ino, state = "copied",
                                blobid = res.blob, size = res.bytes }
          stats.copied = stats.copied + 1
          stats.bytes = stats.bytes + (res.bytes or 0)
          if res.new then stats.new = stats.new + 1 else stats.deduplicated = stats.deduplicated + 1 end
        elseif res.err == "EINTR" then
          final[#final + 1] = { fs_index = item.fs_index, ino = item.ino, state = "pending", release = true }
        else
          nerr = nerr + 1
          item.res = res
          failed[#failed + 1] = item
        end
      end
      timing.copy = timing.copy + (util.monotonic() - bt)
      if ctl and round == 1 then
        ctl:observe { files = #results, errors = nerr, seconds = util.monotonic() - bt }
      end
      if round == 1 then
        processed = processed + #results
        errored = errored + nerr
      end
      if #failed == 0 or util.interrupted() then
        for _, item in ipairs(failed) do
          final[#final + 1] = { fs_index = item.fs_index, ino = item.ino, state = "pending", release = true }
        end
        break
      end
      -- Retries (and a remount) only once the later batch reads no more.
      if reading and reading.job then reading.job:wait_reads() end
      -- Count this attempt in the rows (shared by every worker).
      local fsi, inos, errs = {}, {}, {}
      for i, item in ipairs(failed) do
        fsi[i], inos[i] = item.fs_index, item.ino
        errs[i] = { err = item.res.err, msg = trim(item.res.msg, 200), offset = item.res.offset,
                    at = require("ntt.log").timestamp(util.now()) }
      end
      local counted = q(conn, ([[
        UPDATE %s i SET attempts = i.attempts + 1,
               errors = ntt_push_bounded(i.errors, e.err, $4)
          FROM (SELECT * FROM unnest($1::int[], $2::bigint[]) WITH ORDINALITY AS u(fs_index, ino, n)) u
          JOIN (SELECT x AS err, n FROM jsonb_array_elements($3::jsonb) WITH ORDINALITY AS j(x, n)) e
            ON e.n = u.n
         WHERE i.medium_hash = $5 AND i.fs_index = u.fs_index AND i.ino = u.ino
        RETURNING i.fs_index, i.ino, i.attempts]]):format(it),
        "{" .. table.concat(fsi, ",") .. "}", "{" .. table.concat(inos, ",") .. "}", json.encode(json.array(errs)), history,
        m.hash)
      local attempts_of = {}
      for _, r in ipairs(counted) do attempts_of[r.fs_index .. ":" .. r.ino] = r.attempts end
      read_kernel()
      local again, remount = {}, false
      for _, item in ipairs(failed) do
        local attempts = attempts_of[item.fs_index .. ":" .. item.ino] or (item.attempts + round)
        local res = item.res
        if attempts >= max_attempts then
          local class = diagnose.classify(res)
          local state = IO_FINDINGS[class] and "failed_permanent" or "failed_retryable"
          final[#final + 1] = { fs_index = item.fs_index, ino = item.ino, state = state,
                                reason = ("%s after %d attempts: %s"):format(res.err, attempts, trim(res.msg, 200)) }
          event(item, attempts, { class }, "max_retries", res)
        elseif attempts >= checkpoint and (attempts - checkpoint) % checkpoint == 0 then
          local checks = diagnose.gather {
            err = res.err, phase = res.phase, root = item.root, kernel_lines = kernel_lines,
            devices = o.devices, patterns = policy.kernel_patterns, kernel_unavailable = kernel == nil }
          local action = rules.decide(policy.diagnose or {}, checks, rule_hits) or rules.CONTINUE
          if action.kind == "skip" then
            final[#final + 1] = { fs_index = item.fs_index, ino = item.ino, state = "skipped", reason = action.reason }
            event(item, attempts, checks, "skipped", res)
            stats.reasons[action.reason] = (stats.reasons[action.reason] or 0) + 1
            if action.reason:find("BEYOND_EOF", 1, true) then
              summary_once.beyond_eof = summary_once.beyond_eof or { first_ino = item.ino, skip_count = 0 }
              summary_once.beyond_eof.skip_count = summary_once.beyond_eof.skip_count + 1
            end
          elseif action.kind == "give_up" then
            final[#final + 1] = { fs_index = item.fs_index, ino = item.ino, state = action.reason,
                                  reason = ("given up by policy: %s"):format(trim(res.msg, 200)) }
            event(item, attempts, checks, "max_retries", res)
          elseif action.kind == "remount" then
            remount = true
            item.reset = true
            event(item, attempts, checks, "remounted", res)
            again[#again + 1] = item
          else
            event(item, attempts, checks, "continuing", res)
            again[#again + 1] = item
          end
        else
          again[#again + 1] = item
        end
      end
      if remount and o.remount then
        local new_roots, rerr = o.remount()
        if new_roots then
          for _, r in ipairs(new_roots) do roots[r.fs_index] = r.root end
          for _, item in ipairs(again) do item.root = roots[item.fs_index] end
          local rf, ri = {}, {}
          for _, item in ipairs(again) do
            if item.reset then rf[#rf + 1] = item.fs_index; ri[#ri + 1] = item.ino end
          end
          q(conn, ([[UPDATE %s i SET attempts = 0 FROM unnest($1::int[], $2::bigint[]) AS u(fs_index, ino)
                      WHERE i.medium_hash = $3 AND i.fs_index = u.fs_index AND i.ino = u.ino]]):format(it),
            "{" .. table.concat(rf, ",") .. "}", "{" .. table.concat(ri, ",") .. "}", m.hash)
          log:warn("remounted", { medium = m.hash }, (m.human or m.hash) .. ": remounted after the mount went missing")
        else
          log:error("remount_failed", { medium = m.hash, error = rerr })
        end
      end
      pending = again
      if #pending > 0 then util.sleep(backoff(rp.backoff or {}, round)) end
    end
  end

  local function write(b)
    local final, rows, timing = b.final, b.rows, b.timing
    -- One transaction for the batch's results.
    local tw = util.monotonic()
    -- Column arrays and unnest: no per-row JSON to build and parse.  The
    -- worker id is a column of the join, not a filter on the partition:
    -- the statistics say claimed_by is NULL everywhere (as at the load's
    -- ANALYZE), and "claimed_by = me" taken for one row made the planner
    -- scan the whole partition for each result instead of going by key.
    local c = { fs = {}, ino = {}, state = {}, blob = {}, reason = {}, damage = {}, release = {} }
    local bid, bsize, nb, seen = {}, {}, 0, {}
    for i, f in ipairs(final) do
      c.fs[i], c.ino[i], c.state[i], c.blob[i] = f.fs_index, f.ino, f.state, f.blobid
      c.reason[i], c.release[i] = f.reason, f.release or false
      c.damage[i] = f.damage and json.encode(f.damage) or nil
      if f.blobid and not seen[f.blobid] then
        seen[f.blobid] = true
        nb = nb + 1
        bid[nb], bsize[nb] = f.blobid, f.size
      end
      if f.state == "skipped" then stats.skipped = stats.skipped + 1
      elseif f.state == "failed_permanent" or f.state == "failed_retryable" then stats.failed = stats.failed + 1
      elseif f.state == "damaged" then stats.damaged = stats.damaged + 1 end
      if f.state ~= "pending" then stats.files = stats.files + 1 end
    end
    local n = #final
    local ok, werr = db.tx(conn, function()
      if nb > 0 then
        q(conn, [[INSERT INTO blob (blobid, size) SELECT * FROM unnest($1::text[], $2::bigint[])
                  ON CONFLICT (blobid) DO NOTHING]], db.array(bid, nb), db.array(bsize, nb))
      end
      q(conn, ([[
        UPDATE %s i SET
               state = CASE WHEN r.release THEN i.state ELSE r.state::inode_state END,
               blobid = coalesce(r.blobid, i.blobid),
               reason = CASE WHEN r.release THEN i.reason ELSE r.reason END,
               damage = coalesce(r.damage, i.damage),
               processed_at = CASE WHEN r.release THEN i.processed_at ELSE now() END,
               claimed_by = NULL, lease_until = NULL
          FROM unnest($1::int[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::bool[],
                      array_fill($8::text, array[$10::int]))
               AS r(fs_index, ino, state, blobid, reason, damage, release, worker)
         WHERE i.medium_hash = $9 AND i.fs_index = r.fs_index AND i.ino = r.ino
           AND i.claimed_by = r.worker]]):format(it),
        db.array(c.fs, n), db.array(c.ino, n), db.array(c.state, n), db.array(c.blob, n),
        db.array(c.reason, n), db.array(c.damage, n), db.array(c.release, n), worker, m.hash, n)
      return true
    end)
    if not ok then error({ db = true, msg = werr }, 0) end
    timing.write = util.monotonic() - tw
    log:info("copy_batch", { medium = m.hash, files = #rows, claim = timing.claim, paths = timing.paths,
                             copy = timing.copy, wait = timing.wait, write = timing.write,
                             threads = timing.threads })
    -- Diagnostic events and summaries after the batch committed.
    for _, ev in ipairs(events) do problems.event(conn, m.hash, ev, (policy.problems or {}).max_events) end
    events = {}
    if summary_once.beyond_eof then
      problems.set(conn, m.hash, "beyond_eof_detected", summary_once.beyond_eof)
    end
    local hr = (policy.problems or {}).high_error_rate or {}
    if not summary_once.high_error_rate and processed >= (hr.min_files or 100)
       and errored / processed > (hr.rate or 0.10) then
      summary_once.high_error_rate = true
      problems.note(conn, m.hash, "high_error_rate", { rate = errored / processed, errors = errored,
                                                      processed = processed, worker_id = worker })
    end
    if o.on_batch then o.on_batch(stats) end
  end

  -- Leave nothing claimed by this worker that it did not write.
  local function release()
    conn:exec(("UPDATE %s SET claimed_by = NULL, lease_until = NULL WHERE medium_hash = $1 AND claimed_by = $2"):format(it),
              m.hash, worker)
  end

  -- Batch k reads while batch k-1 commits (syncfs waits for its
  -- writeback), then has its results and retries handled and written.
  local prev, cur
  local ok, err = pcall(function()
    cur = take()
    while true do
      if #cur.rows == 0 then
        if prev then finish(prev); write(prev); prev = nil end
        -- Others may still hold claims: wait for them, or for their leases.
        local left = q(conn, ("SELECT count(*) AS n FROM %s WHERE medium_hash = $1 AND state = 'pending'"):format(it), m.hash)[1].n
        if left == 0 or util.interrupted() then break end
        if o.idle then o.idle() end
        util.sleep(0.5)
        cur = take()
      else
        start(cur)
        if prev then finish(prev, cur); write(prev); prev = nil end
        local nxt = not util.interrupted() and take() or nil
        if cur.job then cur.job:wait_reads() end
        prev, cur = cur, nxt
        if not cur then break end
      end
    end
    if prev then finish(prev); write(prev) end
  end)
  for _, b in ipairs { prev or false, cur or false } do
    if b and b.job then b.job:close() end
  end
  if not ok then
    release()
    if kernel then kernel:close() end
    st:close()
    if type(err) == "table" and err.db then return nil, err.msg, err.code end
    error(err, 0)
  end
  if util.interrupted() then release() end
  if kernel then kernel:close() end
  st:close()
  stats.seconds = util.monotonic() - t_start
  stats.rule_hits = rule_hits
  stats.kernel = kernel and "available" or ("unavailable: " .. tostring(kerr))
  return stats
end

return M
