-- wrk script: POST the JSON body given after `--` to the URL, keep-alive; an optional
-- second argument is sent as `Authorization: Bearer <it>`.
--   wrk -t2 -c32 -d15s --latency -s bench/post.lua http://127.0.0.1:9200/openai-completion -- '{"prompt":"hi"}'
local body = "{}"
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  if args[1] ~= nil then
    body = args[1]
  end
  if args[2] ~= nil then
    headers["Authorization"] = "Bearer " .. args[2]
  end
end

function request()
  return wrk.format("POST", nil, headers, body)
end
