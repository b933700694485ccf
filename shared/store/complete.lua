-- Stores a request's final result and appends its turns to the dialog's
-- history, once. Idempotent on the request id.
-- KEYS[1] request key (hash), KEYS[2] history key (list)
-- ARGV[1] reply JSON, ARGV[2] state, ARGV[3] result TTL ms, ARGV[4] created_at ms,
-- ARGV[5] request id, ARGV[6] max turns, ARGV[7] history TTL ms,
-- ARGV[8] results channel, ARGV[9] channel message, ARGV[10..] turn JSONs.
-- Returns {1, ""} when stored now, {0, stored reply JSON} when already final.
-- The result is announced on the channel only when the request carries the
-- queued marker: only then may someone wait for it through the store.
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'done' or state == 'expired' then
  return {0, redis.call('HGET', KEYS[1], 'body')}
end
if #ARGV > 9 then
  -- The result may have expired while the turns are still in the history:
  -- never append a request's turns twice.
  local needle = '"request_id":"' .. ARGV[5] .. '"'
  local seen = false
  local items = redis.call('LRANGE', KEYS[2], 0, -1)
  for i = 1, #items do
    if string.find(items[i], needle, 1, true) then
      seen = true
      break
    end
  end
  if not seen then
    for i = 10, #ARGV do
      redis.call('RPUSH', KEYS[2], ARGV[i])
    end
    redis.call('LTRIM', KEYS[2], -tonumber(ARGV[6]), -1)
    redis.call('PEXPIRE', KEYS[2], ARGV[7])
  end
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'body', ARGV[1])
redis.call('HSETNX', KEYS[1], 'created_at', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if state == 'queued' then
  redis.call('PUBLISH', ARGV[8], ARGV[9] .. '\n' .. ARGV[1])
end
return {1, ''}
