"""The kopf wiring: only raw event handlers, so kopf's diff base can be skipped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, cast

import kopf
import pytest
from canarium import handlers
from canarium.controller import Controller
from canarium.kube import Kube


def test_only_event_handlers_are_registered_so_no_diff_base_is_read() -> None:
    registry = kopf.get_default_registry()
    assert registry._watching.get_all_handlers()
    # A change, daemon/timer or webhook handler would read the diff base that NoDiffBase skips.
    assert not registry._changing.get_all_handlers()
    assert not registry._spawning.get_all_handlers()
    assert not registry._webhooks.get_all_handlers()


def test_startup_skips_the_diff_base_and_keeps_bookkeeping_out_of_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[object] = []

    class Started(Exception):
        pass

    async def start(self: Controller) -> None:
        started.append(self)
        raise Started

    monkeypatch.setattr(Controller, "start", start)
    monkeypatch.setattr(Kube, "from_environment", staticmethod(lambda **_: object()))
    settings = kopf.OperatorSettings()
    startup = cast(Callable[..., Coroutine[Any, Any, None]], handlers.startup)
    with pytest.raises(Started):
        asyncio.run(startup(settings=settings, memo=kopf.Memo()))
    assert started
    base = settings.persistence.diffbase_storage
    assert isinstance(base, handlers.NoDiffBase)
    body = kopf.Body({"metadata": {"name": "x"}, "spec": {"a": {"b": [1, 2]}}})
    assert base.build(body=body) == {}
    assert base.fetch(body=body) is None
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
