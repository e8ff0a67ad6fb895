"""Thin I/O over the Kubernetes API: raw JSON in and out, no generated models on the hot path.

Server-side apply with the operator's own field manager (so Argo CD and Flux never fight it
over fields it owns), status patches guarded by resourceVersion, deletes, lists and Events.
The blocking `kubernetes` client runs in worker threads.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client, config

from canarium.render import MANAGER
from canarium.resources import (
    CONFIG_MAP,
    CORE_CHILDREN,
    EVENT,
    JOB,
    MODEL_DEPLOYMENT,
    MODEL_RETRAINING,
    POD,
    ROLLOUT_POLICY,
)
from canarium.routers import ROUTER_RESOURCES

# apiVersion/kind -> plural, for the kinds the operator touches.
PLURALS: dict[tuple[str, str], str] = {
    (resource.api_version, resource.kind): resource.plural
    for resource in (
        *CORE_CHILDREN,
        *ROUTER_RESOURCES,
        POD,
        EVENT,
        CONFIG_MAP,
        MODEL_DEPLOYMENT,
        ROLLOUT_POLICY,
        MODEL_RETRAINING,
        JOB,
    )
}


class KubeError(Exception):
    @property
    def namespace_gone(self) -> bool:
        """The namespace is being deleted, or is gone: nothing new can be made there, and GC
        removes what is left. Not worth a retry."""
        if self.status == 403:
            return "is being terminated" in self.body
        if self.status == 404:
            try:
                details = json.loads(self.body).get("details") or {}
            except (ValueError, AttributeError):
                return False
            return isinstance(details, dict) and details.get("kind") == "namespaces"
        return False

    def __init__(self, status: int, reason: str, body: str) -> None:
        self.status = status
        self.reason = reason
        self.body = body
        try:
            message = json.loads(body).get("message", body)
        except ValueError:
            message = body
        super().__init__(f"{status} {reason}: {message}")


class NotLeader(KubeError):
    """A write refused before it was sent: this replica does not hold the leader Lease."""

    def __init__(self, identity: str) -> None:
        super().__init__(503, "NotLeader", f"{identity} does not hold the leader Lease")


class Unreachable(KubeError):
    """The request got no HTTP answer: connection refused or reset, a timeout (urllib3's
    error is the __cause__). A KubeError like the others, so that every caller that survives
    an API error survives an API server that is away."""

    def __init__(self, cause: urllib3.exceptions.HTTPError) -> None:
        super().__init__(0, "Unreachable", f"no answer from the API server: {cause}")


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str


def resource_path(api_version: str, kind: str, namespace: str | None, name: str = "") -> str:
    plural = PLURALS[(api_version, kind)]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    ns = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{ns}/{plural}" + (f"/{name}" if name else "")


class Kube:
    """The operator's API client."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.identity = os.environ.get("POD_NAME") or socket.gethostname()
        # Asked before every write (leader election's fence); raises when this process must
        # not write. None: it always may.
        self.fence: Callable[[], None] | None = None

    @classmethod
    def from_environment(
        cls, pool_size: int = 32, *, kubeconfig: str | None = None, context: str | None = None
    ) -> Kube:
        """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG); a named
        `kubeconfig` file or `context` (the CLI's --kubeconfig, --context) always means the
        kubeconfig. Raises kubernetes.config.ConfigException when there is none usable."""
        configuration = client.Configuration()
        if kubeconfig or context:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        configuration.connection_pool_maxsize = pool_size
        return cls(client.ApiClient(configuration))

    # --- raw requests ----------------------------------------------------------------------
    def _request_sync(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
        timeout: float = 30.0,
        fenced: bool = True,
    ) -> Any:
        if fenced and method != "GET" and self.fence is not None:
            self.fence()  # here, in the thread, as late as possible before the request
        url = path + (("?" + urllib.parse.urlencode(query)) if query else "")
        _method, full_url, headers, req_body, _post = self.api.param_serialize(
            method=method,
            resource_path=url,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,  # a dict: the REST layer serialises JSON and apply-patch YAML alike
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(
                _method, full_url, header_params=headers, body=req_body, _request_timeout=timeout
            )
            data = response.read()  # type: ignore[no-untyped-call]
        except client.ApiException as exc:
            raise KubeError(exc.status or 0, str(exc.reason), str(exc.body or "")) from None
        except urllib3.exceptions.HTTPError as exc:
            raise Unreachable(exc) from exc
        if response.status >= 400:
            raise KubeError(response.status, str(response.reason), data.decode(errors="replace"))
        return json.loads(data) if data else None

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self._request_sync, method, path, **kwargs)

    def _get_text_sync(self, path: str, timeout: float) -> str:
        _method, full_url, headers, _body, _post = self.api.param_serialize(
            method="GET",
            resource_path=path,
            header_params={"Accept": "text/plain, */*;q=0.1"},
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(
                "GET", full_url, header_params=headers, _request_timeout=timeout
            )
            data: bytes = response.read()  # type: ignore[no-untyped-call]
        except client.ApiException as exc:
            raise KubeError(exc.status or 0, str(exc.reason), str(exc.body or "")) from None
        except urllib3.exceptions.HTTPError as exc:
            raise Unreachable(exc) from exc
        if response.status >= 400:
            raise KubeError(response.status, str(response.reason), data.decode(errors="replace"))
        return data.decode("utf-8", errors="replace")

    async def get_text(self, path: str, *, timeout: float = 10.0) -> str:  # noqa: ASYNC109
        """GET a path that answers plain text, e.g. a pod's /metrics through the API server's
        pod proxy (`/api/v1/namespaces/{ns}/pods/{pod}:8080/proxy/metrics`). Raises KubeError
        on an HTTP error status."""
        return await asyncio.to_thread(self._get_text_sync, path, timeout)

    # --- verbs -----------------------------------------------------------------------------
    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply with field manager `canarium`, taking over conflicting fields."""
        meta = manifest["metadata"]
        path = resource_path(
            manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"]
        )
        result: dict[str, Any] = await self.request(
            "PATCH",
            path,
            body=manifest,
            content_type="application/apply-patch+yaml",
            query={"fieldManager": MANAGER, "force": "true"},
        )
        return result

    async def delete(self, ref: ObjectRef) -> bool:
        """Delete with background propagation; False when it was already gone."""
        try:
            await self.request(
                "DELETE",
                resource_path(ref.api_version, ref.kind, ref.namespace, ref.name),
                body={"propagationPolicy": "Background"},
            )
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self.request(
                "GET", resource_path(ref.api_version, ref.kind, ref.namespace, ref.name)
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def list(
        self, api_version: str, kind: str, namespace: str | None = None, labels: str = ""
    ) -> list[dict[str, Any]]:
        query = {"labelSelector": labels} if labels else None
        result = await self.request(
            "GET", resource_path(api_version, kind, namespace), query=query, timeout=120
        )
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    async def patch_status(
        self, ref: ObjectRef, status_patch: dict[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """JSON merge patch of the status subresource, refused (409) if the object changed
        since `resource_version`: a stale reconcile never overwrites a newer status."""
        path = resource_path(ref.api_version, ref.kind, ref.namespace, ref.name) + "/status"
        body = {"metadata": {"resourceVersion": resource_version}, "status": status_patch}
        result: dict[str, Any] = await self.request(
            "PATCH", path, body=body, content_type="application/merge-patch+json"
        )
        return result

    async def event(
        self,
        involved: dict[str, Any],
        type_: str,
        reason: str,
        message: str,
        at: datetime | None = None,
    ) -> None:
        """Record a core/v1 Event on an object (what `kubectl describe` shows), that happened
        `at` (now by default)."""
        meta = involved["metadata"]
        at = at or datetime.now(UTC)
        now = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        micro = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": MANAGER},
            "reportingComponent": MANAGER,
            "reportingInstance": self.identity,
            "action": reason,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "eventTime": micro,
            "count": 1,
        }
        await self.request("POST", resource_path("v1", "Event", meta["namespace"]), body=event)


def merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`; None when equal."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None if old == new else new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
            continue
        sub = merge_patch(old[key], value)
        if sub is not None or (value is None and old[key] is not None):
            patch[key] = sub
    return patch or None
