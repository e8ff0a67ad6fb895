-- The actions on a canarium.dev ModelDeployment, each the `kubectl canarium` verb of the same
-- name: they set the annotations the CLI sets (canarium.dev/command, canarium.dev/paused), which
-- the operator carries out; the spec is never touched. Disabled where the operator would have
-- nothing to do.
local actions = {}
local status = obj.status or {}
local annotations = obj.metadata.annotations or {}
local pausedValue = annotations["canarium.dev/paused"]
-- The operator reads the annotation case-insensitively ("true"); no string library here.
local paused = pausedValue == "true" or pausedValue == "True" or pausedValue == "TRUE"

-- status.aborted: a rollout ended badly (rolled back, aborted) and holds until retried.
local rolledBack = status.aborted ~= nil
local rollingOut = status.canary ~= nil and not rolledBack
-- A promoted version under analysis, with the previous one kept to go back to.
local baking = status.bakeUntil ~= nil and status.previous ~= nil

-- A promote while paused is used up without effect: resume first.
actions["promote"] = {["disabled"] = not rollingOut or paused}
actions["promote-full"] = {["disabled"] = not rollingOut or paused}
actions["abort"] = {["disabled"] = not (rollingOut or baking)}
actions["retry"] = {["disabled"] = not (rolledBack and status.phase == "Degraded")}
actions["pause"] = {["disabled"] = paused}
actions["resume"] = {["disabled"] = not paused}
return actions
