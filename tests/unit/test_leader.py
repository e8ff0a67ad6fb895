"""Leader election on a Lease, against an in-memory Lease API that keeps resourceVersions the
way the API server does (a PUT of a stale version is a 409). Clocks are the tests' own: no
sleeping, and every replica's view of time is explicit."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from canarium import metrics
from canarium.controller import Controller
from canarium.kube import Kube, KubeError, NotLeader
from canarium.leader import LeaderElector, LeaseConfig, decide, micro_time

from tests.unit.operator_fixtures import SETTINGS, mdep

NS = "canarium-system"
PATH = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
T0 = datetime(2026, 12, 4, 3, 0, tzinfo=UTC)


class LeaseAPI:
    """One namespace's Leases: GET, POST (409 if it exists), PUT (409 on a stale version)."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.down = False
        self.writes: list[tuple[str, str | None]] = []  # (method, holder written)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        fenced: bool = True,
        timeout: float = 30.0,  # noqa: ASYNC109 (Kube.request's signature)
    ) -> Any:
        assert fenced is False, "the Lease itself is written past the fence"
        if self.down:
            raise KubeError(503, "Service Unavailable", "{}")
        if method == "GET":
            name = path.rsplit("/", 1)[1]
            if name not in self.leases:
                raise KubeError(404, "Not Found", "{}")
            return copy.deepcopy(self.leases[name])
        self.version += 1
        stored = json.loads(json.dumps(body))
        name = stored["metadata"]["name"]
        if method == "POST":
            assert path == PATH
            assert stored["apiVersion"] == "coordination.k8s.io/v1"
            assert stored["kind"] == "Lease"
            assert stored["metadata"]["namespace"] == NS
            if name in self.leases:
                raise KubeError(409, "Conflict", "{}")
        else:
            assert method == "PUT"
            assert path == f"{PATH}/{name}"
            current = self.leases.get(name)
            if current is None:
                raise KubeError(404, "Not Found", "{}")
            if stored["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                raise KubeError(409, "Conflict", "{}")
        stored["metadata"]["resourceVersion"] = str(self.version)
        stored["spec"] = {k: v for k, v in stored["spec"].items() if v is not None}
        self.leases[name] = stored
        self.writes.append((method, stored["spec"].get("holderIdentity")))
        return copy.deepcopy(stored)

    def spec(self, name: str = "canarium-operator") -> dict[str, Any]:
        spec: dict[str, Any] = self.leases[name]["spec"]
        return spec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.now - 1000.0)


def _config(identity: str, **kw: Any) -> LeaseConfig:
    return LeaseConfig(namespace=NS, identity=identity, **kw)


def _elector(api: LeaseAPI, clock: Clock, identity: str, **kw: Any) -> LeaderElector:
    return LeaderElector(cast(Kube, api), _config(identity, **kw), clock=clock, wall=clock.wall)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- the decision ------------------------------------------------------------------------


def test_a_free_lease_is_taken_with_this_replica_as_holder() -> None:
    config = _config("a")
    decision = decide({}, config, T0, 5.0, 5.0)
    assert decision.holder == "a"
    assert decision.write == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": micro_time(T0),
        "renewTime": micro_time(T0),
        "leaseTransitions": 0,
    }


def test_a_lease_held_by_another_is_left_until_its_record_is_a_whole_duration_old() -> None:
    spec = {
        "holderIdentity": "b",
        "leaseDurationSeconds": 15,
        "leaseTransitions": 3,
        "acquireTime": micro_time(T0 - timedelta(hours=1)),
    }
    config = _config("a")
    assert decide(spec, config, T0, 114.9, 100.0).write is None
    assert decide(spec, config, T0, 114.9, 100.0).holder == "b"
    taken = decide(spec, config, T0, 115.0, 100.0).write
    assert taken is not None
    assert taken["holderIdentity"] == "a"
    assert taken["leaseTransitions"] == 4
    assert taken["acquireTime"] == micro_time(T0)


def test_the_holders_own_lease_duration_counts_not_the_candidates() -> None:
    spec = {"holderIdentity": "b", "leaseDurationSeconds": 60}
    assert decide(spec, _config("a"), T0, 159.0, 100.0).write is None
    assert decide(spec, _config("a"), T0, 160.0, 100.0).write is not None


def test_renewing_keeps_the_acquire_time_and_the_transitions() -> None:
    acquired = micro_time(T0 - timedelta(minutes=5))
    spec = {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": acquired,
        "renewTime": acquired,
        "leaseTransitions": 2,
    }
    write = decide(spec, _config("a"), T0, 100.0, 100.0).write
    assert write is not None
    assert write["acquireTime"] == acquired
    assert write["renewTime"] == micro_time(T0)
    assert write["leaseTransitions"] == 2


def test_a_released_lease_is_taken_at_once() -> None:
    spec = {"leaseDurationSeconds": 1, "leaseTransitions": 1}
    write = decide(spec, _config("a"), T0, 100.0, 100.0).write
    assert write is not None
    assert write["holderIdentity"] == "a"
    assert write["leaseTransitions"] == 2


@pytest.mark.parametrize(
    ("retry", "renew", "duration"),
    [(2, 10, 10), (2, 15, 10), (10, 10, 15), (0, 10, 15), (-1, 10, 15)],
)
def test_timings_that_would_let_two_leaders_overlap_are_refused(
    retry: float, renew: float, duration: float
) -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        _config("a", retry_period=retry, renew_deadline=renew, lease_duration=duration)


def test_a_config_without_a_namespace_or_identity_is_refused() -> None:
    with pytest.raises(ValueError, match="namespace"):
        LeaseConfig(namespace="", identity="a")
    with pytest.raises(ValueError, match="identity"):
        LeaseConfig(namespace=NS, identity="")


# --- two replicas ------------------------------------------------------------------------


def test_one_replica_leads_and_the_other_waits() -> None:
    api, clock = LeaseAPI(), Clock()
    a, b = _elector(api, clock, "a"), _elector(api, clock, "b")
    assert run(a.try_acquire_or_renew()) is True
    assert run(b.try_acquire_or_renew()) is False
    assert a.is_leader()
    assert not b.is_leader()
    assert api.spec()["holderIdentity"] == "a"
    b_fence = pytest.raises(NotLeader, match="b does not hold")
    with b_fence:
        b.fence()
    a.fence()


def test_a_standby_takes_over_a_dead_leaders_lease_only_after_a_whole_duration() -> None:
    api, clock = LeaseAPI(), Clock()
    a, b = _elector(api, clock, "a"), _elector(api, clock, "b")
    run(a.try_acquire_or_renew())
    assert run(b.try_acquire_or_renew()) is False  # b sees the record at 1000
    # a dies: it renews no more.
    clock.now += 14.9
    assert run(b.try_acquire_or_renew()) is False
    clock.now += 0.1
    assert run(b.try_acquire_or_renew()) is True
    assert api.spec()["holderIdentity"] == "b"
    assert api.spec()["leaseTransitions"] == 1


def test_a_renewing_leader_is_never_displaced() -> None:
    api, clock = LeaseAPI(), Clock()
    a, b = _elector(api, clock, "a"), _elector(api, clock, "b")
    run(a.try_acquire_or_renew())
    for _ in range(20):
        clock.now += 2.0
        assert run(a.try_acquire_or_renew()) is True
        assert run(b.try_acquire_or_renew()) is False
    assert api.spec()["holderIdentity"] == "a"


def test_there_is_never_a_moment_with_two_leaders() -> None:
    """A leader cut off from the API server: it stops being leader (the fence closes) before
    the standby can take the Lease, at every instant of a fine-grained timeline."""
    api, clock = LeaseAPI(), Clock()
    a, b = _elector(api, clock, "a"), _elector(api, clock, "b")
    run(a.try_acquire_or_renew())
    a_kube = LeaseAPI()  # a's renewals now go nowhere
    a_kube.down = True
    a.kube = cast(Kube, a_kube)
    took_over = None
    for step in range(400):
        clock.now = 1000.0 + step * 0.1
        if step % 20 == 0:  # both try every 2 s
            with contextlib.suppress(KubeError):
                run(a.try_acquire_or_renew())
            if run(b.try_acquire_or_renew()) and took_over is None:
                took_over = clock.now
        assert not (a.is_leader() and b.is_leader()), f"two leaders at {clock.now}"
    assert took_over is not None
    assert took_over == pytest.approx(1016.0)  # the first retry after 15 s
    assert not a.is_leader()


def test_two_candidates_writing_at_once_yield_one_leader() -> None:
    api, clock = LeaseAPI(), Clock()
    a, b = _elector(api, clock, "a"), _elector(api, clock, "b")
    run(a.try_acquire_or_renew())
    clock.now += 20  # a is dead; b and c both see an expired record...
    c = _elector(api, clock, "c")
    stale = copy.deepcopy(api.leases["canarium-operator"])
    b._record = c._record = tuple(sorted(stale["spec"].items()))
    b._observed_at = c._observed_at = 1000.0
    assert run(b.try_acquire_or_renew()) is True
    # ...c read the same version before b wrote: its PUT is refused.
    real_get = api.request

    async def stale_get(method: str, path: str, **kw: Any) -> Any:
        if method == "GET":
            return copy.deepcopy(stale)
        return await real_get(method, path, **kw)

    c.kube = cast(Kube, type("Stale", (), {"request": staticmethod(stale_get)})())
    assert run(c.try_acquire_or_renew()) is False
    assert api.spec()["holderIdentity"] == "b"
    assert not c.is_leader()


def test_hold_renews_and_returns_when_another_replica_took_the_lease() -> None:
    api, clock = LeaseAPI(), Clock()
    a = _elector(api, clock, "a", retry_period=0.01, renew_deadline=5, lease_duration=10)

    async def scenario() -> list[tuple[str, str | None]]:
        await a.acquire()
        assert metrics.LEADER._value.get() == 1
        holding = asyncio.create_task(a.hold())
        await asyncio.sleep(0.05)
        assert not holding.done()
        # Someone took it (a's record is stale in the server).
        lease = api.leases["canarium-operator"]
        lease["spec"]["holderIdentity"] = "intruder"
        await asyncio.wait_for(holding, 1)
        return api.writes

    writes = run(scenario())
    assert writes[0] == ("POST", "a")
    assert len(writes) > 2
    assert all(w == ("PUT", "a") for w in writes[1:])
    assert not a.is_leader()
    assert metrics.LEADER._value.get() == 0
    with pytest.raises(NotLeader):
        a.fence()


def test_hold_returns_when_renewals_fail_for_the_renew_deadline() -> None:
    api, clock = LeaseAPI(), Clock()
    a = _elector(api, clock, "a", retry_period=0.01, renew_deadline=5, lease_duration=10)

    async def scenario() -> None:
        await a.acquire()
        api.down = True
        holding = asyncio.create_task(a.hold())
        await asyncio.sleep(0.05)
        assert not holding.done()  # still within the renew deadline
        assert a.is_leader()
        clock.now += 5.0
        await asyncio.wait_for(holding, 1)

    run(scenario())
    assert not a.is_leader()


def test_acquire_waits_out_an_api_server_that_is_away() -> None:
    api, clock = LeaseAPI(), Clock()
    a = _elector(api, clock, "a", retry_period=0.01, renew_deadline=5, lease_duration=10)
    api.down = True

    async def scenario() -> None:
        acquiring = asyncio.create_task(a.acquire())
        await asyncio.sleep(0.05)
        assert not acquiring.done()
        api.down = False
        await asyncio.wait_for(acquiring, 1)

    run(scenario())
    assert a.is_leader()


def test_release_lets_a_standby_take_over_at_once() -> None:
    api, clock = LeaseAPI(), Clock()
    a, b = _elector(api, clock, "a"), _elector(api, clock, "b")
    run(a.try_acquire_or_renew())
    assert run(b.try_acquire_or_renew()) is False
    run(a.release())
    assert not a.is_leader()
    assert "holderIdentity" not in api.spec()
    assert api.spec()["leaseDurationSeconds"] == 1
    assert run(b.try_acquire_or_renew()) is True


def test_release_leaves_a_lease_another_replica_holds() -> None:
    api, clock = LeaseAPI(), Clock()
    a = _elector(api, clock, "a")
    run(a.try_acquire_or_renew())
    api.leases["canarium-operator"]["spec"]["holderIdentity"] = "b"
    writes = len(api.writes)
    run(a.release())
    assert api.spec()["holderIdentity"] == "b"
    assert len(api.writes) == writes


# --- the fence in Kube -------------------------------------------------------------------


class RecordingApi:
    """Stands in for kubernetes.client.ApiClient: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def param_serialize(self, method: str, resource_path: str, **_: Any) -> tuple[Any, ...]:
        return method, resource_path, {}, None, None

    def call_api(self, method: str, url: str, **_: Any) -> Any:
        self.sent.append(f"{method} {url}")

        class Response:
            status = 200
            reason = "OK"

            def read(self) -> bytes:
                return b"{}"

        return Response()


def test_the_fence_stops_every_write_but_not_reads_nor_the_lease_itself() -> None:
    api = RecordingApi()
    kube = Kube(cast(Any, api))
    closed = NotLeader("me")

    def fence() -> None:
        raise closed

    kube.fence = fence
    for method in ("PATCH", "POST", "PUT", "DELETE"):
        with pytest.raises(NotLeader):
            run(kube.request(method, "/api/v1/namespaces/ml/services/x", body={}))
    run(kube.request("GET", "/api/v1/namespaces/ml/services/x"))
    run(kube.request("PUT", PATH + "/canarium-operator", body={}, fenced=False))
    assert api.sent == [
        "GET /api/v1/namespaces/ml/services/x",
        f"PUT {PATH}/canarium-operator",
    ]
    kube.fence = None
    run(kube.request("PATCH", "/api/v1/namespaces/ml/services/x", body={}))
    assert api.sent[-1] == "PATCH /api/v1/namespaces/ml/services/x"


# --- the controller behind the Lease ------------------------------------------------------


class WritesKube:
    """A controller's Kube that lists nothing and records writes."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.fence: Any = None

    async def list(self, *_: Any, **__: Any) -> list[dict[str, Any]]:
        return []

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(f"apply {manifest['kind']}")
        body = json.loads(json.dumps(manifest))
        body["metadata"]["resourceVersion"] = "40"
        return cast(dict[str, Any], body)

    async def patch_status(self, ref: Any, patch: dict[str, Any], version: str) -> Any:
        self.writes.append("patch_status")
        return {"metadata": {"name": ref.name, "namespace": ref.namespace,
                             "resourceVersion": "41"}, "status": patch}  # fmt: skip

    async def event(self, *_: Any) -> None:
        self.writes.append("event")

    async def delete(self, *_: Any) -> bool:
        self.writes.append("delete")
        return True


def test_a_standby_keeps_its_cache_but_reconciles_only_once_it_holds_the_lease() -> None:
    leases, clock = LeaseAPI(), Clock()
    leases.leases["canarium-operator"] = {
        "metadata": {"name": "canarium-operator", "namespace": NS, "resourceVersion": "1"},
        "spec": {"holderIdentity": "other", "leaseDurationSeconds": 15},
    }
    kube = WritesKube()
    elector = LeaderElector(
        cast(Kube, leases),
        _config("me", retry_period=0.01, renew_deadline=5, lease_duration=10),
        clock=clock,
        wall=clock.wall,
    )
    controller = Controller(cast(Kube, kube), SETTINGS, namespaces=["ml"], elector=elector)
    lost: list[bool] = []
    controller.on_leadership_lost = lambda: lost.append(True)
    assert kube.fence == elector.fence

    body = mdep().model_dump(by_alias=True, mode="json")
    body["metadata"]["resourceVersion"] = "10"
    body["status"] = {}

    async def scenario() -> None:
        await controller.start()
        controller.on_mdep("ADDED", body)
        await asyncio.sleep(0.1)
        assert ("ml", "iris") in controller.mdeps  # the cache is warm...
        assert kube.writes == []  # ...and nothing is written
        assert not controller._tasks
        clock.now += 15.0  # the other replica's record is a whole (its) duration old
        for _ in range(100):
            await asyncio.sleep(0.02)
            if "patch_status" in kube.writes:
                break
        assert elector.is_leader()
        assert "apply Deployment" in kube.writes
        assert "patch_status" in kube.writes
        leases.down = True  # renewals fail from now on
        clock.now += 5.0
        for _ in range(100):
            await asyncio.sleep(0.02)
            if lost:
                break
        assert lost == [True]
        assert not elector.is_leader()
        await controller.stop()

    run(scenario())
