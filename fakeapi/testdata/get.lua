-- wrk script: GET one existing record. Create it first:
--   curl -s -XPOST http://127.0.0.1:8081/v1/listing -d '{"external_id":"k1","version":1,"name":"x"}'
-- Usage: wrk -t2 -c64 -d10s -s fakeapi/testdata/get.lua http://127.0.0.1:8081
wrk.method = "GET"
wrk.path = "/v1/listing/1"
