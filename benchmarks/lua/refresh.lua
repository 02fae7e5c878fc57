-- POST /api/auth/refresh: rotation spends each refresh token once, so every thread keeps a pool
-- of live tokens (from BENCH_REFRESH, comma-separated, dealt out to the threads), sends one and
-- puts the token the answer carries back in the pool.
local counter = 0
local threads = {}
setup = function(thread)
  thread:set("id", counter)
  counter = counter + 1
  threads[#threads + 1] = thread
end
local pool = nil
local function fill()
  pool = {}
  local stride = tonumber(os.getenv("BENCH_THREADS"))
  local k = 0
  for t in string.gmatch(os.getenv("BENCH_REFRESH"), "[^,]+") do
    if k % stride == id then pool[#pool + 1] = t end
    k = k + 1
  end
end
request = function()
  if pool == nil then fill() end
  local token = table.remove(pool)
  if token == nil then token = "exhausted" end
  local body = '{"refresh_token":"' .. token .. '"}'
  return wrk.format("POST", "/api/auth/refresh", { ["Content-Type"] = "application/json" }, body)
end
response = function(status, headers, body)
  local token = string.match(body, '"refresh_token":"([^"]+)"')
  if token then pool[#pool + 1] = token end
end
