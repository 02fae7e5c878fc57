-- POST /api/auth/verify-otp: each wrk thread spends its own slice of the pending sign-ups
-- BENCH_PREFIX-<i>@bench.example (i from BENCH_FIRST), all with code BENCH_CODE.
local counter = 0
setup = function(thread)
  thread:set("id", counter)
  counter = counter + 1
end
local prefix = os.getenv("BENCH_PREFIX")
local code = os.getenv("BENCH_CODE")
local stride = tonumber(os.getenv("BENCH_THREADS"))
local n = -1
request = function()
  n = n + 1
  local i = tonumber(os.getenv("BENCH_FIRST")) + n * stride + id
  local body = '{"email":"' .. prefix .. '-' .. i .. '@bench.example","otp":"' .. code .. '"}'
  return wrk.format("POST", "/api/auth/verify-otp", { ["Content-Type"] = "application/json" }, body)
end
