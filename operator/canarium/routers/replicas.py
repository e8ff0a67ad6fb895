"""Router `replicas`: one Service over both revisions' ready pods, the weight approximated by
pod counts. Works on any cluster; the status reports the split the ready pods deliver."""

from __future__ import annotations

import math

from canarium.routers.base import Delivered, TrafficRouter, canary_pods


def effective_weights(stable_ready: int, canary_ready: int) -> tuple[float, float]:
    """(stable, canary) percentages that a Service over both revisions' ready pods delivers."""
    all_ready = stable_ready + canary_ready
    if all_ready == 0:
        return 0.0, 0.0
    canary = round(100.0 * canary_ready / all_ready, 2)
    return round(100.0 - canary, 2), canary


class ReplicasRouter(TrafficRouter):
    name = "replicas"

    def pods(self, total: int, weight: int) -> tuple[int, int]:
        """The pod ratio is the traffic split, rounded the way Argo Rollouts' basic canary
        rounds: the canary up, the stable down by the same share."""
        return total - math.floor(total * weight / 100), canary_pods(total, weight)

    def delivered(self, weight: int, stable_ready: int, canary_ready: int) -> Delivered:
        stable, canary = effective_weights(stable_ready, canary_ready)
        return Delivered(route_weight=weight, stable=stable, canary=canary)
