-- kubectl canarium retrain NAME --approve: the canarium.dev/approve-run annotation names the run
-- of the candidate waiting for approval (status.candidate.run); the operator rolls that
-- candidate out as the ModelDeployment's canary. An annotation naming another run is ignored,
-- so an approval never carries over to a later candidate. Refused, as by the CLI, when there is
-- no candidate or it is approved already.
local candidate = nil
if obj.status ~= nil then
  candidate = obj.status.candidate
end
if candidate == nil or candidate.run == nil then
  error("no candidate awaiting approval", 0)
end
if candidate.approved ~= false then
  error("candidate of run " .. candidate.run .. " is approved already", 0)
end
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["canarium.dev/approve-run"] = candidate.run
return obj
