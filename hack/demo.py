"""make demo: the local control plane, then whatever of the operator exists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def main() -> int:
    subprocess.run([str(REPO / "hack" / "cluster.sh"), "up"], check=True)
    kubeconfig = sh(str(REPO / "hack" / "cluster.sh"), "kubeconfig")
    kubectl = sh(str(REPO / "hack" / "cluster.sh"), "kubectl")
    print(f"\n$ kubectl get nodes -o wide   (KUBECONFIG={kubeconfig})")
    subprocess.run([kubectl, "--kubeconfig", kubeconfig, "get", "nodes", "-o", "wide"], check=True)
    print(f"\nThe cluster keeps running: export KUBECONFIG={kubeconfig}")
    print("`make cluster-down` stops it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
