-- bench/replication/put.lua: wrk script for bench/replication.sh.
--
-- Every request is a PUT of one JSON document of exactly PUT_BYTES bytes
-- (default 1024) to PUT_PREFIX .. id, where id = PUT_TAG-<thread>-<counter>:
-- every request writes a new document, so no two writes of a run (or of two
-- runs with different tags) touch the same key.
--
-- Environment (read once per wrk thread):
--   PUT_PREFIX  path prefix, e.g. /orders/ (a container route) or /plain/
--   PUT_TAG     distinguishes runs, e.g. r2-orders
--   PUT_BYTES   body size in bytes (default 1024)

local prefix = os.getenv("PUT_PREFIX") or "/orders/"
local tag    = os.getenv("PUT_TAG") or "run"
local size   = tonumber(os.getenv("PUT_BYTES") or "1024")

local next_tid = 0

function setup(thread)
   next_tid = next_tid + 1
   thread:set("tid", next_tid)
end

local n = 0
local pad = string.rep("x", size)
local headers = { ["Content-Type"] = "application/json" }

function request()
   n = n + 1
   local id = string.format("%s-%d-%d", tag, tid or 0, n)
   local head = string.format('{"id":"%s","tenantId":"tenant-%d","version":%d,"status":"open","pad":"',
                              id, n % 16, n)
   local fill = size - #head - 2
   if fill < 0 then fill = 0 end
   local body = head .. string.sub(pad, 1, fill) .. '"}'
   return wrk.format("PUT", prefix .. id, headers, body)
end
