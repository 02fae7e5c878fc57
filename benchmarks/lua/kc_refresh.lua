-- Keycloak's refresh grant: POST BENCH_PATH (the realm's token endpoint), form-encoded,
-- grant_type=refresh_token, client BENCH_CLIENT. The realm revokes each refresh token once used
-- (as Gatehouse's rotation does), so, as in refresh.lua, every thread keeps a pool of live tokens
-- (from BENCH_REFRESH, comma-separated, dealt out to BENCH_THREADS threads), sends one and puts
-- the token the answer carries back in the pool.
local counter = 0
setup = function(thread)
  thread:set("id", counter)
  counter = counter + 1
end
local path = os.getenv("BENCH_PATH")
local prefix = "grant_type=refresh_token&client_id=" .. os.getenv("BENCH_CLIENT") .. "&refresh_token="
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
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
  return wrk.format("POST", path, headers, prefix .. token)
end
response = function(status, headers, body)
  local token = string.match(body, '"refresh_token":"([^"]+)"')
  if token then pool[#pool + 1] = token end
end
