-- GET /api/auth/profile with the access tokens in BENCH_TOKENS (comma-separated), in turn.
local tokens = {}
for t in string.gmatch(os.getenv("BENCH_TOKENS"), "[^,]+") do tokens[#tokens + 1] = t end
local n = 0
request = function()
  n = n + 1
  local headers = { ["Authorization"] = "Bearer " .. tokens[(n % #tokens) + 1] }
  return wrk.format("GET", "/api/auth/profile", headers)
end
