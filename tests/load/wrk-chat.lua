-- wrk script for POST /v1/chat in wait mode: each of wrk's connections is a
-- closed-loop user asking, waiting for the answer, asking again. Every
-- question opens a new dialog (a random dialog_id). The token comes from
-- the environment:
--
--   TOKEN=$(./bin/sluice token --jwt-secret sluice-dev-secret-do-not-use-in-production --sub wrk --tenant loadtest)
--   TOKEN=$TOKEN wrk -t2 -c200 -d10s --latency -s tests/load/wrk-chat.lua http://127.0.0.1:18080
--
-- It prints the responses by status besides wrk's own figures; only 200s
-- are answers.

local token = os.getenv("TOKEN") or error("set TOKEN to a bearer token")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
  statuses = {}
  wrk.method = "POST"
  wrk.headers["Authorization"] = "Bearer " .. token
  wrk.headers["Content-Type"] = "application/json"
end

local hex = "0123456789abcdef"

function request()
  local id = {}
  for i = 1, 32 do
    local n = math.random(16)
    id[i] = hex:sub(n, n)
  end
  local body = '{"text":"优惠券还能用吗？","dialog_id":"' .. table.concat(id) .. '","wait_ms":5000}'
  return wrk.format(nil, "/v1/chat", nil, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do
      total[status] = (total[status] or 0) + n
    end
  end
  local secs = summary.duration / 1e6
  for status, n in pairs(total) do
    io.write(string.format("status %d: %d (%.0f/s)\n", status, n, n / secs))
  end
end
