/**
 * Consumer lag read from Redis: per (topic, group, partition) the head offset, the group's
 * committed offset (the `groups:<p>` hash the transport commits to, not Redis consumer groups,
 * which Herald does not use), the entries after it and when the oldest of them was appended.
 *
 * One Lua script per topic (all topics' scripts are in flight together on the connection), so
 * a topic's numbers are one consistent snapshot. Per partition it reads the newest entry
 * (XREVRANGE COUNT 1) and, per distinct committed offset, the first entry after it (XRANGE
 * COUNT 1): O(partitions × groups × log N), never a scan of the log. Entries are numbered
 * 0-1, 0-2, … and only ever trimmed from the front (XTRIM MINID), so the entries after the
 * committed offset are `head − first + 1`.
 *
 * Age: Herald writes explicit ids `0-<offset>`, so a stream id carries no time (only
 * auto-generated `*` ids hold the server's clock). Each entry therefore carries `t`, the
 * publishing transport's wall clock (epoch ms) when its pipeline was sent; for an entry without
 * `t` (written before it existed) the envelope's `time` is used instead.
 *
 * A read only: no key is written, no group registered, no lease touched.
 */
import type { PartitionLag } from '@herald/core';
import type { Redis } from 'ioredis';
import type { KeySpace } from './keys.ts';
import { Script } from './scripts.ts';

/**
 * lag of one topic. KEYS: meta. ARGV: the topic's key prefix (`<prefix>:<topic>:`), group
 * ('' = every registered group). Returns a flat array of rows
 * partition, group, head, committed, first unhandled offset (0: none), append time ('' unknown).
 * (Builds stream and groups keys inside the script: standalone Redis only, like the rest of
 * this package.)
 */
export const LAG = new Script(
  'lag',
  `
local n = tonumber(redis.call('HGET', KEYS[1], 'partitions') or '0') or 0
local out = {}
local function seq(id)
  return tonumber(string.match(id, '^0%-(%d+)$') or '0')
end
local function appendedAt(fields)
  local body
  for i = 1, #fields, 2 do
    if fields[i] == 't' then return fields[i + 1] end
    if fields[i] == 'e' then body = fields[i + 1] end
  end
  if body then
    local ok, env = pcall(cjson.decode, body)
    if ok and type(env) == 'table' and type(env.time) == 'string' then return env.time end
  end
  return ''
end
for p = 0, n - 1 do
  local stream = ARGV[1] .. p
  local groups
  if ARGV[2] == '' then
    groups = redis.call('HGETALL', ARGV[1] .. 'groups:' .. p)
  else
    local c = redis.call('HGET', ARGV[1] .. 'groups:' .. p, ARGV[2])
    if c then groups = {ARGV[2], c} else groups = {} end
  end
  if #groups > 0 then
    local head = 0
    if redis.call('EXISTS', stream) == 1 then
      local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
      if last[1] then
        head = seq(last[1][1])
      else
        local info = redis.call('XINFO', 'STREAM', stream)
        for i = 1, #info, 2 do
          if info[i] == 'last-generated-id' then head = seq(info[i + 1]) end
        end
      end
    end
    local firstAfter = {}
    for i = 1, #groups, 2 do
      local committed = tonumber(groups[i + 1]) or -1
      local from = math.max(committed, 0)
      local first, at = 0, ''
      if from < head then
        local key = string.format('%d', from)
        local hit = firstAfter[key]
        if not hit then
          local e = redis.call('XRANGE', stream, '(0-' .. key, '+', 'COUNT', 1)
          if e[1] then hit = {seq(e[1][1]), appendedAt(e[1][2])} else hit = {0, ''} end
          firstAfter[key] = hit
        end
        first, at = hit[1], hit[2]
      end
      table.insert(out, string.format('%d', p))
      table.insert(out, groups[i])
      table.insert(out, string.format('%d', head))
      table.insert(out, string.format('%d', committed))
      table.insert(out, string.format('%d', first))
      table.insert(out, at)
    end
  end
end
return out
`,
);

/** Reads the lag of `topics` (every group, or `group` only), sorted by topic, group, partition. */
export async function readLag(redis: Redis, keys: KeySpace, topics: readonly string[], group: string | undefined): Promise<PartitionLag[]> {
  const replies = await Promise.all(topics.map((topic) => LAG.run(redis, [keys.meta(topic)], [`${keys.prefix}:${topic}:`, group ?? ''])));
  const out: PartitionLag[] = [];
  replies.forEach((reply, ti) => {
    const topic = topics[ti]!;
    const r = reply as string[];
    for (let i = 0; i + 5 < r.length; i += 6) {
      const head = Number(r[i + 2]);
      const committed = Number(r[i + 3]);
      const first = Number(r[i + 4]);
      const messages = first > 0 ? Math.max(0, head - first + 1) : 0;
      out.push({
        topic,
        group: String(r[i + 1]),
        partition: Number(r[i]),
        head: head > 0 ? String(head) : '-1',
        // Offsets start at 1: a group registered at 0 ('latest' on an empty stream) has committed nothing.
        committed: committed > 0 ? String(committed) : '-1',
        messages,
        oldestUnhandledAt: messages > 0 ? appendTime(String(r[i + 5])) : undefined,
      });
    }
  });
  return out.sort((a, b) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.group < b.group ? -1 : a.group > b.group ? 1 : a.partition - b.partition));
}

/** `t` (epoch ms) or an envelope `time` (RFC 3339); undefined when neither reads as a time. */
function appendTime(v: string): number | undefined {
  if (v === '') return undefined;
  const n = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
  return Number.isFinite(n) ? n : undefined;
}
