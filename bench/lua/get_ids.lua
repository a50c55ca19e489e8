-- GET /tenants/{id} for ids picked pseudo-randomly among N seeded ones: prefix and N after `--`.
local prefix, n = "r", 1
function init(args)
  prefix = args[1] or prefix
  n = tonumber(args[2] or "1")
  math.randomseed(os.time())
end

function request()
  return wrk.format("GET", string.format("/tenants/%s%05d", prefix, math.random(0, n - 1)))
end
