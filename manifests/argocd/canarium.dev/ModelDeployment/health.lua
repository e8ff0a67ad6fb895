-- Health of a canarium.dev ModelDeployment, from the status its operator writes: status.phase
-- (Pending, Progressing, Paused, Healthy, Degraded), status.observedGeneration and the
-- conditions Stalled and Degraded (metav1.Condition). Uses no standard library beyond the base
-- one, so it runs the same from argocd-cm (where Argo CD opens only base, table and a safe os).
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

local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the ModelDeployment"
  return hs
end

-- A status older than the spec describes the spec before: wait for the operator.
local generation = tonumber(obj.metadata.generation)
local observed = tonumber(status.observedGeneration)
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local stalled = condition(status.conditions, "Stalled")
local degraded = condition(status.conditions, "Degraded")
-- Rolled back, aborted, a model that cannot load, a progress deadline, an invalid policy: it
-- stays there until a person acts (revert or fix the spec, retry).
if status.phase == "Degraded" or isTrue(stalled) or isTrue(degraded) then
  hs.status = "Degraded"
  hs.message = status.message
  if hs.message == nil and isTrue(stalled) then
    hs.message = stalled.message
  end
  return hs
end

-- Paused for a person: a pause step without duration, the canarium.dev/paused annotation, or
-- too many inconclusive intervals; a promote or resume moves it on.
if status.phase == "Paused" then
  hs.status = "Suspended"
  hs.message = status.pauseReason
  if hs.message == nil then
    hs.message = status.message
  end
  return hs
end

if status.phase == "Healthy" then
  hs.status = "Healthy"
  hs.message = status.message
  return hs
end

-- Progressing (a canary's steps, a replacement, a bake), Pending, or a phase this check does
-- not know: not Healthy until the operator says so.
hs.status = "Progressing"
hs.message = status.message
if hs.message == nil then
  hs.message = "Waiting for the ModelDeployment to become ready"
end
return hs
