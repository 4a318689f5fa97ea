-- wrk script: POST creates with a distinct external_id per request (a run
-- prefix keeps repeated runs from creating duplicates of each other).
-- Usage: wrk -t2 -c64 -d10s -s fakeapi/testdata/post.lua http://127.0.0.1:8081
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() + tid)
  run = math.random(1, 1000000000)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = string.format('{"external_id":"r%d-t%d-%d","version":1,"name":"listing %d","price":120.5,"tags":["a","b"]}', run, tid, counter, counter)
  return wrk.format("POST", "/v1/listing", nil, body)
end
