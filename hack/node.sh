#!/usr/bin/env bash
# A real Kubernetes node beside the kwok nodes: containerd + runc, the CNI bridge, kubelet and
# kube-proxy (nftables mode), on this machine. Called by hack/cluster.sh; not meant to be run
# alone.
#   hack/node.sh up KUBECONFIG BIN     start it and wait until the Node is Ready
#   hack/node.sh down BIN              stop it; leaves no process, mount, netns, veth, bridge,
#                                      nftables table, cgroup or containerd state behind
#   hack/node.sh load ARCHIVE...       import image archives into the node's containerd
#   hack/node.sh ctr ARGS...           ctr against the node's containerd (namespace k8s.io)
#
# Network: everything stays on this machine. Pods live in network namespaces on the bridge
# $BRIDGE (198.18.0.1/24; RFC 2544 benchmark range, so no address can mean anything real) and
# get routes for 198.18.0.0/15 only: no default route, no NAT towards the outside. The Service
# range is 198.19.0.0/16, so the API server's `kubernetes` Service is 198.19.0.1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.env"

cache=${CANARIUM_CACHE:-$HOME/.cache/canarium}
state="$cache/node"
NODE_NAME=${CANARIUM_NODE_NAME:-canarium-worker}
BRIDGE=canarium0
NODE_IP=198.18.0.1
POD_CIDR=198.18.0.0/24
CLUSTER_NET=198.18.0.0/15
PAUSE_IMAGE=registry.k8s.io/pause:3.10.1
sock="$state/run/containerd.sock"

log() { echo "[node] $*" >&2; }

need_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  command -v nft >/dev/null || missing+=(nftables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v socat >/dev/null || missing+=(socat)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v mount >/dev/null || missing+=(mount)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (Debian)"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

# The bridge exists before the control plane starts: the API server binds its address, so
# that pods reach it through the `kubernetes` Service.
bridge_up() {
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  case "$(ip -o addr show dev "$BRIDGE")" in
    *"inet $NODE_IP/"*) ;;
    *) ip addr add "$NODE_IP/24" dev "$BRIDGE" ;;
  esac
  ip link set "$BRIDGE" up
  # The whole cluster range goes to the bridge: a ClusterIP that kube-proxy has not (or no
  # longer) programmed must never follow the default route out of this machine.
  ip route replace "$CLUSTER_NET" dev "$BRIDGE" src "$NODE_IP"
  # Pod -> Service -> pod on the same bridge: bridged packets must meet kube-proxy's rules.
  # The previous values are restored by `down`.
  mkdir -p "$state"
  local f
  for f in /proc/sys/net/bridge/bridge-nf-call-iptables /proc/sys/net/ipv4/ip_forward; do
    local saved="$state/sysctl.$(basename "$f")"
    [ -f "$saved" ] || cat "$f" >"$saved"
    echo 1 >"$f"
  done
}

write_configs() {
  local kubeconfig=$1
  mkdir -p "$state"/{run,root,cni/net.d,kubelet,pods-log,etc}
  cat >"$state/etc/containerd.toml" <<TOML
version = 2
root = "$state/root/containerd"
state = "$state/run/containerd"
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # This VM withholds CAP_SYS_RESOURCE, so the pause container's oom_score_adj of -998 would be
  # refused; keep scores at or above containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni/net.d"
TOML
  # No default route in the pods: only the cluster's own ranges are reachable.
  cat >"$state/cni/net.d/10-canarium.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "canarium",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$state/run/cni-ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "$CLUSTER_NET"}]
      }
    },
    {"type": "loopback"}
  ]
}
JSON
  local ca
  ca=$(python3 -c 'import sys,yaml; c=yaml.safe_load(open(sys.argv[1])); print(c["clusters"][0]["cluster"].get("certificate-authority",""))' "$kubeconfig" 2>/dev/null || true)
  cat >"$state/etc/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host has cgroup v1 controllers only; kubelet >= 1.35 refuses them unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
# Everything of this node under one cgroup, removed when the node goes down.
cgroupRoot: /canarium
containerRuntimeEndpoint: unix://$sock
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$ca"}
authorization: {mode: Webhook}
clusterDomain: cluster.local
# No DNS server in this cluster, and no resolver outside it for pods to reach.
resolvConf: ""
podLogsDir: $state/pods-log
failSwapOn: false
# Images are made on this machine and cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
maxPods: 110
serializeImagePulls: false
registerNode: true
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
fileCheckFrequency: 10s
shutdownGracePeriod: 0s
YAML
  cat >"$state/etc/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: "$kubeconfig"}
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
conntrack: {maxPerCore: 0}
YAML
}

# The node's cgroup (kubelet's cgroupRoot) in every v1 hierarchy; cpuset needs its cpus and
# mems set before tasks can join.
cgroup_root() {
  local ctl
  for ctl in /sys/fs/cgroup/*/; do
    [ -f "$ctl/cgroup.procs" ] || continue
    mkdir -p "$ctl/canarium"
  done
  if [ -f /sys/fs/cgroup/cpuset/cpuset.cpus ]; then
    cat /sys/fs/cgroup/cpuset/cpuset.cpus >/sys/fs/cgroup/cpuset/canarium/cpuset.cpus
    cat /sys/fs/cgroup/cpuset/cpuset.mems >/sys/fs/cgroup/cpuset/canarium/cpuset.mems
  fi
}

# start NAME CMD...: a daemon in its own session, its PID in $state/NAME.pid, its log beside.
start() {
  local name=$1; shift
  # setsid forks when the caller made it a process group leader (a shell with job control),
  # so the daemon writes its own PID before it execs.
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$state/$name.pid" "$@" >"$state/$name.log" 2>&1 </dev/null &
  local i
  for i in $(seq 1 40); do [ -s "$state/$name.pid" ] && return 0; sleep 0.05; done
}

wait_for() {
  local what=$1 timeout=$2; shift 2
  local i
  for i in $(seq 1 $((timeout * 4))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  log "timed out after ${timeout}s waiting for $what"
  return 1
}

up() {
  local kubeconfig=$1 bin=$2 start_s=$SECONDS
  need_packages
  bridge_up
  write_configs "$kubeconfig"
  # The API server listens on 127.0.0.1 and advertises $NODE_IP (the `kubernetes` Service's
  # endpoint): relay that address to it, TLS untouched.
  local port
  port=$(sed -n 's#^ *server: https://127.0.0.1:\([0-9]*\)$#\1#p' "$kubeconfig")
  start apiserver-relay socat "TCP-LISTEN:$port,bind=$NODE_IP,fork,reuseaddr" "TCP:127.0.0.1:$port"
  start containerd containerd --config "$state/etc/containerd.toml"
  wait_for "containerd" 30 ctr --address "$sock" version || { tail -20 "$state/containerd.log" >&2; return 1; }
  # Images built by `make images` are loaded whenever the node starts.
  local archive
  for archive in "$cache"/images/*.tar; do
    case $(basename "$archive") in base-*) continue ;; esac  # a root filesystem, not an image
    [ -f "$archive" ] && load "$archive"
  done
  cgroup_root
  start kubelet "$bin/kubelet" --config "$state/etc/kubelet.yaml" --kubeconfig "$kubeconfig" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --root-dir "$state/kubelet" \
    --node-labels "type=real,canarium.dev/node=real"
  start kube-proxy "$bin/kube-proxy" --config "$state/etc/kube-proxy.yaml"
  if ! wait_for "node $NODE_NAME Ready" 120 \
    "$bin/kubectl" --kubeconfig "$kubeconfig" wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s; then
    tail -30 "$state/kubelet.log" >&2
    return 1
  fi
  log "node $NODE_NAME Ready in $((SECONDS - start_s))s"
}

load() {
  local archive
  if ! ctr --address "$sock" --timeout 3s version >/dev/null 2>&1; then
    log "node not running: images are loaded when it starts"
    return 0
  fi
  for archive in "$@"; do
    log "loading $(basename "$archive")"
    ctr --address "$sock" -n k8s.io images import "$archive" >/dev/null
  done
}

stop_pid() {
  local name=$1 pidfile="$state/$1.pid" pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

down() {
  local bin=${1:-}
  stop_pid kubelet
  stop_pid kube-proxy
  stop_pid apiserver-relay
  # Every container of the node: stop its tasks through containerd first.
  if [ -S "$sock" ]; then
    # Stop the tasks first so that runc tears down their cgroups and namespaces.
    local ns=k8s.io c
    for c in $(ctr --address "$sock" -n "$ns" tasks ls -q 2>/dev/null || true); do
      ctr --address "$sock" -n "$ns" tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
    done
  fi
  stop_pid containerd
  # Whatever a lost PID file would hide: every process started with this node's files, or
  # relaying its address.
  local strays
  strays=$( (pgrep -f "$state/"; pgrep -f "bind=$NODE_IP,") 2>/dev/null | sort -u || true)
  [ -z "$strays" ] || kill -9 $strays 2>/dev/null || true
  # Container processes orphaned by a killed shim (their cgroups live under /canarium).
  local procs
  procs=$(cat /sys/fs/cgroup/pids/canarium/cgroup.procs /sys/fs/cgroup/pids/canarium/*/cgroup.procs \
    /sys/fs/cgroup/pids/canarium/*/*/cgroup.procs /sys/fs/cgroup/pids/canarium/*/*/*/cgroup.procs 2>/dev/null | sort -u || true)
  [ -z "$procs" ] || kill -9 $procs 2>/dev/null || true
  sleep 0.2
  # kube-proxy's nftables tables.
  nft delete table ip kube-proxy 2>/dev/null || true
  nft delete table ip6 kube-proxy 2>/dev/null || true
  # kubelet's own iptables chains (KUBE-FIREWALL and the canaries it watches for flushes).
  local ipt t
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for t in INPUT OUTPUT; do
      while "$ipt" -w -t filter -D "$t" -j KUBE-FIREWALL 2>/dev/null; do :; done
    done
    for t in filter nat mangle; do
      "$ipt" -w -t "$t" -F KUBE-FIREWALL 2>/dev/null || true
      "$ipt" -w -t "$t" -X KUBE-FIREWALL 2>/dev/null || true
      "$ipt" -w -t "$t" -X KUBE-KUBELET-CANARY 2>/dev/null || true
    done
    "$ipt" -w -t mangle -X KUBE-IPTABLES-HINT 2>/dev/null || true
  done
  # Mounts under the node's state (overlay rootfs, shm, volumes, netns bind mounts), deepest first.
  local m
  for m in $(awk -v s="$state/" 'index($2, s) == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  # Network namespaces the CNI made (containerd names them cni-<uuid>), and their veths.
  local n
  for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cni-' || true); do
    ip netns delete "$n" 2>/dev/null || true
  done
  for m in $(awk '$2 ~ "^/(var/)?run/netns/cni-" {print $2}' /proc/self/mounts); do
    umount -l "$m" 2>/dev/null || true; rm -f "$m"
  done
  local v
  for v in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link delete "$v" 2>/dev/null || true
  done
  ip link delete "$BRIDGE" 2>/dev/null || true
  # cgroups: remove leaves first.
  local ctl
  for ctl in /sys/fs/cgroup/*/; do
    [ -d "$ctl/canarium" ] || continue
    find "$ctl/canarium" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  # The sysctls bridge_up changed.
  local f saved
  for f in /proc/sys/net/bridge/bridge-nf-call-iptables /proc/sys/net/ipv4/ip_forward; do
    saved="$state/sysctl.$(basename "$f")"
    [ -f "$saved" ] && cat "$saved" >"$f" 2>/dev/null || true
  done
  rm -rf "$state"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) shift; down "$@" ;;
  bridge) bridge_up ;;
  load) shift; load "$@" ;;
  ctr) shift; exec ctr --address "$sock" -n k8s.io "$@" ;;
  *) echo "usage: $0 up KUBECONFIG BIN | down | bridge | load ARCHIVE... | ctr ARGS..." >&2; exit 2 ;;
esac
