-- kubectl canarium retrain NAME --discard: the canarium.dev/discard-run annotation names the run
-- of the current candidate (status.candidate.run); the operator withdraws it and the
-- ModelDeployment goes back to what served before it (the promoted candidate it followed, else
-- its spec.model). An annotation naming another run is ignored. Refused, as by the CLI, when
-- there is no candidate.
local candidate = nil
if obj.status ~= nil then
  candidate = obj.status.candidate
end
if candidate == nil or candidate.run == nil then
  error("no candidate to discard", 0)
end
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["canarium.dev/discard-run"] = candidate.run
return obj
