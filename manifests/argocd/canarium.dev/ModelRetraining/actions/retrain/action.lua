-- kubectl canarium retrain NAME: the canarium.dev/retrain-requested-at annotation, the time of
-- the request in UTC to the second ("2026-11-23T12:00:00Z", the CLI's form). A value the
-- operator has not taken yet (status.handledRequest) starts a run now, or once the run or
-- candidate under way is over (or spec.suspend is lifted); cooldown does not hold it back.
-- Argo CD gives actions its safe os (time, date) through require only; "!" formats in UTC.
-- Two requests within the same second are one request, as with the CLI.
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["canarium.dev/retrain-requested-at"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
