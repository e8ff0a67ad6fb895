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
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.env"

name=${CANARIUM_CLUSTER_NAME:-canarium}
nodes=${CANARIUM_CLUSTER_NODES:-3}
# One real node per machine (its bridge, ports and pod range are fixed): the default cluster's.
if [ "$name" = canarium ]; then real_node=${CANARIUM_REAL_NODE:-1}; else real_node=${CANARIUM_REAL_NODE:-0}; fi
cache=${CANARIUM_CACHE:-$HOME/.cache/canarium}
export KWOK_WORKDIR="$cache/kwok"
cluster_dir="$KWOK_WORKDIR/clusters/$name"
bin_dir() { "$here/build-control-plane.sh"; }

kubeconfig_path() { echo "$cluster_dir/kubeconfig.yaml"; }

# Pod IPs come from each node's podCIDR: a loopback range (127.64.N.0/24 on node N), so that
# tests can run a real model server process at a simulated pod's own IP with no network setup.
node_manifest() {
  local i=$1
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
  podCIDR: 127.64.$i.0/24
  podCIDRs: [127.64.$i.0/24]
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
  kubeApiserverBinary: $KWOK_WORKDIR/wrappers/kube-apiserver
  kubeControllerManagerBinary: $bin/kube-controller-manager
  kubeSchedulerBinary: $bin/kube-scheduler
  kubectlBinary: $bin/kubectl
  etcdBinary: $bin/etcd
  kwokControllerBinary: $KWOK_WORKDIR/wrappers/kwok
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
  mkdir -p "$KWOK_WORKDIR/wrappers"
  # exec -a keeps the name kwokctl gave the copy (<cluster>/bin/...) in the process list.
  cat >"$KWOK_WORKDIR/wrappers/kube-apiserver" <<SH
#!/bin/bash
exec -a "\$0" "$bin/kube-apiserver" --service-cluster-ip-range=198.19.0.0/16 \\
  --kubelet-client-certificate="$cluster_dir/pki/admin.crt" --kubelet-client-key="$cluster_dir/pki/admin.key" \\
  --kubelet-preferred-address-types=InternalIP "\$@" $advertise
SH
  chmod +x "$KWOK_WORKDIR/wrappers/kube-apiserver"
  # kwokctl's binary runtime makes kwok manage every node; it must leave the real one alone.
  cat >"$KWOK_WORKDIR/wrappers/kwok" <<SH
#!/bin/bash
exec -a "\$0" "$bin/kwok" "\$@" --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake
SH
  chmod +x "$KWOK_WORKDIR/wrappers/kwok"
}

up() {
  local bin
  bin=$(bin_dir)
  local kubectl="$bin/kubectl" kc
  kc=$(kubeconfig_path)
  mkdir -p "$KWOK_WORKDIR"
  write_apiserver_wrapper "$bin"
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
  rm -rf "$cluster_dir"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  kubeconfig) kubeconfig_path ;;
  kubectl) echo "$(bin_dir)/kubectl" ;;
  load) shift; if [ "$real_node" = 1 ]; then "$here/node.sh" load "$@"; fi ;;
  bin) bin_dir ;;
  *) echo "usage: $0 up|down|kubeconfig|kubectl|bin|load ARCHIVE..." >&2; exit 2 ;;
esac
