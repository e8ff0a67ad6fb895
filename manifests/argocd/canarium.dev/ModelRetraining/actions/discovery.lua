-- The actions on a canarium.dev ModelRetraining, each `kubectl canarium retrain NAME` with the
-- flag of the same name: they set the annotations the CLI sets (canarium.dev/retrain-requested-at,
-- canarium.dev/approve-run, canarium.dev/discard-run), which the operator carries out; the spec
-- is never touched. Disabled where the operator would have nothing to do.
local actions = {}
local status = obj.status or {}
local annotations = obj.metadata.annotations or {}
local candidate = status.candidate

-- retrain: a request the operator has not taken yet (the annotation differs from the request
-- that last started a run) still stands, and starts a run as soon as none is under way; a
-- second one would start nothing more. Offered while suspended, as the CLI allows: the request
-- waits for spec.suspend to be lifted.
local request = annotations["canarium.dev/retrain-requested-at"]
local pending = request ~= nil and request ~= "" and request ~= status.handledRequest
actions["retrain"] = {["disabled"] = pending}

-- approve: a candidate that waits for a person (approved false; the operator writes true or
-- false), not yet approved by the annotation. discard: any candidate (awaiting approval,
-- canarying or promoted: the ModelDeployment goes back to what served before it), not yet
-- discarded. Both name the candidate's run, as the CLI does.
local hasCandidate = candidate ~= nil and candidate.run ~= nil
local awaiting = hasCandidate and candidate.approved == false
actions["approve"] = {
  ["disabled"] = not awaiting or annotations["canarium.dev/approve-run"] == candidate.run
}
actions["discard"] = {
  ["disabled"] = not hasCandidate or annotations["canarium.dev/discard-run"] == candidate.run
}
return actions
