"""The Lua scripts of the Redis mesh store (:mod:`meshconnect.mesh.redis_store`).

Each runs alone on the server, which makes it the store's transaction: an append sets records
and positions together, a commit a group's offsets and state together. Every key a script
touches is passed in ``KEYS`` and carries the mesh's hash tag, so a script stays in one hash
slot (Redis Cluster). Leases are stored as ``"epoch|expires|owner"``.
"""

from __future__ import annotations

__all__ = [
    "ACQUIRE",
    "APPEND",
    "BREAK",
    "COMMIT",
    "READ",
    "RELEASE",
    "RESET_GROUP",
    "SET_POSITIONS",
    "TOKEN_TTL",
    "TRIM",
]

#: Every script starts with this check: its last key is ``{p}:mesh``, its last argument the id
#: the store read there when it opened. A server that lost its data (restarted without
#: persistence, flushed) has no such key, or another store's new one: the script refuses to
#: run, instead of appending from offset 0 or renewing leases as if nothing happened.
MESH_CHECK = """
local mesh_key = table.remove(KEYS)
local mesh_id = table.remove(ARGV)
local mesh_now = redis.call('GET', mesh_key)
if mesh_now ~= mesh_id then
  if not mesh_now then mesh_now = 'no mesh' end
  return redis.error_reply('LOST expected mesh ' .. mesh_id .. ', found ' .. mesh_now)
end
"""

#: How long an append's token and result are kept (seconds).
TOKEN_TTL = 3600
#: Stream entries a read script returns at most (after the one holding the offset).
READ_ENTRIES = 16

# An append: KEYS = end, start(unused), sources, leases, token, then per topic its data and
# index streams, then per connector its positions hash. ARGV = token, now, channel, ntopics,
# (topic, count, body) * ntopics, nconnectors, (connector, nparts, (partition, json) * nparts)
# * nconnectors, nchecks, (lease, owner, epoch) * nchecks. Returns the first offset per topic.
APPEND = """
local done = redis.call('GET', KEYS[5])
if done then return cjson.decode(done) end
local ntopics = tonumber(ARGV[4])
local i = 5 + ntopics * 3
local nconn = tonumber(ARGV[i])
i = i + 1
for c = 1, nconn do
  i = i + 2 + tonumber(ARGV[i + 1]) * 2
end
local nchecks = tonumber(ARGV[i])
for k = 1, nchecks do
  local name, owner, epoch = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local held = redis.call('HGET', KEYS[4], name)
  if not held or held:match('^([^|]*)|') ~= epoch or held:match('^[^|]*|[^|]*|(.*)$') ~= owner then
    return redis.error_reply('FENCED lease ' .. name .. ' is no longer held by ' .. owner)
  end
  i = i + 3
end
local starts = {}
local j = 5
for t = 1, ntopics do
  local topic, count, body = ARGV[j], tonumber(ARGV[j + 1]), ARGV[j + 2]
  local start = tonumber(redis.call('HGET', KEYS[1], topic) or '0')
  local id = string.format('0-%d', start + 1)
  redis.call('XADD', KEYS[4 + t * 2], id, 'n', count, 'at', ARGV[2], 'b', body)
  redis.call('XADD', KEYS[5 + t * 2], id, 'n', count, 'at', ARGV[2], 'z', #body)
  redis.call('HSET', KEYS[1], topic, string.format('%d', start + count))
  starts[t] = start
  j = j + 3
end
local key = 6 + ntopics * 2
j = 5 + ntopics * 3 + 1
for c = 1, nconn do
  local connector, nparts = ARGV[j], tonumber(ARGV[j + 1])
  j = j + 2
  for p = 1, nparts do
    redis.call('HSET', KEYS[key], ARGV[j], ARGV[j + 1])
    j = j + 2
  end
  redis.call('SADD', KEYS[3], connector)
  key = key + 1
end
local result = cjson.encode(starts)
redis.call('SET', KEYS[5], result, 'EX', %(token_ttl)d)
if ntopics > 0 then redis.call('PUBLISH', ARGV[3], '') end
return starts
""".replace("%(token_ttl)d", str(TOKEN_TTL))

# A read: KEYS = start, end, data stream. ARGV = topic, offset, limit, first offset of a batch
# the reader has decoded already (its body is not sent again). Returns start, end, then
# (first, count, body) per entry.
READ = """
local topic = ARGV[1]
local offset, limit, known = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local start = tonumber(redis.call('HGET', KEYS[1], topic) or '0')
local e = tonumber(redis.call('HGET', KEYS[2], topic) or '0')
if offset < start then offset = start end
local out = {start, e}
if offset >= e or limit <= 0 then return out end
local entries = redis.call('XREVRANGE', KEYS[3], string.format('0-%d', offset + 1), '-', 'COUNT', 1)
if #entries == 0 then
  entries = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)
end
local covered = 0
local last = nil
local function add(entry)
  local first = tonumber(string.sub(entry[1], 3)) - 1
  local fields = entry[2]
  local n = tonumber(fields[2])
  local body = ''
  if tostring(first) ~= known then body = fields[6] end
  out[#out + 1] = first
  out[#out + 1] = n
  out[#out + 1] = body
  covered = first + n - offset
  last = entry[1]
end
if #entries == 0 then return out end
add(entries[1])
if covered < limit then
  local more = redis.call('XRANGE', KEYS[3], '(' .. last, '+', 'COUNT', %(entries)d)
  for _, entry in ipairs(more) do
    add(entry)
    if covered >= limit then break end
  end
end
return out
""".replace("%(entries)d", str(READ_ENTRIES))

# A group commit: KEYS = group hash, states, groups, leases. ARGV = group, has_state, state,
# nchecks, (lease, owner, epoch) * nchecks, then (topic, offset) pairs.
COMMIT = """
local i = 5
for k = 1, tonumber(ARGV[4]) do
  local name, owner, epoch = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local held = redis.call('HGET', KEYS[4], name)
  if not held or held:match('^([^|]*)|') ~= epoch or held:match('^[^|]*|[^|]*|(.*)$') ~= owner then
    return redis.error_reply('FENCED lease ' .. name .. ' is no longer held by ' .. owner)
  end
  i = i + 3
end
while i <= #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
else
  redis.call('HDEL', KEYS[2], ARGV[1])
end
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""

# Reset a group's offsets, keeping its state: KEYS = group hash, states, groups. ARGV = group,
# then (topic, offset) pairs.
RESET_GROUP = """
redis.call('DEL', KEYS[1])
local i = 2
while i <= #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
if #ARGV > 1 or redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  redis.call('SADD', KEYS[3], ARGV[1])
else
  redis.call('SREM', KEYS[3], ARGV[1])
end
return 1
"""

# Replace one connector's positions: KEYS = positions hash, sources. ARGV = connector, then
# (partition, json) pairs.
SET_POSITIONS = """
redis.call('DEL', KEYS[1])
local i = 2
while i <= #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
if #ARGV > 1 then redis.call('SADD', KEYS[2], ARGV[1]) else redis.call('SREM', KEYS[2], ARGV[1]) end
return 1
"""

# Retention: KEYS = start, data, index. ARGV = topic, expected start, new start, min ID.
TRIM = """
local start = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
if start ~= ARGV[2] then return 0 end
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[4])
redis.call('XTRIM', KEYS[3], 'MINID', ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

# Leases: KEYS = leases, epochs. ARGV = owner, now, expires, names... Returns {0, (name,
# epoch)...} when all were taken, or {1, (name, "epoch|expires|owner")...} for the conflicts.
ACQUIRE = """
local owner, now, expires = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local conflicts = {1}
for i = 4, #ARGV do
  local held = redis.call('HGET', KEYS[1], ARGV[i])
  if held then
    local epoch, until_, who = held:match('^([^|]*)|([^|]*)|(.*)$')
    if who ~= owner and tonumber(until_) > now then
      conflicts[#conflicts + 1] = ARGV[i]
      conflicts[#conflicts + 1] = held
    end
  end
end
if #conflicts > 1 then return conflicts end
local taken = {0}
for i = 4, #ARGV do
  local held = redis.call('HGET', KEYS[1], ARGV[i])
  local epoch = nil
  if held then
    local e, until_, who = held:match('^([^|]*)|([^|]*)|(.*)$')
    if who == owner then epoch = e end
  end
  if not epoch then epoch = tostring(redis.call('HINCRBY', KEYS[2], ARGV[i], 1)) end
  redis.call('HSET', KEYS[1], ARGV[i], epoch .. '|' .. expires .. '|' .. owner)
  taken[#taken + 1] = ARGV[i]
  taken[#taken + 1] = epoch
end
return taken
"""

# KEYS = leases. ARGV = (name, owner) pairs: delete each still held by that owner.
BREAK = """
for i = 1, #ARGV, 2 do
  local held = redis.call('HGET', KEYS[1], ARGV[i])
  if held and held:match('^[^|]*|[^|]*|(.*)$') == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 1
"""

# KEYS = leases. ARGV = owner: delete every lease it holds.
RELEASE = """
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i + 1]:match('^[^|]*|[^|]*|(.*)$') == ARGV[1] then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return 1
"""
