"""The Lua scripts of the shared limiter: each checks and changes one gateway key's Redis keys
(one hash tag, one cluster slot) atomically. Times are seconds from the caller's clock; TTLs are
relative, so the store's own clock never has to agree with it.

A key's Redis keys (`P` the prefix, `K` the gateway key's name):
  P:{K}:rpm, P:{K}:tpm     a GCRA bucket's theoretical arrival time, gone once the bucket is full
  P:{K}:leases             running requests: a sorted set of ticket ids scored by expiry
  P:{K}:held               each running request's budget reservation: id -> "<period id> <cost>"
  P:{K}:budget:<period>    the period's `spent` and `reserved` micro-USD, gone after the period
"""

from __future__ import annotations

# Shared by the scripts: the number formats and the GCRA arithmetic of limits/limiter.py.
_COMMON = """
local function num(text) return string.format('%.6f', text) end
local function tat_of(key)
  local value = redis.call('GET', key)
  if value then return tonumber(value) end
  return 0
end
local function store_tat(key, tat, now)
  if tat > now then
    redis.call('SET', key, num(tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
  else
    redis.call('DEL', key)
  end
end
"""

# Refused: nothing is changed. Order of checks as in-process: concurrency, budget, rpm, tpm.
# Returns {status, wait, spent, reserved, rpm tat, tpm tat}; status 0 admitted, 1 concurrency,
# 2 budget, 3 rpm, 4 tpm.
ADMIT = (
    _COMMON
    + """
local now, id, ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local concurrency, rpm, tpm = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local tokens, budget, hard = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9] == '1'
local cost, budget_ttl, period = tonumber(ARGV[10]), tonumber(ARGV[11]), ARGV[12]
local leased = concurrency > 0 or budget >= 0

if leased then
  -- Leases and reservations whose replica stopped renewing them (at most 256 per call).
  local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 256)
  for _, old in ipairs(expired) do
    local held = redis.call('HGET', KEYS[4], old)
    if held then
      local held_period, held_cost = string.match(held, '^(%S+) (%d+)$')
      if held_period == period and held_cost ~= '0' then
        redis.call('HINCRBY', KEYS[5], 'reserved', '-' .. held_cost)
      end
      redis.call('HDEL', KEYS[4], old)
    end
    redis.call('ZREM', KEYS[3], old)
  end
end

local rpm_tat, tpm_tat = 0, 0
if rpm > 0 then rpm_tat = tat_of(KEYS[1]) end
if tpm > 0 then tpm_tat = tat_of(KEYS[2]) end
local spent, reserved = 0, 0
local function refuse(status, wait)
  return {status, num(wait), spent, reserved, num(rpm_tat), num(tpm_tat)}
end

if concurrency > 0 and redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf') >= concurrency then
  return refuse(1, 1)
end
if budget >= 0 then
  local values = redis.call('HMGET', KEYS[5], 'spent', 'reserved')
  spent, reserved = tonumber(values[1] or '0'), tonumber(values[2] or '0')
  local committed = spent + reserved
  -- soft: admitted while anything is left; hard: only when the worst case fits.
  local fits = committed < budget
  if hard then fits = committed + cost <= budget end
  if not fits then return refuse(2, 0) end
end
local rpm_new, tpm_new
if rpm > 0 then
  local interval = 60 / rpm
  local base = math.max(rpm_tat, now)
  local over = base + interval - now - 60
  if over > 1e-9 then return refuse(3, over) end
  rpm_new = base + interval
end
if tpm > 0 then
  local interval = 60 / tpm
  local base = math.max(tpm_tat, now)
  local over = base + math.min(tokens, tpm) * interval - now - 60
  if over > 1e-9 then return refuse(4, over) end
  tpm_new = base + tokens * interval
end

if rpm_new then store_tat(KEYS[1], rpm_new, now); rpm_tat = rpm_new end
if tpm_new then store_tat(KEYS[2], tpm_new, now); tpm_tat = tpm_new end
if leased then
  redis.call('ZADD', KEYS[3], now + ttl, id)
  redis.call('PEXPIRE', KEYS[3], math.ceil(ttl * 2000))
end
if budget >= 0 then
  -- The integers as the caller wrote them: a Lua number may print as 1e+15.
  redis.call('HSET', KEYS[4], id, period .. ' ' .. ARGV[10])
  redis.call('PEXPIRE', KEYS[4], math.ceil(ttl * 2000))
  reserved = redis.call('HINCRBY', KEYS[5], 'reserved', ARGV[10])
  if budget_ttl > 0 then redis.call('PEXPIRE', KEYS[5], budget_ttl) end
end
return {0, num(0), spent, reserved, num(rpm_tat), num(tpm_tat)}
"""
)

# A request ended: its tokens corrected, its lease and reservation given back, its cost spent in
# the period it was admitted in (a reservation already expired is not given back twice).
SETTLE = (
    _COMMON
    + """
local now, id, tpm = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local delta, cost, budgeted = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6] == '1'
local budget_ttl = tonumber(ARGV[7])
if tpm > 0 and delta ~= 0 then
  local tat = math.max(tat_of(KEYS[1]), now) + delta * 60 / tpm
  store_tat(KEYS[1], tat, now)
end
redis.call('ZREM', KEYS[2], id)
if budgeted then
  local held = redis.call('HGET', KEYS[3], id)
  if held then
    local _, held_cost = string.match(held, '^(%S+) (%d+)$')
    redis.call('HDEL', KEYS[3], id)
    -- Redis refuses "-0" as an integer: an unpriced request's reservation is given back as is.
    if held_cost ~= '0' then redis.call('HINCRBY', KEYS[4], 'reserved', '-' .. held_cost) end
  end
  if cost > 0 then redis.call('HINCRBY', KEYS[4], 'spent', ARGV[5]) end
  if budget_ttl > 0 then redis.call('PEXPIRE', KEYS[4], budget_ttl) end
end
return 0
"""
)

# The first replica to start in a period begins it with what the ledger says was spent.
SEED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'spent', ARGV[1], 'reserved', 0)
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""
