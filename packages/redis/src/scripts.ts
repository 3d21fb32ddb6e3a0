/**
 * The Lua scripts: every multi-step read-check-write runs as one script, so it is atomic on
 * the server (Redis runs one script at a time). Time comes from the server (`TIME`), so
 * processes with skewed clocks agree on lease expiry. Scripts are sent with EVALSHA and
 * re-sent with EVAL after NOSCRIPT (a restarted server has an empty script cache).
 *
 * Lease representation (see keys.ts): the lease key holds `<epoch>|<owner>` with a PX time to
 * live; the persistent epoch key holds the last grant's `<epoch>|<owner>` (or `<epoch>|` once
 * released), so the epoch survives expiry and release and always grows on a change of hands.
 * A fence `<epoch>|<owner>` is current when the lease key holds it, or when the lease key
 * expired and the epoch key still holds it (nobody took the lease since).
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';

export class Script {
  readonly sha: string;
  constructor(
    readonly name: string,
    readonly source: string,
  ) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }

  /** Runs the script; on NOSCRIPT (fresh server) sends the source once with EVAL. */
  async run(redis: Redis, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    try {
      return await redis.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (e) {
      if (e instanceof Error && e.message.startsWith('NOSCRIPT')) return redis.eval(this.source, keys.length, ...keys, ...args);
      throw e;
    }
  }
}

const NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

/** Offset of a Herald stream's last generated id (0 when none or not a Herald id). */
const LAST_GENERATED = `
local function lastGenerated(key)
  if redis.call('EXISTS', key) == 0 then return 0 end
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  local id
  if last[1] then
    id = last[1][1]
  else
    local info = redis.call('XINFO', 'STREAM', key)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then id = info[i + 1] end
    end
  end
  if not id then return 0 end
  return tonumber(string.match(id, '^0%-(%d+)$') or '0')
end
`;

/** True when KEYS[1] (lease) / KEYS[2] (epoch) say fence ARGV[1] is current. */
const FENCE_OK = `
local function fenceOk(token)
  local cur = redis.call('GET', KEYS[1])
  if cur then return cur == token end
  return redis.call('GET', KEYS[2]) == token
end
`;

/**
 * acquire. KEYS: lease, epoch, index. ARGV: owner, ttlMs, URI-encoded resource (for the index).
 * Returns {epoch, expiresAt} or false when another owner holds a live lease.
 */
export const ACQUIRE = new Script(
  'acquire',
  `${NOW}
local owner = ARGV[1]
local ttl = tonumber(ARGV[2])
local cur = redis.call('GET', KEYS[1])
if cur then
  local bar = string.find(cur, '|', 1, true)
  if string.sub(cur, bar + 1) ~= owner then return false end
  local epoch = tonumber(string.sub(cur, 1, bar - 1))
  if ttl > 0 then redis.call('SET', KEYS[1], cur, 'PX', ttl) else redis.call('DEL', KEYS[1]) end
  return {epoch, now + ttl}
end
local last = redis.call('GET', KEYS[2])
local epoch = 1
if last then epoch = tonumber(string.sub(last, 1, string.find(last, '|', 1, true) - 1)) + 1 end
local token = string.format('%d', epoch) .. '|' .. owner
if ttl > 0 then redis.call('SET', KEYS[1], token, 'NX', 'PX', ttl) end
redis.call('SET', KEYS[2], token)
redis.call('SADD', KEYS[3], ARGV[3])
return {epoch, now + ttl}
`,
);

/** renew. KEYS: lease, epoch. ARGV: token, ttlMs. Returns expiresAt or false when lost. */
export const RENEW = new Script(
  'renew',
  `${NOW}${FENCE_OK}
local ttl = tonumber(ARGV[2])
if not fenceOk(ARGV[1]) then return false end
if ttl > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl) else redis.call('DEL', KEYS[1]) end
return now + ttl
`,
);

/** release. KEYS: lease, epoch. ARGV: token. Idempotent; keeps the epoch for the next owner. */
export const RELEASE = new Script(
  'release',
  `${FENCE_OK}
if not fenceOk(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
local token = ARGV[1]
redis.call('SET', KEYS[2], string.sub(token, 1, string.find(token, '|', 1, true)))
return 1
`,
);

/** validate. KEYS: lease, epoch. ARGV: token. Returns 1 when current. */
export const VALIDATE = new Script(
  'validate',
  `${FENCE_OK}
if fenceOk(ARGV[1]) then return 1 end
return 0
`,
);

/**
 * list. KEYS: index. ARGV: lease-key prefix (up to the resource). Returns a flat array
 * resource, value, expiresAt for every live lease. (Builds lease keys inside the script:
 * standalone Redis only, like the rest of this package.)
 */
export const LIST = new Script(
  'list',
  `${NOW}
local out = {}
for _, resource in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. resource
  local v = redis.call('GET', key)
  if v then
    local pttl = redis.call('PTTL', key)
    if pttl > 0 then
      table.insert(out, resource)
      table.insert(out, v)
      table.insert(out, now + pttl)
    end
  end
end
return out
`,
);

/** heartbeat. KEYS: members. ARGV: member, ttlMs. */
export const HEARTBEAT = new Script(
  'heartbeat',
  `${NOW}
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ttl > 0 then
  local pttl = redis.call('PTTL', KEYS[1])
  if pttl >= 0 and pttl < ttl or pttl == -1 then redis.call('PEXPIRE', KEYS[1], ttl) end
end
return 1
`,
);

/** members. KEYS: members. Returns live members (unsorted). */
export const MEMBERS = new Script(
  'members',
  `${NOW}
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%d', now), '+inf')
`,
);

/**
 * ensure topic. KEYS: meta, topics. ARGV: topic, partitions. Creates the metadata hash with
 * HSETNX (the first creator fixes the count) and returns the stored count.
 */
export const ENSURE_TOPIC = new Script(
  'ensure-topic',
  `
redis.call('HSETNX', KEYS[1], 'partitions', ARGV[2])
redis.call('HSETNX', KEYS[1], 'format', '1')
redis.call('SADD', KEYS[2], ARGV[1])
return redis.call('HGET', KEYS[1], 'partitions')
`,
);

/**
 * register a group on a partition. KEYS: stream, groups. ARGV: group, 'earliest'|'latest'.
 * An 'earliest' group registers at -1 (nothing committed: pins retention at the start), a
 * 'latest' one at the stream's last generated id. An existing registration is kept.
 * Returns the group's committed offset.
 */
export const REGISTER = new Script(
  'register',
  `
local start = '-1'
if ARGV[2] == 'latest' then
  start = '0'
  if redis.call('EXISTS', KEYS[1]) == 1 then
    local info = redis.call('XINFO', 'STREAM', KEYS[1])
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        local seq = string.match(info[i + 1], '^0%-(%d+)$')
        if not seq then return redis.error_reply('HERALD stream ' .. KEYS[1] .. ' holds an entry id Herald did not write: ' .. info[i + 1]) end
        start = seq
      end
    end
  end
end
redis.call('HSETNX', KEYS[2], ARGV[1], start)
return redis.call('HGET', KEYS[2], ARGV[1])
`,
);

/**
 * head: the offset of the stream's last generated id (0 when none). KEYS: stream.
 */
export const HEAD = new Script(
  'head',
  `
if redis.call('EXISTS', KEYS[1]) == 0 then return '0' end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then
    local seq = string.match(info[i + 1], '^0%-(%d+)$')
    if not seq then return redis.error_reply('HERALD stream ' .. KEYS[1] .. ' holds an entry id Herald did not write: ' .. info[i + 1]) end
    return seq
  end
end
return '0'
`,
);

/**
 * fenced commit. KEYS: lease, epoch, groups, stream. ARGV: token ('' = unfenced), group,
 * offset, SHA-1 of the entry's `e` field as the reader read it ('' = unchecked).
 * Moves the group's committed offset forward only. Returns {1}; {0, current lease value} when
 * the fence is stale; {2, last offset} when `offset` lies beyond the stream's end, {3} when
 * the entry at `offset` is not the one the reader read — both mean the server lost
 * acknowledged writes (crash, failover) and new entries reuse the offsets: the reader's
 * position must not be kept.
 */
export const COMMIT = new Script(
  'commit',
  `${FENCE_OK}${LAST_GENERATED}
if ARGV[1] ~= '' and not fenceOk(ARGV[1]) then
  return {0, redis.call('GET', KEYS[1]) or redis.call('GET', KEYS[2]) or ''}
end
local offset = tonumber(ARGV[3])
local last = lastGenerated(KEYS[4])
if offset > last then return {2, string.format('%d', last)} end
if ARGV[4] ~= '' then
  local at = redis.call('XRANGE', KEYS[4], '0-' .. ARGV[3], '0-' .. ARGV[3])
  if at[1] then
    local f = at[1][2]
    local body = ''
    for i = 1, #f, 2 do
      if f[i] == 'e' then body = f[i + 1] end
    end
    if redis.sha1hex(body) ~= ARGV[4] then return {3} end
  end
end
local prev = redis.call('HGET', KEYS[3], ARGV[2])
if not prev or offset > tonumber(prev) then redis.call('HSET', KEYS[3], ARGV[2], ARGV[3]) end
return {1}
`,
);

/**
 * retention of one partition. KEYS: stream, groups, marks, dropped. ARGV: maxAgeMs (-1: none),
 * cap (-1: none).
 *
 * Age: records a time mark (now → the last offset) and deletes the offsets every mark older
 * than maxAgeMs covers — never past the slowest registered group's committed offset. Cap: if
 * more than `cap` entries remain, deletes the oldest down to `cap`, counting for each group
 * the deleted entries it had not committed. Trims with XTRIM MINID (exact). Returns {deleted}.
 */
export const RETENTION = new Script(
  'retention',
  `${NOW}
local maxAge = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local function seq(id)
  local s = string.match(id, '^0%-(%d+)$')
  if not s then error('HERALD stream ' .. KEYS[1] .. ' holds an entry id Herald did not write: ' .. id) end
  return tonumber(s)
end
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #head == 0 then return {0} end
local first = seq(head[1][1])
local last = seq(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1][1])
local groups = redis.call('HGETALL', KEYS[2])
local slowest = math.huge
for i = 2, #groups, 2 do
  local c = tonumber(groups[i])
  if c < slowest then slowest = c end
end
local upTo = first - 1
if maxAge >= 0 then
  redis.call('ZADD', KEYS[3], 'NX', now, string.format('%d', last))
  local m = redis.call('ZREVRANGEBYSCORE', KEYS[3], string.format('%d', now - maxAge), '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if m[1] then
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. m[2])
    local aged = math.min(tonumber(m[1]), slowest)
    if aged > upTo then upTo = aged end
  end
end
if cap > 0 and last - math.max(first - 1, upTo) > cap then
  local forced = last - cap
  for i = 1, #groups, 2 do
    local c = tonumber(groups[i + 1])
    if c < forced then
      local lost = forced - math.max(c, upTo, first - 1)
      if lost > 0 then redis.call('HINCRBY', KEYS[4], groups[i], lost) end
    end
  end
  upTo = forced
end
if upTo < first then return {0} end
return {redis.call('XTRIM', KEYS[1], 'MINID', '=', string.format('0-%d', upTo + 1))}
`,
);
