#!/usr/bin/env bash
# The local Kubernetes cluster: real etcd, kube-apiserver, kube-controller-manager and
# kube-scheduler; a real node (containerd, kubelet, kube-proxy: hack/node.sh) that runs real
# containers; and kwok nodes that simulate pods for scale and API-only tests (tainted, so only
# pods that tolerate `kwok.x-k8s.io/node=fake:NoSchedule` land there).
# Everything binds to 127.0.0.1 (pods reach the API server through the `kubernetes` Service:
# hack/node.sh relays the advertised 198.18.0.1 to it).
#   hack/cluster.sh up          build (first run only) and start the cluster, create kwok nodes
#   hack/cluster.sh down        stop it and remove its state; leaves no process behind
#   hack/cluster.sh kubeconfig  print the kubeconfig path
#   hack/cluster.sh kubectl     print the path of the matching kubectl
#   hack/cluster.sh bin         print the directory of the built binaries (builds if needed)
#   hack/cluster.sh load TAR... import image archives into the real node (`make images` does)
#   hack/cluster.sh components  list the control-plane components `restart` knows
#   hack/cluster.sh restart COMPONENT [DOWN_SECONDS]
#                               a fault: stop one component of the running cluster (SIGTERM,
#                               as kwokctl stops it), keep it down DOWN_SECONDS (default 0), start
#                               it again as kwokctl started it, wait until /readyz answers;
#                               a component that ended meanwhile (kube-controller-manager and
#                               kube-scheduler do when they cannot renew their leader Lease) is
#                               started again, as the kubelet would
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.env"

name=${CANARIUM_CLUSTER_NAME:-canarium}
nodes=${CANARIUM_CLUSTER_NODES:-3}
# CANARIUM_CONTROL_PLANE_PROFILE=bench (make bench-operator's cluster): kube-controller-manager
# with more concurrent syncs (write_controller_manager_wrapper), so that a benchmark measures the
# operator, not the local control plane.
profile=${CANARIUM_CONTROL_PLANE_PROFILE:-}
# One real node per machine (its bridge, ports and pod range are fixed): the default cluster's.
if [ "$name" = canarium ]; then real_node=${CANARIUM_REAL_NODE:-1}; else real_node=${CANARIUM_REAL_NODE:-0}; fi
cache=${CANARIUM_CACHE:-$HOME/.cache/canarium}
export KWOK_WORKDIR="$cache/kwok"
cluster_dir="$KWOK_WORKDIR/clusters/$name"
bin_dir() { "$here/build-control-plane.sh"; }
# The cluster's exec wrappers (below): one folder per cluster, since each names its cluster's
# files and `restart` runs them again long after another cluster was made or deleted.
wrappers="$KWOK_WORKDIR/wrappers/$name"

kubeconfig_path() { echo "$cluster_dir/kubeconfig.yaml"; }

# Pod IPs come from each node's podCIDR: a loopback range (127.64.N.0/24 on node N), so that
# tests can run a real model server process at a simulated pod's own IP with no network setup.
# The bench profile's pods get addresses an EndpointSlice accepts (the shared range 100.64.0.0/10,
# a /16 per node, nothing listens there): with loopback ones the endpoint controllers fail and
# retry every Service over and over, and the API server is busy with that, not with what is
# measured.
node_manifest() {
  local i=$1 cidr=127.64.$1.0/24
  [ "$profile" != bench ] || cidr=100.$((64 + $1)).0.0/16
  cat <<YAML
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
spec:
$( [ "$real_node" = 1 ] && printf '  taints: [{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}]\n' )
  podCIDR: $cidr
  podCIDRs: [$cidr]
status:
  allocatable: {cpu: "1000", memory: 4Ti, pods: "5000"}
  capacity: {cpu: "1000", memory: 4Ti, pods: "5000"}
  nodeInfo: {architecture: amd64, operatingSystem: linux, kubeletVersion: fake, kubeProxyVersion: fake}
  phase: Running
YAML
}

write_config() {
  local bin=$1
  cat <<YAML
kind: KwokctlConfiguration
apiVersion: config.kwok.x-k8s.io/v1alpha1
options:
  runtime: binary
  kubeVersion: $KUBERNETES_VERSION
  etcdVersion: ${ETCD_VERSION#v}
  kwokVersion: $KWOK_VERSION
  bindAddress: 127.0.0.1
  # In-cluster clients verify the API server as the \`kubernetes\` Service's ClusterIP.
  kubeApiserverCertSANs: [198.19.0.1, 198.18.0.1]
  kubeApiserverBinary: $wrappers/kube-apiserver
  kubeControllerManagerBinary: $( [ "$profile" = bench ] && echo "$wrappers/kube-controller-manager-bench" || echo "$bin/kube-controller-manager" )
  kubeSchedulerBinary: $bin/kube-scheduler
  kubectlBinary: $bin/kubectl
  etcdBinary: $bin/etcd
  kwokControllerBinary: $wrappers/kwok
  kubeAuthorization: true
  kubeAdmission: true
  disableQPSLimits: true
YAML
}

# kwokctl's binary runtime leaves kube-apiserver on a /24 Service range and ignores
# componentsPatches, so a wrapper adds room for thousands of Services (three per
# ModelDeployment) in 198.19.0.0/16 (RFC 2544: nothing real), and the client certificate it
# shows a kubelet (`kubectl logs`/`exec` on the real node). exec keeps the PID, so kwokctl stops
# it as usual.
write_apiserver_wrapper() {
  local bin=$1 advertise=""
  # The address the `kubernetes` Service sends pods to (the real node relays it to 127.0.0.1).
  [ "$real_node" != 1 ] || advertise=--advertise-address=198.18.0.1
  mkdir -p "$wrappers"
  # exec -a keeps the name kwokctl gave the copy (<cluster>/bin/...) in the process list.
  cat >"$wrappers/kube-apiserver" <<SH
#!/bin/bash
exec -a "\$0" "$bin/kube-apiserver" --service-cluster-ip-range=198.19.0.0/16 \\
  --kubelet-client-certificate="$cluster_dir/pki/admin.crt" --kubelet-client-key="$cluster_dir/pki/admin.key" \\
  --kubelet-preferred-address-types=InternalIP "\$@" $advertise
SH
  chmod +x "$wrappers/kube-apiserver"
  # kwokctl's binary runtime makes kwok manage every node; it must leave the real one alone.
  cat >"$wrappers/kwok" <<SH
#!/bin/bash
exec -a "\$0" "$bin/kwok" "\$@" --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake
SH
  chmod +x "$wrappers/kwok"
  write_controller_manager_wrapper "$bin"
}

# The bench profile's kube-controller-manager: 50 concurrent Deployment, ReplicaSet, EndpointSlice
# and garbage-collector syncs (defaults 5, 5, 5, 20), so thousands of Deployments at once are not
# queued behind a handful of workers. Client QPS limits are already off (disableQPSLimits gives
# kube-controller-manager and kube-scheduler 5000 QPS, burst 10000).
write_controller_manager_wrapper() {
  local bin=$1
  cat >"$wrappers/kube-controller-manager-bench" <<SH
#!/bin/bash
exec -a "\$0" "$bin/kube-controller-manager" "\$@" --concurrent-deployment-syncs=50 \\
  --concurrent-replicaset-syncs=50 --concurrent-service-endpoint-syncs=50 --concurrent-gc-syncs=50
SH
  chmod +x "$wrappers/kube-controller-manager-bench"
}

up() {
  local bin
  bin=$(bin_dir)
  local kubectl="$bin/kubectl" kc
  kc=$(kubeconfig_path)
  mkdir -p "$KWOK_WORKDIR"
  local conf="$KWOK_WORKDIR/$name-config.yaml" wanted
  wanted=$(write_config "$bin")
  if [ -f "$kc" ] && [ "$(cat "$conf" 2>/dev/null)" = "$wanted" ] &&
    "$kubectl" --kubeconfig "$kc" --request-timeout=5s get --raw /readyz >/dev/null 2>&1 &&
    { [ "$real_node" != 1 ] || "$kubectl" --kubeconfig "$kc" --request-timeout=5s wait --for=condition=Ready node/canarium-worker --timeout=5s >/dev/null 2>&1; }; then
    echo "cluster $name already running (kubeconfig: $kc)" >&2
    return 0
  fi
  # Not running, or started with another configuration: start afresh.
  [ -d "$cluster_dir" ] && down
  # A node whose processes were killed (not stopped) leaves mounts, netns and cgroups behind.
  [ "$real_node" != 1 ] || "$here/node.sh" down
  write_apiserver_wrapper "$bin"
  echo "$wanted" >"$conf"
  local start=$SECONDS
  [ "$real_node" != 1 ] || "$here/node.sh" bridge
  local log="$KWOK_WORKDIR/$name-create.log"
  if ! "$bin/kwokctl" create cluster --name "$name" --config "$conf" --wait 2m >"$log" 2>&1; then
    tail -30 "$log" >&2
    echo "kwokctl create cluster failed; full log: $log" >&2
    return 1
  fi
  for i in $(seq 1 "$nodes"); do node_manifest "$i"; echo ---; done | "$kubectl" --kubeconfig "$kc" apply -f - >&2
  "$kubectl" --kubeconfig "$kc" wait --for=condition=Ready node --all --timeout=60s >&2
  [ "$real_node" != 1 ] || "$here/node.sh" up "$kc" "$bin"
  echo "cluster $name up in $((SECONDS - start))s; kubeconfig: $kc" >&2
}

down() {
  local bin
  bin=$(bin_dir)
  [ "$real_node" != 1 ] || "$here/node.sh" down
  if [ -d "$cluster_dir" ]; then
    "$bin/kwokctl" delete cluster --name "$name" >"$KWOK_WORKDIR/$name-delete.log" 2>&1 || true
  fi
  # kwokctl stops what it started (from copies of the binaries under the cluster's folder);
  # make sure of it: nothing of this cluster may survive a down.
  local left
  left=$(pgrep -f "$cluster_dir/" || true)
  if [ -n "$left" ]; then
    echo "stopping leftover processes: $left" >&2
    kill $left 2>/dev/null || true
    sleep 1
    left=$(pgrep -f "$cluster_dir/" || true)
    [ -z "$left" ] || kill -9 $left 2>/dev/null || true
  fi
  rm -rf "$cluster_dir" "$wrappers"
}

# kwokctl's binary runtime (v0.8) starts each component of kwok.yaml's `components` (binary,
# args, envs) in its workDir, in a session of its own, its PID in pids/NAME.pid and its output
# in logs/NAME.log (utils/exec.ForkExec); kwokctl has no command for one component, so `restart`
# does the same with the same binary, arguments, folder and environment (read from the running
# process), and updates the PID file (so `kwokctl delete` and `down` stop the new process).
components() {
  [ -f "$cluster_dir/kwok.yaml" ] || { echo "cluster $name is not running" >&2; return 1; }
  component_field name
}

# component_field FIELD [NAME]: one field (name, binary, workDir; args: NUL-separated) of the
# components in kwok.yaml (sigs.k8s.io/yaml output: sorted keys, two-space lists), or of NAME's.
component_field() {
  awk -v field="$1" -v want="${2:-}" -v q="'" '
    function unquote(v) {
      if (substr(v, 1, 1) == q && substr(v, length(v), 1) == q) {
        v = substr(v, 2, length(v) - 2); gsub(q q, q, v)
      } else if (v ~ /^".*"$/) { v = substr(v, 2, length(v) - 2) }
      return v
    }
    function flush() {
      if (entry && (want == "" || nm == want)) {
        if (field == "name") print nm
        else if (field == "binary") print bin
        else if (field == "workDir") print wd
        else if (field == "args") printf "%s", args
      }
      entry = 0; nm = bin = wd = args = ""; key = ""
    }
    /^components:/ { inside = 1; next }
    inside && /^[^ -]/ { flush(); inside = 0 }
    !inside { next }
    /^- / { flush(); entry = 1; sub(/^- /, "  ") }
    /^  [A-Za-z]+:/ {
      key = $1; sub(/:$/, "", key); v = $0; sub(/^  [A-Za-z]+: ?/, "", v); v = unquote(v)
      if (key == "name") nm = v; else if (key == "binary") bin = v; else if (key == "workDir") wd = v
      next
    }
    /^  - / && key == "args" { v = $0; sub(/^  - /, "", v); args = args unquote(v) "\0"; next }
    END { flush() }
  ' "$cluster_dir/kwok.yaml"
}

wait_ready() {
  local kubectl=$1 timeout=$2 start=$SECONDS
  until "$kubectl" --kubeconfig "$(kubeconfig_path)" --request-timeout=2s get --raw /readyz >/dev/null 2>&1; do
    if [ $((SECONDS - start)) -ge "$timeout" ]; then
      echo "the API server is not ready ${timeout}s after the restart" >&2
      return 1
    fi
    sleep 0.2
  done
}

# start_component NAME ENVIRON_FILE: as kwokctl starts it, with the environment of ENVIRON_FILE
# (a copy of /proc/PID/environ); the log is appended to (kwokctl truncates it at a start: the
# lines before the fault stay).
start_component() {
  local component=$1 envfile=$2 binary workdir log="$cluster_dir/logs/$1.log" argv=() environ=()
  binary=$(component_field binary "$component")
  workdir=$(component_field workDir "$component")
  mapfile -d '' argv < <(component_field args "$component")
  mapfile -d '' environ <"$envfile"
  [ "${#environ[@]}" -gt 0 ] || environ=("PATH=$PATH" "HOME=$HOME")
  echo "--- hack/cluster.sh: $component started again ($(date -u +%FT%TZ)) ---" >>"$log"
  (cd "${workdir:-$cluster_dir}" && exec setsid env -i "${environ[@]}" "$binary" "${argv[@]}" </dev/null >>"$log" 2>&1) &
  echo $! >"$cluster_dir/pids/$component.pid"
  disown
}

alive() { local pid; pid=$(cat "$cluster_dir/pids/$1.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null; }

restart() {
  local component=${1:?usage: $0 restart COMPONENT [DOWN_SECONDS]} down=${2:-0}
  local all
  all=$(components 2>/dev/null || true)
  if ! grep -qx -- "$component" <<<"$all"; then
    echo "no component $component in cluster $name (components: $(tr '\n' ' ' <<<"$all"))" >&2
    return 2
  fi
  local envs c pid
  envs=$(mktemp -d)
  trap 'rm -rf "$envs"' RETURN
  for c in $all; do
    if alive "$c"; then cat "/proc/$(cat "$cluster_dir/pids/$c.pid")/environ" >"$envs/$c"; else : >"$envs/$c"; fi
  done
  if alive "$component"; then
    pid=$(cat "$cluster_dir/pids/$component.pid")
    kill -TERM "$pid"
    local i
    for i in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "$component ($pid) still running 30s after SIGTERM: SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
  else
    echo "$component was not running" >&2
  fi
  local stopped=$SECONDS
  sleep "$down"
  start_component "$component" "$envs/$component"
  if ! wait_ready "$(bin_dir)/kubectl" 120; then
    alive "$component" || echo "$component ended after its start; the end of its log:" >&2
    tail -5 "$cluster_dir/logs/$component.log" | cut -c1-400 >&2
    return 1
  fi
  echo "$component restarted (pid $(cat "$cluster_dir/pids/$component.pid")): ready $((SECONDS - stopped))s after it stopped" >&2
  # kube-controller-manager and kube-scheduler end when they cannot renew their leader Lease
  # (the API server away past their renew deadline): start them again, as the kubelet restarts
  # a static pod. One may end a moment after the API server is back (its deadline had passed):
  # watch them for a few seconds more.
  for i in 1 2 3 4 5; do
    for c in $all; do
      if ! alive "$c"; then
        echo "$c ended meanwhile ($(grep -v '^---' "$cluster_dir/logs/$c.log" | tail -1 | cut -c1-200)); starting it again" >&2
        start_component "$c" "$envs/$c"
      fi
    done
    sleep 1
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  kubeconfig) kubeconfig_path ;;
  kubectl) echo "$(bin_dir)/kubectl" ;;
  load) shift; if [ "$real_node" = 1 ]; then "$here/node.sh" load "$@"; fi ;;
  bin) bin_dir ;;
  components) components ;;
  restart) shift; restart "$@" ;;
  *) echo "usage: $0 up|down|kubeconfig|kubectl|bin|components|load ARCHIVE...|restart COMPONENT [DOWN_SECONDS]" >&2; exit 2 ;;
esac
