"""The Lua scripts of the Redis backplane.

Every decision that must not race another node — who holds a room's lease, whether an
append still carries the lease's fence, whether a snapshot would go backwards — is taken
inside Redis by one of these scripts, atomically, rather than by a read-then-write from
Python that another node could interleave with.
"""

from __future__ import annotations

import hashlib

# A lease's value is its *fence*, ``<node id>/<epoch>``: the epoch (``or:epoch:{room}``)
# grows with every claim, steal and refence, so an append carrying an older fence can be
# refused by Redis itself, whenever it arrives (see APPEND_MANY).
# KEYS[1]=lease, KEYS[2]=epoch, ARGV[1]=node id, ARGV[2]=ttl ms, ARGV[3]=our liveness key,
# ARGV[4]=its ttl ms. Idempotent for the same node, so a retry after a lost reply cannot
# turn our own successful claim into a "no". A node that takes a lease also proves it is
# alive in the same step: right after an empty Redis restart its liveness key may not be
# back yet, and another node must not take it for dead and steal the room it just claimed.
CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur then
  if string.match(cur, '^(.*)/%d+$') == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    redis.call('SET', ARGV[3], ARGV[1], 'PX', ARGV[4])
    return cur
  end
  return false
end
local v = ARGV[1] .. '/' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
redis.call('SET', ARGV[3], ARGV[1], 'PX', ARGV[4])
return v
"""
# Renew only if still ours (never resurrect a lease that expired or moved).
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# KEYS[1]=lease, KEYS[2]=epoch; ARGV[3] = liveness key prefix (the owner's liveness key is
# ARGV[3] .. owner), ARGV[4] = the liveness keys' ttl ms (ours is refreshed, as in CLAIM).
STEAL = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local owner = string.match(cur, '^(.*)/%d+$') or cur
  if owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    redis.call('SET', ARGV[3] .. ARGV[1], ARGV[1], 'PX', ARGV[4])
    return cur
  end
  if redis.call('EXISTS', ARGV[3] .. owner) == 1 then
    return false
  end
end
local v = ARGV[1] .. '/' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
redis.call('SET', ARGV[3] .. ARGV[1], ARGV[1], 'PX', ARGV[4])
return v
"""
# KEYS[1]=lease, KEYS[2]=epoch, ARGV[1]=our fence, ARGV[2]=ttl ms: a new epoch for a lease
# we hold, so that none of our appends still on the way (outcome unknown) can land later.
REFENCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
local v = string.match(ARGV[1], '^(.*)/%d+$') .. '/' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
return v
"""
# KEYS[1]=id key, ARGV[1]=token, ARGV[2]=ttl ms or '' (persistent). Idempotent per token.
RESERVE = """
local cur = redis.call('GET', KEYS[1])
if cur == false then
  if ARGV[2] == '' then
    redis.call('SET', KEYS[1], ARGV[1])
  else
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  end
  return 1
end
if cur == ARGV[1] then return 1 end
return 0
"""
# Group commit, fenced: KEYS come in pairs (room log, its lease) and ARGV in pairs (the
# fence the entry was made under, the entry). An entry is appended only while its lease
# still holds that fence; otherwise its id is 0 (refused: it never happened).
APPEND_MANY = """
local ids = {}
for i = 1, #KEYS, 2 do
  if redis.call('GET', KEYS[i + 1]) == ARGV[i] then
    ids[(i + 1) / 2] = redis.call('XADD', KEYS[i], '*', 'd', ARGV[i + 1])
  else
    ids[(i + 1) / 2] = 0
  end
end
return ids
"""
APPEND_MANY_SHA = hashlib.sha1(APPEND_MANY.encode()).hexdigest()  # the script's id in Redis
# KEYS[1]=a key naming a node (``kv:ws:{room}``), ARGV[1]=our node id, ARGV[2]=liveness key
# prefix: take the key unless another live node holds it (a dead node's ids are free).
CLAIM_KV = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. cur) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""
# KEYS[1]=snapshot hash, ARGV[1]=blob, ARGV[2]=last id. Refuses to go backwards, so a
# deposed owner that has not noticed yet cannot overwrite a newer snapshot.
SAVE_SNAPSHOT = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)%-?(%d*)$')
  if ms == nil then return nil end
  if seq == '' then seq = '0' end
  return tonumber(ms), tonumber(seq)
end
local old = redis.call('HGET', KEYS[1], 'last')
if old then
  local oms, oseq = parse(old)
  local nms, nseq = parse(ARGV[2])
  if oms and nms and (oms > nms or (oms == nms and oseq > nseq)) then return 0 end
end
redis.call('HSET', KEYS[1], 'blob', ARGV[1], 'last', ARGV[2])
return 1
"""


# The scripts called by name through coredis (registered once per client, see
# ``RedisBackplane._serve``). RENEW goes out as a plain EVAL in the heartbeat pipeline, and
# APPEND_MANY by hand on the hot-path connection (EVALSHA, then EVAL on NOSCRIPT).
REGISTERED = (
    ("claim", CLAIM), ("release", RELEASE), ("steal", STEAL),
    ("refence", REFENCE), ("claim_kv", CLAIM_KV), ("reserve", RESERVE), ("snapshot", SAVE_SNAPSHOT),
)
