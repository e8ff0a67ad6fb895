// The Lua runner of the Argo CD health check and actions in manifests/argocd (hack/argocd-lua.sh
// builds it). Versions as Argo CD's go.mod pins them; GOPHER_LUA_VERSION in hack/versions.env.
module canarium.dev/hack/argocd-lua

go 1.24

require (
	github.com/yuin/gopher-lua v1.1.2
	layeh.com/gopher-json v0.0.0-20190114024228-97fed8db8427
)
