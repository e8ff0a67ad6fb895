"""Leader election on a coordination.k8s.io Lease, the way client-go and controller-runtime do it.

Every replica watches and keeps its caches warm; only the holder of the Lease reconciles. A
candidate takes the Lease when its record has not changed for `leaseDurationSeconds` on the
candidate's own clock (no wall-clock comparison between machines), or when it is free. The
holder renews it every `retry_period`; a holder that has not renewed for `renew_deadline` stops
writing at once (the fence `Kube` asks before every write) and the process exits, to come back
as a standby. `renew_deadline < lease_duration`, so the old holder is fenced before any
candidate can take the Lease: two leaders never write at once.

A clean shutdown releases the Lease (holder "", 1 s), so a standby takes over in one
`retry_period` instead of a whole `lease_duration` (controller-runtime's ReleaseOnCancel).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from canarium import metrics
from canarium.kube import Kube, KubeError, NotLeader

log = logging.getLogger(__name__)

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
DEFAULT_LEASE_NAME = "canarium-operator"


def micro_time(moment: datetime) -> str:
    """A Lease's MicroTime (RFC 3339 with microseconds)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    identity: str
    name: str = DEFAULT_LEASE_NAME
    # controller-runtime's defaults.
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.namespace or not self.name or not self.identity:
            raise ValueError("leader election needs a namespace, a Lease name and an identity")
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration "
                f"(got {self.retry_period:g}s, {self.renew_deadline:g}s, "
                f"{self.lease_duration:g}s)"
            )


@dataclass(frozen=True)
class LeaseDecision:
    """What a replica does with the Lease it read: `write` it (a new spec: take or renew), or
    leave it to `holder`, whose record it last saw change at `observed_at`."""

    write: dict[str, Any] | None
    holder: str


def decide(
    spec: dict[str, Any],
    config: LeaseConfig,
    now: datetime,
    clock_now: float,
    observed_at: float,
) -> LeaseDecision:
    """The Lease's next spec for this replica, or None to leave it. `observed_at`: when (on
    this replica's monotonic clock) the Lease's current record was first seen."""
    holder = spec.get("holderIdentity") or ""
    duration = float(spec.get("leaseDurationSeconds") or config.lease_duration)
    if holder and holder != config.identity and observed_at + duration > clock_now:
        return LeaseDecision(write=None, holder=holder)
    ours = holder == config.identity
    transitions = int(spec.get("leaseTransitions") or 0)
    stamp = micro_time(now)
    return LeaseDecision(
        write={
            "holderIdentity": config.identity,
            "leaseDurationSeconds": round(config.lease_duration),
            "acquireTime": (spec.get("acquireTime") or stamp) if ours else stamp,
            "renewTime": stamp,
            # client-go counts every change of holder, a release included; not the creation.
            "leaseTransitions": transitions if ours or not spec else transitions + 1,
        },
        holder=config.identity,
    )


class LeaderElector:
    """Takes, renews and releases one Lease for this process."""

    def __init__(
        self,
        kube: Kube,
        config: LeaseConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.config = config
        self.clock = clock
        self.wall = wall
        self.valid_until = 0.0  # monotonic: the fence opens only before this
        self._record: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._path = LEASES.format(namespace=config.namespace)

    # --- the fence -------------------------------------------------------------------------
    def is_leader(self) -> bool:
        return self.clock() < self.valid_until

    def fence(self) -> None:
        """Raise NotLeader unless this process holds the Lease now (Kube calls it before
        every write)."""
        if not self.is_leader():
            raise NotLeader(self.config.identity)

    # --- one attempt -----------------------------------------------------------------------
    async def try_acquire_or_renew(self) -> bool:
        """Read the Lease and take or renew it; True when this process holds it."""
        sent = self.clock()
        path = f"{self._path}/{self.config.name}"
        try:
            lease = await self.kube.request("GET", path, fenced=False, timeout=self._timeout())
        except KubeError as exc:
            if exc.status != 404:
                raise
            lease = None
        if lease is None:
            decision = decide({}, self.config, self.wall(), sent, sent)
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.config.name, "namespace": self.config.namespace},
                "spec": decision.write,
            }
            return await self._write("POST", self._path, body, sent)
        spec = lease.get("spec") or {}
        record = tuple(sorted(spec.items()))
        if record != self._record:  # a change, or the first look: the holder is alive now
            self._record, self._observed_at = record, sent
        decision = decide(spec, self.config, self.wall(), self.clock(), self._observed_at)
        if decision.write is None:
            return False
        body = {**lease, "spec": decision.write}
        return await self._write("PUT", path, body, sent)

    async def _write(self, method: str, path: str, body: dict[str, Any], sent: float) -> bool:
        try:
            written = await self.kube.request(
                method, path, body=body, fenced=False, timeout=self._timeout()
            )
        except KubeError as exc:
            if exc.status == 409:  # another replica wrote it first
                return False
            raise
        spec = (written or {}).get("spec") or {}
        self._record, self._observed_at = tuple(sorted(spec.items())), sent
        # Valid from when the request was sent: the API server stored it no earlier, and a
        # candidate waits a whole lease duration from when it sees it.
        self.valid_until = sent + self.config.renew_deadline
        return True

    def _timeout(self) -> float:
        return max(1.0, self.config.renew_deadline / 2)

    # --- the loops -------------------------------------------------------------------------
    async def acquire(self) -> None:
        """Wait until this process holds the Lease."""
        log.info(
            "waiting for the leader Lease %s/%s as %s",
            self.config.namespace,
            self.config.name,
            self.config.identity,
        )
        while True:
            try:
                if await self.try_acquire_or_renew():
                    break
            except (KubeError, OSError) as exc:  # the API server is away: try again
                log.warning("leader Lease not read: %s", exc)
            await asyncio.sleep(self.config.retry_period * (1 + 0.2 * random.random()))
        metrics.LEADER.set(1)
        log.info("became the leader (Lease %s/%s)", self.config.namespace, self.config.name)

    async def hold(self) -> None:
        """Renew the Lease every retry period; return when it is lost (not renewed within
        the renew deadline, or taken by another)."""
        while self.is_leader():
            await asyncio.sleep(self.config.retry_period)
            try:
                if await self.try_acquire_or_renew():
                    continue
                log.error("the leader Lease was taken by another replica")
                break
            except (KubeError, OSError) as exc:
                log.warning("leader Lease not renewed: %s", exc)
        self.valid_until = 0.0
        metrics.LEADER.set(0)
        log.error("lost the leader Lease %s/%s", self.config.namespace, self.config.name)

    async def release(self) -> None:
        """Give the Lease up on a clean shutdown, so a standby need not wait it out."""
        if not self.is_leader():
            return
        self.valid_until = 0.0
        metrics.LEADER.set(0)
        path = f"{self._path}/{self.config.name}"
        try:
            lease = await self.kube.request("GET", path, fenced=False, timeout=self._timeout())
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.config.identity:
                return
            stamp = micro_time(self.wall())
            body = {
                **lease,
                "spec": {
                    **spec,
                    "holderIdentity": None,
                    "leaseDurationSeconds": 1,
                    "acquireTime": stamp,
                    "renewTime": stamp,
                },
            }
            await self.kube.request("PUT", path, body=body, fenced=False, timeout=self._timeout())
            log.info("released the leader Lease %s/%s", self.config.namespace, self.config.name)
        except (KubeError, OSError) as exc:
            log.warning("leader Lease not released (a standby waits it out): %s", exc)
