"""Monitoring of a stable model for drift (spec.monitoring), on real serving pods with live
traffic through the Service: too little traffic and traffic like the training data never raise
Drifted, over many windows; inputs shifted away from it do, naming the feature."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.cluster import Cluster, wait_until
from tests.e2e.incluster import InstalledOperator
from tests.e2e.load import LoadGenerator
from tests.e2e.models import FEATURES, E2EModels, in_configmap, model_deployment
from tests.e2e.test_cli import kubectl_canarium

pytestmark = pytest.mark.usefixtures("restricted")

NAME = "iris"
INTERVAL = 8  # seconds: a window


def _status(cluster: Cluster, namespace: str) -> dict[str, Any]:
    status: dict[str, Any] = cluster.get_json("mdep", NAME, "-n", namespace).get("status") or {}
    return status


def _drifted(status: dict[str, Any]) -> str | None:
    return next((c["status"] for c in status.get("conditions", []) if c["type"] == "Drifted"), None)


def _watch(
    cluster: Cluster, namespace: str, windows: int, seen: list[dict[str, Any]]
) -> dict[str, Any]:
    """Poll the status until `windows` more windows are judged, keeping every status seen."""
    start = (_status(cluster, namespace).get("monitoring") or {}).get("windows", 0)

    def judged() -> dict[str, Any] | None:
        status = _status(cluster, namespace)
        seen.append(status)
        mon = status.get("monitoring") or {}
        return status if mon.get("windows", 0) >= start + windows else None

    return wait_until(
        judged, timeout=INTERVAL * (windows + 3) + 30, interval=1.0, what=f"{windows} windows"
    )


def test_drift_of_live_inputs_raises_drifted_and_only_then(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
) -> None:
    model = in_configmap(cluster, namespace, models.good_v1)
    monitoring = {
        "interval": f"{INTERVAL}s",
        "dataDrift": {"maxPSI": 0.1},
        "predictionDrift": {"maxPSI": 0.1},
        "windows": 2,
    }
    cluster.apply(model_deployment(NAME, model, replicas=2, monitoring=monitoring), namespace)
    cluster.kubectl(
        "wait", "--for=condition=Ready", f"mdep/{NAME}", "-n", namespace, "--timeout=120s",
        timeout=130,
    )  # fmt: skip
    seen: list[dict[str, Any]] = []

    # 1. Too little traffic (about 10 rows a window over 10 bins a feature): inconclusive.
    trickle = load(NAME, models.x, rate=1.0, duration=600, seed=1).start()
    status = _watch(cluster, namespace, 3, seen)
    trickle.stop()
    assert status["monitoring"]["lastVerdict"] == "Inconclusive", status["monitoring"]
    assert "too little to judge" in status["monitoring"]["message"]

    # 2. Traffic like the training data, for many windows: judged, never drifted.
    same = load(NAME, models.x, rate=60, max_rows=4, duration=600, seed=2).start()
    status = _watch(cluster, namespace, 8, seen)
    same.stop()
    verdicts = [s["monitoring"].get("lastVerdict") for s in seen if s.get("monitoring")]
    assert "NoDrift" in verdicts
    assert status["monitoring"]["findings"], status["monitoring"]
    assert all(_drifted(s) != "True" for s in seen), [s.get("monitoring") for s in seen]
    assert same.statuses() == {200: len(same.results)}

    # 3. petal_length shifted by 2 cm: Drifted, naming it, after two drifted windows.
    shifted = models.x.copy()
    shifted[:, FEATURES.index("petal_length")] += 2.0
    drifting = load(NAME, shifted, rate=60, max_rows=4, duration=600, seed=3).start()
    status = wait_until(
        lambda: s if _drifted(s := _status(cluster, namespace)) == "True" else None,
        timeout=INTERVAL * 6 + 30,
        interval=1.0,
        what="Drifted=True",
    )
    drifting.stop()
    mon = status["monitoring"]
    worst = mon["findings"][0]
    assert (worst["kind"], worst["name"]) == ("input", "petal_length"), mon
    assert worst["psi"] > worst["allowed"] > 0.1
    assert mon["consecutiveDrifted"] >= 2
    assert status["phase"] == "Healthy"  # a drifted model still serves
    condition = next(c for c in status["conditions"] if c["type"] == "Drifted")
    assert "petal_length" in condition["message"]
    events = cluster.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.name={NAME},reason=Drifted",
    ).stdout
    assert "petal_length" in events
    shown = kubectl_canarium(cluster, "-n", namespace, "status", NAME)
    assert shown.returncode == 0, shown.stderr
    assert "Monitoring: Drifted=True" in shown.stdout
    assert "! input  petal_length" in shown.stdout
