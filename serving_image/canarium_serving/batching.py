"""Dynamic batching: concurrent requests to one model run as one model execution.

Requests that arrive while a batch is open (up to `max_wait` seconds after its first request,
or until `max_size` rows) are concatenated along the first dimension, run once, and split back.
On by default (up to 32 rows, no added wait); see serving_image/README.md for the measurements.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray[Any, Any]]
Predict = Callable[[Mapping[str, np.ndarray[Any, Any]], Sequence[str]], Arrays]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    inputs: Mapping[str, np.ndarray[Any, Any]]
    outputs: Sequence[str]
    rows: int
    future: asyncio.Future[Arrays]


class Batcher:
    def __init__(
        self,
        predict: Predict,
        *,
        max_size: int,
        max_wait: float,
        on_execute: Callable[[Mapping[str, np.ndarray[Any, Any]], Arrays, int], None] | None = None,
    ) -> None:
        self._predict = predict
        self.max_size = max_size
        self.max_wait = max_wait
        self._on_execute = on_execute
        self._pending: list[_Pending] = []
        self._rows = 0
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None

    async def submit(
        self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]
    ) -> Arrays:
        rows = next(iter(inputs.values())).shape[0]
        if rows >= self.max_size:
            return self._run(inputs, outputs, rows)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Arrays] = loop.create_future()
        self._pending.append(_Pending(inputs, outputs, rows, fut))
        self._rows += rows
        if self._rows >= self.max_size:
            self._flush()
        elif self._timer is None:
            if self.max_wait > 0:
                self._timer = loop.call_later(self.max_wait, self._flush)
            else:
                self._timer = loop.call_soon(self._flush)
        return await fut

    def _run(
        self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str], rows: int
    ) -> Arrays:
        result = self._predict(inputs, outputs)
        if self._on_execute is not None:
            self._on_execute(inputs, result, rows)
        return result

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending, self._rows = self._pending, [], 0
        live = [p for p in pending if not p.future.done()]  # cancelled: client went away
        if not live:
            return
        if len(live) == 1 or not self._compatible(live):
            for p in live:
                self._settle(p)
            return
        names = list(dict.fromkeys(n for p in live for n in p.outputs))
        merged = {
            name: np.concatenate([p.inputs[name] for p in live], axis=0) for name in live[0].inputs
        }
        total = sum(p.rows for p in live)
        try:
            result = self._run(merged, names, total)
        except Exception:
            # One bad request must not fail the others: run them one by one.
            log.debug("batch of %d failed; running its requests one by one", len(live))
            for p in live:
                self._settle(p)
            return
        if any(arr.ndim == 0 or arr.shape[0] != total for arr in result.values()):
            for p in live:
                self._settle(p)
            return
        start = 0
        for p in live:
            end = start + p.rows
            p.future.set_result({n: result[n][start:end] for n in p.outputs})
            start = end

    def _settle(self, p: _Pending) -> None:
        try:
            p.future.set_result(self._run(p.inputs, p.outputs, p.rows))
        except Exception as exc:
            p.future.set_exception(exc)

    @staticmethod
    def _compatible(batch: list[_Pending]) -> bool:
        first = batch[0].inputs
        for p in batch[1:]:
            if p.inputs.keys() != first.keys():
                return False
            for name, arr in p.inputs.items():
                ref = first[name]
                if arr.dtype != ref.dtype or arr.shape[1:] != ref.shape[1:]:
                    return False
        return True
