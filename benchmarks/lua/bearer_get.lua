-- GET BENCH_PATH with the access tokens in BENCH_TOKENS (comma-separated) in turn: Keycloak's
-- userinfo, or the bare route of the ceiling. profile.lua with the path a parameter.
local tokens = {}
for t in string.gmatch(os.getenv("BENCH_TOKENS"), "[^,]+") do tokens[#tokens + 1] = t end
local path = os.getenv("BENCH_PATH")
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. tokens[(n % #tokens) + 1] })
end
