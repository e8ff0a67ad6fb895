"""The interface every traffic router implements, and the pod arithmetic they share. Pure.

A router decides how requests are split between a ModelDeployment's stable and canary
revisions. The rollout state machine asks a router only for numbers (how many pods each side
gets at a weight, and what split the ready pods really deliver); reconcile asks it for the
objects it makes (an HTTPRoute, a VirtualService...). What a router made and no longer renders
is deleted, so switching routers leaves nothing behind with frozen weights.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from canarium.resources import Resource

if TYPE_CHECKING:
    from canarium.api import ModelDeployment


@dataclass(frozen=True)
class Delivered:
    """What a router delivers at a canary weight, given each side's ready pods."""

    route_weight: int  # the canary weight the router's own objects carry (0..100)
    stable: float  # the effective percentages of requests each side serves
    canary: float


class TrafficRouter(ABC):
    """One way of splitting traffic; one module per router in this package."""

    name: ClassVar[str]  # the value of spec.traffic.router
    resources: ClassVar[tuple[Resource, ...]] = ()  # what it makes besides the Services

    @abstractmethod
    def pods(self, total: int, weight: int) -> tuple[int, int]:
        """(stable, canary) pod counts for a canary weight, `total` being the spec's size."""

    @abstractmethod
    def delivered(self, weight: int, stable_ready: int, canary_ready: int) -> Delivered:
        """The split this router delivers at a canary weight with these ready pods."""

    def render(
        self, mdep: ModelDeployment, canary_weight: int, has_canary: bool
    ) -> list[dict[str, Any]]:
        """The objects this router makes for a ModelDeployment at a canary weight (header
        routes and mirrors included), all of kinds in `resources`."""
        return []


def canary_pods(total: int, weight: int) -> int:
    """The canary's share of `total` pods at a weight: rounded up, at least one."""
    if weight <= 0:
        return 0
    return min(total, max(1, math.ceil(total * weight / 100)))
