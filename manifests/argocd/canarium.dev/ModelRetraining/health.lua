-- Health of a canarium.dev ModelRetraining, from the status its operator writes:
-- status.observedGeneration, status.phase (Idle, Training, AwaitingApproval, Canarying,
-- CoolingDown, Suspended, Stalled) and the conditions Reconciling and Stalled
-- (metav1.Condition, as kstatus reads them). Uses no standard library beyond the base one, so
-- it runs the same from argocd-cm (where Argo CD opens only base, table and a safe os).
--
-- What a ModelRetraining's health says is whether it works, not how its last run went: a run
-- that failed, a candidate rejected by validation, rolled back or discarded leave it Healthy
-- (the retraining goes on: the next drift, schedule or request starts a run). The run's fate is
-- in the message, status.runs, the Ready condition and the events; the ModelDeployment's own
-- health says whether a rollback left it serving well. Argo CD's CronJob check marks a failed
-- last Job Degraded, but a CronJob's Job is all it does; a retraining's Job is one attempt, and
-- a Degraded app for a rejected candidate (the validation doing its work) would cry wolf.
local hs = {}

local function condition(conditions, ctype)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function isTrue(c)
  return c ~= nil and c.status == "True"
end

-- The first of the messages that is there and not empty.
local function first(...)
  for i = 1, select("#", ...) do
    local m = select(i, ...)
    if m ~= nil and m ~= "" then
      return m
    end
  end
  return nil
end

local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the ModelRetraining"
  return hs
end

-- A status older than the spec describes the spec before (a suspend just set or lifted, a new
-- template): wait for the operator.
local generation = tonumber(obj.metadata.generation)
local observed = tonumber(status.observedGeneration)
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local phase = status.phase
local reconciling = condition(status.conditions, "Reconciling")
local stalled = condition(status.conditions, "Stalled")

-- It cannot work until a person acts: its ModelDeployment does not exist, or an older
-- ModelRetraining already retrains it. First, even when suspended: lifting the suspend would
-- not make it work.
if isTrue(stalled) or phase == "Stalled" then
  hs.status = "Degraded"
  hs.message = first(status.message, stalled and stalled.message)
  return hs
end

-- A valid candidate waits for a person's approval (spec.approval: Manual): Argo CD's Suspended,
-- as for a Rollout paused for a person; the approve (or discard) action moves it on. The
-- operator gives its conditions the phase as their reason too.
local awaiting = phase == "AwaitingApproval"
  or (reconciling ~= nil and reconciling.reason == "AwaitingApproval")
if awaiting then
  hs.status = "Suspended"
  hs.message = first(status.message, reconciling and reconciling.message)
  return hs
end

-- A run's Job trains (phase Training) or the candidate rolls out on the ModelDeployment
-- (Canarying): work that data started (drift, a schedule, a request), not the spec being
-- applied, and that may last hours. Healthy, with what goes on in the message, as Argo CD's
-- CronJob check is while its Job runs: Progressing would hold every sync that waits for this
-- app's health for the whole training. (The operator writes Reconciling=False then, so kstatus
-- reads it Current too; the canary's progress shows on the ModelDeployment.) Before the suspend
-- below: spec.suspend stops new runs only, a run under way finishes.
if phase == "Training" or phase == "Canarying" then
  hs.status = "Healthy"
  hs.message = first(status.message, "a run is under way")
  return hs
end

-- An operator that says it is still working on the spec (a newer operator's phases).
if isTrue(reconciling) then
  hs.status = "Progressing"
  hs.message = first(status.message, reconciling.message)
  return hs
end

-- No new runs until a person lifts spec.suspend.
if (obj.spec ~= nil and obj.spec.suspend == true) or phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = first(status.message, "suspended: no new runs (spec.suspend)")
  return hs
end

-- At rest: Idle (the last run, whatever became of it, in the message) or CoolingDown (drifted,
-- the next run waits for the cooldown). A phase this check does not know (a newer operator's)
-- is at rest too when the operator's conditions say so: Reconciling and Stalled both written
-- and not True, which is what they are for (kstatus reads only them). Without them it is not
-- Healthy until the operator says so.
local atRest = phase == "Idle" or phase == "CoolingDown" or (reconciling ~= nil and stalled ~= nil)
if atRest then
  hs.status = "Healthy"
  hs.message = status.message
  return hs
end

hs.status = "Progressing"
hs.message = first(status.message, "Waiting for the ModelRetraining to settle")
return hs
