"""The Redis engine's server-side steps: each one Lua script, so all of it or none happens.

Keys (``P`` is the engine's prefix, ``cm:`` by default)::

    P states         hash  job id -> "<version>|<state JSON>": the version is read by the
                     scripts without decoding JSON (Lua's cjson would round the floats)
    P hist:<id>      zset  score = result timestamp, member = "<version:012d>|<result JSON>"
    P recent         zset  the newest results of every job: member = "<id>\\x1f<hist member>"
    P rid:<id>\\x1f<status>\\x1f<run id>   string with a TTL: a run id already counted
    P op:<uuid>      string with a TTL: a record call already applied (safe client retries)
    P changes        stream: one entry per changed job, fields j (id), s (state JSON, ""
                     when dropped); or r (a runtime record kind)
    P defs           hash  job id -> last good definition JSON
    P rec:<kind>     hash  key -> {"value": ..., "updated": ...} JSON
    P out:<id>       hash  the running run's output (``/ping/.../log``): run (its run id,
                     "" without), started (its start as the state JSON spells it), text,
                     updated, closed ("1": its finish took the text, appends refused)

Scripts take their keys from the prefix in ARGV, not KEYS: the engine targets one Redis
(with replicas of its own, Sentinel), not Redis Cluster, whose slots would split a job's
keys.
"""

from __future__ import annotations

__all__ = ["DROP", "OUTPUT", "PURGE", "RECORD", "TAKE_OUTPUT"]

#: The job's running run as the output scripts identify it: its run id ("" without one),
#: its start exactly as the state JSON spells it, and the decoded state; nil when idle.
#: ``ending`` is that run if a finish (run id or "", timestamp) ends it, as
#: transitions.ends_run decides; nil otherwise.
_RUNNING = """
local function running(p, id)
  local raw = redis.call('HGET', p .. 'states', id)
  if not raw then return nil end
  local body = raw:sub(raw:find('|', 1, true) + 1)
  local st = cjson.decode(body)
  if st.running ~= true then return nil end
  local run = st.run_id
  if type(run) ~= 'string' then run = '' end
  return run, body:match('"run_started":([^,}]+)') or 'null', st
end
local function ending(p, id, rid, ts)
  local run, started, st = running(p, id)
  if run and (type(st.last_report) ~= 'number' or ts >= st.last_report)
      and (rid == '' or run == '' or rid == run) then
    return run, started
  end
  return nil
end
"""

#: Write states (compare-and-set on each version), history entries, run-id keys and
#: change events. ARGV: prefix, op id, ttl, max results per job, recent max, stream
#: maxlen, job count, then per job (id, expected version or -1 for absent, new version,
#: encoded state, entry count, then score, member pairs), then the count of finishes to
#: check and per finish (job id, run id or "", timestamp), then the run-id key suffixes.
#: Returns {"ok"}, {"applied"} (this op id ran before), {"dup", keys...},
#: {"conflict", id, state JSON or "", ...} or {"logged", job ids...}: a checked finish
#: ends a run whose output (``OUTPUT``) is open, which TAKE_OUTPUT would take; nothing
#: is written then.
RECORD = (
    _RUNNING
    + """
local p = ARGV[1]
local op = p .. 'op:' .. ARGV[2]
if redis.call('EXISTS', op) == 1 then return {'applied'} end
local ttl = tonumber(ARGV[3])
local maxres = tonumber(ARGV[4])
local recentmax = tonumber(ARGV[5])
local maxlen = ARGV[6]
local njobs = tonumber(ARGV[7])
local i = 8
local jobs = {}
for _ = 1, njobs do
  local job = {id = ARGV[i], expect = tonumber(ARGV[i + 1]), version = ARGV[i + 2],
               state = ARGV[i + 3], first = i + 5, n = tonumber(ARGV[i + 4])}
  jobs[#jobs + 1] = job
  i = i + 5 + 2 * job.n
end
local fins = {}
local nfins = tonumber(ARGV[i])
for k = i + 1, i + 3 * nfins do fins[#fins + 1] = ARGV[k] end
i = i + 1 + 3 * nfins
local rids = {}
for k = i, #ARGV do rids[#rids + 1] = p .. 'rid:' .. ARGV[k] end
local dups = {}
for _, key in ipairs(rids) do
  if redis.call('EXISTS', key) == 1 then dups[#dups + 1] = key:sub(#p + 5) end
end
if #dups > 0 then table.insert(dups, 1, 'dup'); return dups end
local conflicts = {}
for _, job in ipairs(jobs) do
  local raw = redis.call('HGET', p .. 'states', job.id)
  local current = -1
  if raw then current = tonumber(raw:match('^(%d+)|')) end
  if current ~= job.expect then
    conflicts[#conflicts + 1] = job.id
    conflicts[#conflicts + 1] = raw or ''
  end
end
if #conflicts > 0 then table.insert(conflicts, 1, 'conflict'); return conflicts end
local logged = {}
for k = 1, #fins, 3 do
  local id, rid, ts = fins[k], fins[k + 1], tonumber(fins[k + 2])
  local key = p .. 'out:' .. id
  if redis.call('EXISTS', key) == 1 then
    local run, started = ending(p, id, rid, ts)
    if run then
      local cur = redis.call('HMGET', key, 'run', 'started', 'closed')
      if cur[1] == run and cur[2] == started and cur[3] ~= '1' then logged[#logged + 1] = id end
    end
  end
end
if #logged > 0 then table.insert(logged, 1, 'logged'); return logged end
local touched_recent = false
for _, job in ipairs(jobs) do
  redis.call('HSET', p .. 'states', job.id, job.state)
  if job.n > 0 then
    local hist = p .. 'hist:' .. job.id
    for k = 0, job.n - 1 do
      local score = ARGV[job.first + 2 * k]
      local member = ARGV[job.first + 2 * k + 1]
      redis.call('ZADD', hist, score, member)
      redis.call('ZADD', p .. 'recent', score, job.id .. '\\31' .. member)
    end
    redis.call('ZREMRANGEBYRANK', hist, 0, -(maxres + 1))
    touched_recent = true
  end
  redis.call('XADD', p .. 'changes', 'MAXLEN', '~', maxlen, '*', 'j', job.id, 's', job.state)
end
if touched_recent then redis.call('ZREMRANGEBYRANK', p .. 'recent', 0, -(recentmax + 1)) end
for _, key in ipairs(rids) do redis.call('SET', key, '1', 'EX', ttl) end
redis.call('SET', op, '1', 'EX', 60)
return {'ok'}
"""
)

#: Delete history entries stamped before a time, bump each touched job's version and
#: tell the replicas. ARGV: prefix, before (exclusive), stream maxlen, then job ids (none:
#: every job). Returns the number of entries removed.
PURGE = """
local p = ARGV[1]
local before = '(' .. ARGV[2]
local maxlen = ARGV[3]
local ids = {}
if #ARGV > 3 then
  for k = 4, #ARGV do ids[#ids + 1] = ARGV[k] end
else
  ids = redis.call('HKEYS', p .. 'states')
end
local removed = 0
for _, id in ipairs(ids) do
  local n = redis.call('ZREMRANGEBYSCORE', p .. 'hist:' .. id, '-inf', before)
  if n > 0 then
    removed = removed + n
    local raw = redis.call('HGET', p .. 'states', id)
    if raw then
      local sep = raw:find('|', 1, true)
      local encoded = (tonumber(raw:sub(1, sep - 1)) + 1) .. raw:sub(sep)
      redis.call('HSET', p .. 'states', id, encoded)
      redis.call('XADD', p .. 'changes', 'MAXLEN', '~', maxlen, '*', 'j', id, 's', encoded)
    end
  end
end
if #ARGV > 3 then
  local wanted = {}
  for _, id in ipairs(ids) do wanted[id] = true end
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', p .. 'recent', '-inf', before)) do
    local sep = member:find('\\31', 1, true)
    if sep and wanted[member:sub(1, sep - 1)] then redis.call('ZREM', p .. 'recent', member) end
  end
else
  redis.call('ZREMRANGEBYSCORE', p .. 'recent', '-inf', before)
end
return removed
"""

#: Remove a job at once: state, history, definition, its entries in ``recent``.
#: ARGV: prefix, job id, stream maxlen. Returns the change event's stream id, or "" if
#: the job did not exist.
DROP = """
local p = ARGV[1]
local id = ARGV[2]
local existed = redis.call('HDEL', p .. 'states', id)
redis.call('HDEL', p .. 'defs', id)
redis.call('DEL', p .. 'hist:' .. id)
local prefix = id .. '\\31'
for _, member in ipairs(redis.call('ZRANGE', p .. 'recent', 0, -1)) do
  if member:sub(1, #prefix) == prefix then redis.call('ZREM', p .. 'recent', member) end
end
if existed == 1 then
  return redis.call('XADD', p .. 'changes', 'MAXLEN', '~', ARGV[3], '*', 'j', id, 's', '')
end
return ''

"""


#: Append to (or, restoring, put back in front of) the running run's output, keeping its
#: last ``limit`` bytes at a UTF-8 boundary. ARGV: prefix, job id, run id ("" any), text,
#: limit, now, mode ("append" | "restore"), the run's start (restore). Returns {"ok", run,
#: started, text}, {"idle"}, {"other", running run id}, {"closed"} or {"gone"} (restore:
#: the run ended meanwhile).
OUTPUT = (
    _RUNNING
    + """
local p, id, rid, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[7]
local run, started = running(p, id)
if not run then return {'idle'} end
if mode == 'restore' then
  if rid ~= run or ARGV[8] ~= started then return {'gone'} end
elseif rid ~= '' and rid ~= run then
  return {'other', run}
end
local key = p .. 'out:' .. id
local cur = redis.call('HMGET', key, 'run', 'started', 'text', 'closed')
local text = ''
if cur[1] == run and cur[2] == started then
  if cur[4] == '1' and mode ~= 'restore' then return {'closed'} end
  text = cur[3] or ''
end
if mode == 'restore' then text = ARGV[4] .. text else text = text .. ARGV[4] end
local limit = tonumber(ARGV[5])
if #text > limit then
  local cut = #text - limit + 1
  while cut <= #text do
    local b = text:byte(cut)
    if b < 128 or b >= 192 then break end
    cut = cut + 1
  end
  text = text:sub(cut)
end
redis.call('HSET', key, 'run', run, 'started', started, 'text', text, 'updated', ARGV[6],
           'closed', '0')
return {'ok', run, started, text}
"""
)

#: For each finish that ends its job's running run (as transitions.ends_run decides), take
#: that run's output and close the run to appends, also a run that logged nothing: an
#: append that comes before the finish is recorded is refused, never left behind it.
#: ARGV: prefix, then per finish: job id, run id ("" none), timestamp. Returns flat (id,
#: run, started, text, updated) per output taken. Called only when RECORD answered
#: "logged" for one of the finishes (each write here costs an AOF fsync).
TAKE_OUTPUT = (
    _RUNNING
    + """
local p = ARGV[1]
local out, seen = {}, {}
for k = 2, #ARGV, 3 do
  local id, rid, ts = ARGV[k], ARGV[k + 1], tonumber(ARGV[k + 2])
  local run, started
  if not seen[id] then run, started = ending(p, id, rid, ts) end
  if run then
    seen[id] = true
    local key = p .. 'out:' .. id
    local cur = redis.call('HMGET', key, 'run', 'started', 'text', 'closed', 'updated')
    if cur[1] == run and cur[2] == started then
      if cur[4] ~= '1' then
        for _, v in ipairs({id, run, started, cur[3] or '', cur[5] or '0'}) do
          out[#out + 1] = v
        end
        redis.call('HSET', key, 'text', '', 'closed', '1')
      end
    else
      redis.call('HSET', key, 'run', run, 'started', started, 'text', '', 'updated', '0',
                 'closed', '1')
    end
  end
end
return out
"""
)
