"""Router `gatewayAPI`: a Gateway API HTTPRoute under the user's Gateway, with exact weights
between the stable and canary Services, a header match that always reaches the canary (A/B) and
a mirror of stable traffic to the canary (shadow). The stable revision keeps its full size, so
an abort needs no scale-up."""

from __future__ import annotations

from typing import Any

from canarium.api import ModelDeployment
from canarium.render import SERVICE_PORT, object_metadata, service_names
from canarium.resources import Resource
from canarium.routers.base import Delivered, TrafficRouter, canary_pods

HTTPROUTE = Resource("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes")


class GatewayAPIRouter(TrafficRouter):
    name = "gatewayAPI"
    resources = (HTTPROUTE,)

    def pods(self, total: int, weight: int) -> tuple[int, int]:
        return total, canary_pods(total, weight)

    def delivered(self, weight: int, stable_ready: int, canary_ready: int) -> Delivered:
        # Exact weights, but never to a side without a ready pod while the other has one.
        route = weight
        if canary_ready == 0:
            route = 0
        elif stable_ready == 0:
            route = 100
        canary = float(route)
        stable = 100.0 - canary if stable_ready + canary_ready else 0.0
        return Delivered(route_weight=route, stable=stable, canary=canary)

    def render(
        self, mdep: ModelDeployment, canary_weight: int, has_canary: bool
    ) -> list[dict[str, Any]]:
        route = render_httproute(mdep, canary_weight, has_canary)
        return [route] if route else []


def render_httproute(
    mdep: ModelDeployment, canary_weight: int, has_canary: bool
) -> dict[str, Any] | None:
    """The Gateway API HTTPRoute of router gatewayAPI: exact weights between the stable and
    canary Services, an optional header match that always reaches the canary (A/B), and an
    optional mirror of stable traffic to the canary (shadow)."""
    gateway = mdep.spec.traffic.gateway_api
    if gateway is None:  # set exactly when the router is gatewayAPI (TrafficSpec validates it)
        return None
    _, stable, canary = service_names(mdep.metadata.name)
    parent_refs = []
    for ref in gateway.parent_refs:
        parent: dict[str, Any] = {"name": ref.name}
        if ref.namespace:
            parent["namespace"] = ref.namespace
        if ref.section_name:
            parent["sectionName"] = ref.section_name
        parent_refs.append(parent)

    def backend(name: str, weight: int) -> dict[str, Any]:
        return {"kind": "Service", "name": name, "port": SERVICE_PORT, "weight": weight}

    main_rule: dict[str, Any] = {
        "backendRefs": [backend(stable, 100 - canary_weight), backend(canary, canary_weight)]
    }
    rules: list[dict[str, Any]] = []
    if has_canary and gateway.header_match is not None:
        rules.append(
            {
                "matches": [
                    {
                        "headers": [
                            {
                                "type": "Exact",
                                "name": gateway.header_match.name,
                                "value": gateway.header_match.value,
                            }
                        ]
                    }
                ],
                "backendRefs": [backend(canary, 1)],
            }
        )
    if has_canary and gateway.mirror_percent:
        main_rule["filters"] = [
            {
                "type": "RequestMirror",
                "requestMirror": {
                    "backendRef": {"kind": "Service", "name": canary, "port": SERVICE_PORT},
                    "percent": gateway.mirror_percent,
                },
            }
        ]
    rules.append(main_rule)
    spec: dict[str, Any] = {"parentRefs": parent_refs, "rules": rules}
    if gateway.hostnames:
        spec["hostnames"] = list(gateway.hostnames)
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": object_metadata(mdep, mdep.metadata.name),
        "spec": spec,
    }
