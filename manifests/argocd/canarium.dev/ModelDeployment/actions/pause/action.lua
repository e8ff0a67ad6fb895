-- kubectl canarium pause: the canarium.dev/paused annotation "true"; the operator holds the
-- rollout (or the bake) where it is until it is removed (resume).
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["canarium.dev/paused"] = "true"
return obj
