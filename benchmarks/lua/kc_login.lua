-- Keycloak's password grant: POST BENCH_PATH (the realm's token endpoint), form-encoded,
-- grant_type=password for the users in BENCH_USERS (comma-separated) in turn, client BENCH_CLIENT
-- (public, direct access grants on). The twin of login.lua.
local users = {}
for u in string.gmatch(os.getenv("BENCH_USERS"), "[^,]+") do users[#users + 1] = u end
local path = os.getenv("BENCH_PATH")
local prefix = "grant_type=password&client_id=" .. os.getenv("BENCH_CLIENT") .. "&password="
  .. string.gsub(os.getenv("BENCH_PASSWORD"), " ", "+") .. "&username="
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", path, headers, prefix .. users[(n % #users) + 1])
end
