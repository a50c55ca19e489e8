-- POST {"message": "..."} round-robin over the paths given after `--`.
-- Arguments: paths (e.g. /chat/b0 /chat/b1), `key=PREFIX` to send a unique X-Idempotency-Key per request
-- (what the router sends the agent, so direct and nginx runs make the agent do the same work),
-- `delay=MS` to pause each connection MS ms between requests (a closed-loop approximation of a
-- fixed rate, since wrk2 is not in Debian), `auth=PATH=TOKEN` (PATH `*`: any) to send the tenant's
-- agent credential as the router does (the agent refuses a request without it).
local next_id = 0
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

local paths, key_prefix, pause, counter, auth = {}, nil, 0, 0, {}
local body = '{"message":"hello from wrk"}'

function init(args)
  for _, a in ipairs(args) do
    if a:sub(1, 4) == "key=" then
      key_prefix = a:sub(5)
    elseif a:sub(1, 6) == "delay=" then
      pause = tonumber(a:sub(7))
    elseif a:sub(1, 5) == "auth=" then
      local path, token = a:sub(6):match("^([^=]+)=(.+)$")
      auth[path] = "Bearer " .. token
    else
      paths[#paths + 1] = a
    end
  end
  if #paths == 0 then paths[1] = wrk.path end
  if pause > 0 then
    delay = function() return pause end
  end
end

function request()
  counter = counter + 1
  local headers = { ["Content-Type"] = "application/json" }
  if key_prefix then
    headers["X-Idempotency-Key"] = key_prefix .. "-" .. tid .. "-" .. counter
  end
  local path = paths[(counter % #paths) + 1]
  headers["Authorization"] = auth[path] or auth["*"]
  return wrk.format("POST", path, headers, body)
end
