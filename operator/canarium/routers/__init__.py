"""Traffic routers, by the name `spec.traffic.router` gives them.

Adding one: a module here with a `TrafficRouter` subclass, its line in `ROUTERS`, its value in
the API's `TrafficSpec.router` (with its settings), and RBAC for the kinds it makes.
"""

from __future__ import annotations

from canarium.resources import Resource
from canarium.routers.base import Delivered, TrafficRouter, canary_pods
from canarium.routers.gatewayapi import GatewayAPIRouter
from canarium.routers.replicas import ReplicasRouter

ROUTERS: dict[str, TrafficRouter] = {
    router.name: router for router in (ReplicasRouter(), GatewayAPIRouter())
}

# Every kind some router makes: watched, cached, and deleted once no router renders it.
ROUTER_RESOURCES: tuple[Resource, ...] = tuple(
    dict.fromkeys(resource for router in ROUTERS.values() for resource in router.resources)
)


def router_for(name: str) -> TrafficRouter:
    try:
        return ROUTERS[name]
    except KeyError:
        raise ValueError(
            f"unknown traffic router {name!r}; known: {', '.join(sorted(ROUTERS))}"
        ) from None


__all__ = [
    "ROUTERS",
    "ROUTER_RESOURCES",
    "Delivered",
    "Resource",
    "TrafficRouter",
    "canary_pods",
    "router_for",
]
