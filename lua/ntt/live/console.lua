-- lua/ntt/live/console.lua: the helpers of `ntt attach`, evaluated inside
-- the running process (lua/ntt/live.lua services the socket).
--
--   console.env(state) -> environment table for one attached console
--
-- Reading: help(), status(), media(), medium(h), reading(), workers(),
-- claims(h), errors([n]), kernel(h), rules(), threads(), progress().
-- Acting (each logged): skip(path or ino, reason), retry(h, path),
-- remount(h), pause(), resume(), threads(n), set(key, value).
-- h is a medium's hash, a prefix of it or its name; with one medium in
-- the run it may be left out.
local M = {}

local HELP = {
  { "help()", "this list" },
  { "status()", "the run: id, pid, media and stages, workers, threads, paused, overrides" },
  { "media()", "the media of this run and the stage each is in" },
  { "medium(h)", "one medium: stage, copy threads (now and ceiling), counts so far, files being read" },
  { "reading()", "every file a copy thread reads now: path, age, bytes so far" },
  { "workers()", "worker processes (--workers N): pid, medium, state" },
  { "claims(h)", "the medium's claimed rows by worker, with their leases" },
  { "errors([n])", "the run's last n warnings and errors (default 20)" },
  { "kernel(h)", "kernel lines the copier gathered for the medium's failures" },
  { "rules()", "diagnose rule hits so far" },
  { "progress()", "files and bytes so far of each running copy" },
  { "skip(path or ino, reason)", "skip that file now: the read is abandoned, the file recorded skipped by the operator" },
  { "retry(h, path)", "a failed or skipped file made pending again (copied if the copy is still running)" },
  { "remount(h)", "remount the medium before the copier's next batch" },
  { "pause() / resume()", "hold the copy threads between files / let them go on" },
  { "threads(n)", "the copy thread ceiling for the rest of the run (from the next batch)" },
  { "set(key, value)", "a policy value for the rest of the run, e.g. set(\"copy.threads\", 2), set(\"retry.max\", 1)" },
  { "explain(findings)", "which diagnose rule decides for these findings" },
}

local function copiers(state)
  local list = {}
  for h in pairs(state.copiers) do list[#list + 1] = h end
  table.sort(list, function(a, b) return a.medium.hash < b.medium.hash end)
  return list
end

-- The one medium h names among those of this run (nil, msg when none or several).
local function pick(state, h)
  local found = {}
  for _, key in ipairs(state.order) do
    local m = state.media[key]
    if h == nil or (m.hash and m.hash:sub(1, #tostring(h)) == tostring(h)) or m.human == h or m.target == h then
      found[#found + 1] = m
    end
  end
  if #found == 1 then return found[1] end
  if #found == 0 then return nil, ("no medium %s in this run"):format(tostring(h)), "ENOENT" end
  return nil, ("%d media match %s: name one (media() lists them)"):format(#found, tostring(h)), "EEXIST"
end

local function copier_of(state, m)
  for _, c in ipairs(copiers(state)) do
    if c.medium.hash == m.hash then return c end
  end
end

local function ago(t) return t and (os.time() - t) or nil end

-- The run's worker processes still running, and one chunk asked of each
-- (through its own socket, run/workers/<pid>.sock): { {pid=, reply=} }.
local function ask_workers(state, chunk)
  local live = require "ntt.live"
  local out = {}
  local pids = {}
  for pid, w in pairs(state.workers) do if w.state == "running" then pids[#pids + 1] = pid end end
  table.sort(pids)
  for _, pid in ipairs(pids) do
    out[#out + 1] = { pid = pid, reply = live.ask(("%s/workers/%d.sock"):format(live.dir(), pid), chunk) }
  end
  return out
end

function M.env(state)
  local live = require "ntt.live"
  local E = setmetatable({}, { __index = _G })

  function E.help()
    local lines = { "live helpers (inside the running process):" }
    for _, h in ipairs(HELP) do lines[#lines + 1] = ("  %-28s %s"):format(h[1], h[2]) end
    return table.concat(lines, "\n")
  end

  function E.media()
    local out = {}
    for _, key in ipairs(state.order) do
      local m = state.media[key]
      out[#out + 1] = { hash = m.hash, name = m.human, target = m.target, stage = m.stage, seconds = ago(m.since) }
    end
    return out
  end

  function E.reading()
    local out = {}
    for _, c in ipairs(copiers(state)) do
      for _, f in ipairs(c.reading()) do
        f.medium = c.medium.human or c.medium.hash
        out[#out + 1] = f
      end
    end
    for _, w in ipairs(ask_workers(state, "require('ntt.json').encode(reading())")) do
      local ok, list = pcall(require("ntt.json").decode, w.reply or "")
      for _, f in ipairs(ok and type(list) == "table" and list or {}) do
        f.worker = w.pid
        out[#out + 1] = f
      end
    end
    return out
  end

  function E.threads(n)
    if n == nil then
      local out = {}
      for _, c in ipairs(copiers(state)) do
        out[c.medium.human or c.medium.hash] = { now = c.threads(), ceiling = c.ceiling() }
      end
      return out
    end
    n = math.tointeger(n)
    if not n or n < 1 then error("threads(n): n must be a positive integer", 2) end
    local old
    for _, c in ipairs(copiers(state)) do old = c.ceiling(); c.set_threads(n) end
    state.pending_threads = { ["*"] = n }
    ask_workers(state, ("threads(%d)"):format(n))
    live.override("copy.threads", n, old)
    return ("copy threads: at most %d from the next batch"):format(n)
  end

  function E.medium(h)
    local m, err = pick(state, h)
    if not m then return err end
    local out = { hash = m.hash, name = m.human, target = m.target, stage = m.stage, seconds = ago(m.since) }
    local c = copier_of(state, m)
    if c then
      out.threads, out.ceiling, out.paused = c.threads(), c.ceiling(), state.paused
      out.counts = c.counts()
      out.reading = c.reading()
    end
    return out
  end

  function E.workers()
    local out = {}
    for _, w in pairs(state.workers) do out[#out + 1] = w end
    table.sort(out, function(a, b) return a.pid < b.pid end)
    return out
  end

  function E.status()
    return { run = state.run_id, pid = state.pid, socket = state.socket, seconds = ago(state.started),
             media = E.media(), workers = E.workers(), threads = E.threads(), paused = state.paused,
             overrides = state.overrides, reading = #E.reading() }
  end

  function E.progress()
    local out = {}
    for _, c in ipairs(copiers(state)) do out[c.medium.human or c.medium.hash] = c.counts() end
    return out
  end

  function E.errors(n)
    n = n or 20
    local e, out = state.errors, {}
    for i = math.max(1, #e - n + 1), #e do
      out[#out + 1] = ("%s %s %s: %s"):format(e[i].time, e[i].level, e[i].event, e[i].msg or "")
    end
    return out
  end

  function E.kernel(h)
    local m, err = pick(state, h)
    if not m then return err end
    local c = copier_of(state, m)
    return c and c.kernel() or {}
  end

  function E.rules()
    local out = {}
    for _, c in ipairs(copiers(state)) do out[c.medium.human or c.medium.hash] = c.rule_hits() end
    return out
  end

  function E.claims(h)
    local m, err = pick(state, h)
    if not m then return err end
    if not state.db or not m.hash then return "no database connection here" end
    local rows = require("ntt.copier.rows").open(state.db, m.hash)
    local r, qerr = state.db:exec(([[SELECT claimed_by AS worker, count(*) AS files,
             min(lease_until)::text AS lease_until FROM %s
       WHERE medium_hash = $1 AND claimed_by IS NOT NULL GROUP BY claimed_by ORDER BY claimed_by]]):format(rows.it), m.hash)
    return r or qerr
  end

  function E.skip(sel, reason)
    if sel == nil then error("skip(path or ino, reason): which file?", 2) end
    reason = reason or "no reason given"
    for _, c in ipairs(copiers(state)) do
      local what = c.skip(sel, reason)
      if what then
        if state.log then
          state.log:warn("operator_skip", { medium = c.medium.hash, path = what, reason = reason },
                         ("console: %s skipped by the operator (%s)"):format(what, reason))
        end
        return ("skipping %s: recorded skipped by the operator (%s)"):format(what, reason)
      end
    end
    for _, w in ipairs(ask_workers(state, ("skip(%q, %q)"):format(sel, reason))) do
      if w.reply and w.reply:match("^skipping") then
        return ("worker %d: %s"):format(w.pid, (w.reply:gsub("\n$", "")))
      end
    end
    return ("%s is not being copied by this process (reading() lists what is)"):format(tostring(sel))
  end

  function E.pause()
    state.paused = true
    for _, c in ipairs(copiers(state)) do c.pause(true) end
    ask_workers(state, "pause()")
    if state.log then state.log:info("operator_pause", { run = state.run_id }) end
    return "copying paused (threads wait between files); resume() goes on"
  end

  function E.resume()
    state.paused = false
    for _, c in ipairs(copiers(state)) do c.pause(false) end
    ask_workers(state, "resume()")
    if state.log then state.log:info("operator_resume", { run = state.run_id }) end
    return "copying resumed"
  end

  function E.remount(h)
    local m, err = pick(state, h)
    if not m then return err end
    local c = copier_of(state, m)
    if not c then return "the medium is not being copied: nothing to remount now" end
    c.remount()
    return "remount requested: before the copier's next batch"
  end

  function E.retry(h, path)
    local m, err = pick(state, h)
    if not m then return err end
    if not state.db or not m.hash then return "no database connection here" end
    local rows = require("ntt.copier.rows").open(state.db, m.hash)
    local r, qerr = state.db:exec(([[UPDATE %s i SET state = 'pending', attempts = 0, reason = NULL
        FROM %s p WHERE p.medium_hash = $1 AND i.medium_hash = $1 AND p.fs_index = i.fs_index
         AND p.ino = i.ino AND p.path = $2
         AND i.state IN ('failed_retryable', 'failed_permanent', 'skipped') RETURNING i.ino]]):format(rows.it, rows.pt),
      m.hash, require("ntt.core.pg").bytea(path))
    if not r then return qerr end
    if #r == 0 then return ("%s: no failed or skipped file at that path"):format(tostring(path)) end
    live.override("retry", path)
    return ("%s is pending again: %s"):format(path, copier_of(state, m) and "the running copy takes it"
                                                     or "the next run copies it")
  end

  function E.set(key, value)
    if key == "copy.threads" then return E.threads(value) end
    local sec, k = tostring(key):match("^([%w_]+)%.([%w_]+)$")
    if not sec or not state.policy then error("set(key, value): key is section.name, e.g. retry.max", 2) end
    local t = state.policy[sec]
    if type(t) ~= "table" then error(("set: the policy has no section %s"):format(sec), 2) end
    local old = t[k]
    if old ~= nil and type(old) ~= type(value) then
      error(("set: %s is a %s, not a %s"):format(key, type(old), type(value)), 2)
    end
    t[k] = value
    live.override(key, value, old)
    return ("%s = %s for the rest of the run (was %s)"):format(key, tostring(value), tostring(old))
  end

  function E.explain(findings)
    return require("ntt.repl").explain(state.policy or {}, findings)
  end

  return E
end

return M
