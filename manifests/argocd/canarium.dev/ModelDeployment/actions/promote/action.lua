-- kubectl canarium promote: the canarium.dev/command annotation "promote@<nanoseconds since the epoch>",
-- which the operator carries out once (a value it has not carried out yet is a new command).
-- Argo CD gives actions its safe os (time, date) through require only.
local os = require("os")
local verb = "promote"
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
local current = obj.metadata.annotations["canarium.dev/command"]
local last = nil
if obj.status ~= nil then
  last = obj.status.lastCommand
end
-- os.time() counts seconds: the nanoseconds are 0, or 1, 2... when that value was already used.
local now = os.time()
local value = nil
local n = 0
repeat
  value = verb .. "@" .. now .. "00000000" .. n
  n = n + 1
until value ~= current and value ~= last
obj.metadata.annotations["canarium.dev/command"] = value
return obj
