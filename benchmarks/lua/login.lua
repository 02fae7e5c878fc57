-- POST /api/auth/login for the users in BENCH_EMAILS (comma-separated) in turn.
local emails = {}
for e in string.gmatch(os.getenv("BENCH_EMAILS"), "[^,]+") do emails[#emails + 1] = e end
local password = os.getenv("BENCH_PASSWORD")
local n = 0
request = function()
  n = n + 1
  local body = '{"email":"' .. emails[(n % #emails) + 1] .. '","password":"' .. password .. '"}'
  return wrk.format("POST", "/api/auth/login", { ["Content-Type"] = "application/json" }, body)
end
