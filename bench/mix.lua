-- The distinct-request mix of bench/sidecar.py: no two requests are alike.
--
--   wrk -s bench/mix.lua http://127.0.0.1:PORT/ -- RULES
--
-- Every request has its own query string, x-request-id and traceparent; the
-- paths walk over the RULES service prefixes of the benchmark policy
-- (/svc<i>/items/<n>, each allowed by its own rule); one request in 20 is a
-- POST /orders with a small JSON body whose "amount" a rule reads. Keep this
-- in step with mix_request() in bench/sidecar.py (the Python-only harness).

local rules = 10
local n = 0

function init(args)
  rules = tonumber(args[1]) or 10
end

function request()
  n = n + 1
  local headers = {
    ["User-Agent"] = "bench-mix/1",
    ["Accept"] = "application/json",
    ["X-Request-Id"] = string.format("req-%012d", n),
    ["Traceparent"] = string.format("00-%032x-%016x-01", n, n * 7919),
  }
  if n % 20 == 0 then
    headers["Content-Type"] = "application/json"
    local body = string.format('{"amount":%d,"currency":"EUR","item":"sku-%d"}', n % 1000, n)
    return wrk.format("POST", "/orders?idempotency=" .. n, headers, body)
  end
  return wrk.format("GET", string.format("/svc%d/items/%d?page=%d&n=%d", n % rules, n % 997, n % 7, n), headers)
end
