-- kubectl canarium resume: removes the canarium.dev/paused annotation; a paused step or bake
-- starts its time again, in full.
if obj.metadata.annotations ~= nil then
  obj.metadata.annotations["canarium.dev/paused"] = nil
end
return obj
