"""kstatus, the status library of sigs.k8s.io/cli-utils that Flux (and `kpt live`, and the
`--wait` of tools built on cli-utils) uses to decide whether a resource is Current,
InProgress or Failed: the real library, through the small Go helper in hack/kstatus/ that
hack/kstatus.sh builds (CLI_UTILS_VERSION in hack/versions.env) on first use."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.cluster import REPO

SCRIPT = REPO / "hack" / "kstatus.sh"


def build() -> Path:
    """The helper's path, built if missing or stale; RuntimeError with the build's output."""
    proc = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=1200, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"hack/kstatus.sh failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class KStatus:
    binary: Path

    def compute(self, obj: dict[str, Any]) -> dict[str, Any]:
        """status.Compute(obj): {"status": Current|InProgress|Failed|Terminating,
        "message": ..., "conditions": [...]}."""
        proc = subprocess.run(
            [str(self.binary)],
            input=json.dumps(obj),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kstatus failed: {proc.stderr.strip()}")
        result: dict[str, Any] = json.loads(proc.stdout)
        return result
