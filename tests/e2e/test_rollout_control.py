"""Manual control of a rollout on the real node, as an on-call engineer uses it: `kubectl
canarium pause` holds a rollout at its step and weight for as long as it stays paused, and
`resume` continues from there."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.e2e.cluster import Cluster
from tests.e2e.incluster import InstalledOperator
from tests.e2e.load import LoadGenerator
from tests.e2e.models import E2EModels
from tests.e2e.test_rollout import (
    canary_cli,
    deploy,
    failed,
    policy,
    start_v1,
    status,
    wait_status,
)

pytestmark = pytest.mark.usefixtures("restricted")

HOLD_SECONDS = 45  # more than the policy's whole remaining schedule


def test_pause_holds_the_step_and_weight_until_resume(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
) -> None:
    """A steps-only policy with 10 s pauses would be promoted in about 30 s; paused at 25% it
    stays there for HOLD_SECONDS, then goes on from that step once resumed."""
    steps = policy(
        steps=[
            {"setWeight": 25},
            {"pause": {"duration": "10s"}},
            {"setWeight": 50},
            {"pause": {"duration": "10s"}},
            {"setWeight": 100},
        ]
    )
    del steps["analysis"]
    start_v1(cluster, namespace, models, steps)
    traffic = load("iris", models.x, rate=30, duration=240)
    traffic.start()
    deploy(cluster, namespace, models.good_v2, "2.0.0", steps)
    at_25 = wait_status(
        cluster, namespace, lambda s: (s.get("canary") or {}).get("weight") == 25, "at 25%"
    )
    canary_cli(cluster, namespace, "pause")
    paused = wait_status(cluster, namespace, lambda s: s.get("phase") == "Paused", "paused")
    step, weight = paused["currentStep"], paused["canary"]["weight"]
    assert step <= 1, paused
    assert weight == 25, paused
    deadline = time.monotonic() + HOLD_SECONDS
    while time.monotonic() < deadline:
        now = status(cluster, namespace)
        assert now["phase"] == "Paused", now
        assert now["currentStep"] == step, now
        assert now["canary"]["weight"] == weight, now
        assert now["canary"]["name"] == at_25["canary"]["name"]
        time.sleep(1)
    canary_cli(cluster, namespace, "resume")
    final = wait_status(
        cluster,
        namespace,
        lambda s: s.get("phase") == "Healthy" and s["stable"]["modelVersion"] == "2.0.0",
        "promoted after resume",
        timeout=120,
    )
    assert final["history"][0]["outcome"] == "Promoted"
    time.sleep(2)
    traffic.stop()
    assert not failed(traffic), failed(traffic)[:10]
    # Both versions served while it was held at 25%.
    assert {r.version for r in traffic.results} == {"1.0.0", "2.0.0"}
