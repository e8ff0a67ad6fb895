"""Helm for the chart tests: built from its Go module by hack/helm.sh (HELM_VERSION in
hack/versions.env) into ~/.cache/canarium, on first use, and run on charts/canarium."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "canarium"

Doc = dict[str, Any]


@functools.cache
def helm_binary() -> str:
    """The path of the pinned helm, built if it is not yet (minutes, once per machine)."""
    proc = subprocess.run(
        [str(REPO / "hack" / "helm.sh")], capture_output=True, text=True, timeout=3600, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"hack/helm.sh failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def template_text(
    *sets: str, release: str = "canarium", namespace: str = "canarium-system", crds: bool = False
) -> str:
    """`helm template` of the chart; `sets` are --set arguments ("key=value")."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    if crds:
        args.append("--include-crds")
    for value in sets:
        args += ["--set", value]
    return helm(*args).stdout


def template(*sets: str, **options: Any) -> list[Doc]:
    return [d for d in yaml.safe_load_all(template_text(*sets, **options)) if d]
