-- POST Telegram updates with a unique update_id per request: thread offset + per-thread counter.
-- Argument: a base number so two runs against one inbox never repeat an id.
local next_id = 0
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

local base, counter = 0, 0
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  base = tonumber(args[1] or "0")
end

function request()
  counter = counter + 1
  local update_id = base + tid * 100000000 + counter
  local body = string.format(
    '{"update_id":%d,"message":{"message_id":%d,"date":1700000000,"chat":{"id":%d,"type":"private"},"from":{"id":%d,"is_bot":false,"first_name":"wrk"},"text":"hello %d"}}',
    update_id, counter, 4200 + tid, 4200 + tid, counter)
  return wrk.format("POST", nil, headers, body)
end
