"""Traffic routers as pure units: the registry, each router's pod arithmetic and delivered
split, and reconcile deleting what a router made once it no longer renders it."""

from __future__ import annotations

import pytest
from canarium.reconcile import ChildRef, reconcile
from canarium.routers import ROUTER_RESOURCES, ROUTERS, router_for
from canarium.routers.base import canary_pods
from canarium.routers.gatewayapi import HTTPROUTE
from canarium.routers.replicas import effective_weights

from tests.unit.operator_fixtures import inp, mdep, name_of, observed

GATEWAY = {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "edge"}]}}


def test_the_registry_knows_each_router_by_its_api_name() -> None:
    assert sorted(ROUTERS) == ["gatewayAPI", "replicas"]
    assert router_for("gatewayAPI").name == "gatewayAPI"
    assert router_for("replicas").resources == ()
    assert ROUTER_RESOURCES == (HTTPROUTE,)
    with pytest.raises(
        ValueError, match="unknown traffic router 'istio'; known: gatewayAPI, replicas"
    ):
        router_for("istio")


@pytest.mark.parametrize(
    ("total", "weight", "router", "expected"),
    [
        (4, 10, "replicas", (4, 1)),
        (4, 25, "replicas", (3, 1)),
        (4, 50, "replicas", (2, 2)),
        (4, 100, "replicas", (0, 4)),
        (3, 10, "replicas", (3, 1)),
        (10, 10, "replicas", (9, 1)),
        (4, 0, "replicas", (4, 0)),
        (4, 10, "gatewayAPI", (4, 1)),
        (4, 60, "gatewayAPI", (4, 3)),
    ],
)
def test_split_replicas(total: int, weight: int, router: str, expected: tuple[int, int]) -> None:
    assert router_for(router).pods(total, weight) == expected


def test_effective_weights_follow_ready_pods() -> None:
    assert effective_weights(3, 1) == (75.0, 25.0)
    assert effective_weights(2, 1) == (66.67, 33.33)
    assert effective_weights(0, 0) == (0.0, 0.0)
    assert effective_weights(0, 2) == (0.0, 100.0)


def test_the_replicas_router_delivers_what_the_ready_pods_deliver_whatever_the_weight() -> None:
    delivered = router_for("replicas").delivered(10, 3, 1)
    assert (delivered.route_weight, delivered.stable, delivered.canary) == (10, 75.0, 25.0)


@pytest.mark.parametrize(
    ("weight", "stable_ready", "canary_ready", "expected"),
    [
        (30, 3, 1, (30, 70.0, 30.0)),  # exact, whatever the pod counts
        (30, 3, 0, (0, 100.0, 0.0)),  # never to a canary without a ready pod
        (30, 0, 2, (100, 0.0, 100.0)),  # nor to a stable side without one
        (30, 0, 0, (0, 0.0, 0.0)),  # nothing ready: nothing delivered
        (0, 3, 1, (0, 100.0, 0.0)),
    ],
)
def test_the_gateway_router_delivers_exact_weights_to_ready_sides_only(
    weight: int, stable_ready: int, canary_ready: int, expected: tuple[int, float, float]
) -> None:
    delivered = router_for("gatewayAPI").delivered(weight, stable_ready, canary_ready)
    assert (delivered.route_weight, delivered.stable, delivered.canary) == expected


def test_switching_from_gateway_api_to_replicas_deletes_the_httproute() -> None:
    route = ChildRef(HTTPROUTE.api_version, HTTPROUTE.kind, "iris")
    on_gateway = mdep(traffic=GATEWAY)
    rev = observed(on_gateway, ready=3)
    plan = reconcile(inp(on_gateway, rev, routed=frozenset({route})))
    assert [m["kind"] for m in plan.apply].count("HTTPRoute") == 1
    assert route not in plan.delete

    # The same revision (the router is not part of it) now behind the replicas router.
    switched = mdep(traffic={"router": "replicas"})
    assert name_of(switched) == rev.name
    plan = reconcile(inp(switched, rev, routed=frozenset({route})))
    assert "HTTPRoute" not in [m["kind"] for m in plan.apply]
    assert plan.delete == [route]
    # Nothing of the router's left: nothing to delete.
    assert reconcile(inp(switched, rev)).delete == []


def test_the_canary_share_of_a_large_size_is_the_weight_rounded_up() -> None:
    # Large enough that the share is not a handful of pods: 50% of 1,000 is 500, 1% of 250 is 3.
    assert canary_pods(1000, 50) == 500
    assert canary_pods(250, 1) == 3
    assert router_for("replicas").pods(1000, 50) == (500, 500)
    assert router_for("replicas").pods(250, 1) == (248, 3)


def test_the_gateway_router_splits_exactly_between_as_many_ready_pods_on_each_side() -> None:
    delivered = router_for("gatewayAPI").delivered(30, 2, 2)
    assert (delivered.route_weight, delivered.stable, delivered.canary) == (30, 70.0, 30.0)


def test_the_gateway_router_makes_nothing_for_a_spec_without_gateway_settings() -> None:
    assert router_for("gatewayAPI").render(mdep(), 30, True) == []
    assert [
        o["kind"] for o in router_for("gatewayAPI").render(mdep(traffic=GATEWAY), 30, True)
    ] == ["HTTPRoute"]
