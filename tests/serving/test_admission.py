"""The in-flight bound's pure logic (canarium_serving.admission) and its settings.

The behaviour on a real server (REST 503 with Retry-After, gRPC UNAVAILABLE, health and
metadata unbounded, the refusals counted) is tests/serving/test_overload.py's.
"""

from __future__ import annotations

import pytest
from canarium_serving import contract
from canarium_serving.admission import (
    MIN_DEFAULT_MAX_INFLIGHT,
    RETRY_AFTER_S,
    InflightLimiter,
    OverloadedError,
    default_max_inflight,
)
from canarium_serving.cli import build_parser
from canarium_serving.config import ServerConfig
from canarium_serving.dataplane import DataPlane
from canarium_serving.protocol import ProtocolError


def test_limiter_admits_up_to_its_limit_then_refuses_at_once() -> None:
    limiter = InflightLimiter(2)
    with limiter, limiter:
        assert limiter.inflight == 2
        with pytest.raises(OverloadedError) as info, limiter:
            pass  # pragma: no cover - never entered
        # a refusal takes no slot
        assert limiter.inflight == 2
    assert limiter.inflight == 0
    error = info.value
    assert isinstance(error, ProtocolError)
    assert (error.status, error.limit, error.retry_after_s) == (503, 2, RETRY_AFTER_S)
    assert "2 inference requests already in flight" in error.message
    assert contract.ENV_MAX_INFLIGHT in error.message  # says which knob bounds it
    assert f"retry after {RETRY_AFTER_S} s" in error.message


def test_a_slot_is_given_back_however_the_request_ends() -> None:
    limiter = InflightLimiter(1)
    with pytest.raises(ValueError, match="boom"), limiter:
        raise ValueError("boom")
    assert limiter.inflight == 0
    with limiter:  # the slot is free again
        assert limiter.inflight == 1


def test_slots_freed_are_taken_again() -> None:
    limiter = InflightLimiter(1)
    for _ in range(3):
        with limiter, pytest.raises(OverloadedError), limiter:
            pass  # pragma: no cover
        assert limiter.inflight == 0


def test_zero_means_no_limit() -> None:
    limiter = InflightLimiter(0)
    for _ in range(10_000):
        limiter.__enter__()
    assert limiter.inflight == 10_000


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        InflightLimiter(-1)


def test_retry_after_is_a_whole_number_of_seconds() -> None:
    limiter = InflightLimiter(1, retry_after_s=3)
    with limiter, pytest.raises(OverloadedError) as info, limiter:
        pass  # pragma: no cover
    assert info.value.retry_after_s == 3
    assert isinstance(RETRY_AFTER_S, int)
    assert RETRY_AFTER_S >= 1


@pytest.mark.parametrize(
    ("batch_max_size", "expected"),
    [(0, 128), (1, 128), (32, 128), (33, 132), (64, 256), (1000, 4000)],
)
def test_default_limit_is_four_batches_and_at_least_128(batch_max_size: int, expected: int) -> None:
    assert default_max_inflight(batch_max_size) == expected
    assert default_max_inflight(batch_max_size) >= MIN_DEFAULT_MAX_INFLIGHT
    # a batch of one-row requests can always fill
    assert default_max_inflight(batch_max_size) >= batch_max_size


@pytest.mark.parametrize(
    ("env", "argv", "expected"),
    [
        ({}, [], 128),  # the defaults: 4 x 32
        ({}, ["--batch-max-size", "64"], 256),
        ({}, ["--batch-max-size", "0"], 128),  # batching off
        ({contract.ENV_MAX_INFLIGHT: "2"}, [], 2),
        ({contract.ENV_MAX_INFLIGHT: "0"}, [], 0),  # no limit
        ({contract.ENV_MAX_INFLIGHT: "7"}, ["--max-inflight", "5"], 5),  # the flag wins
    ],
)
def test_flag_and_env_set_the_dataplanes_limit(
    env: dict[str, str], argv: list[str], expected: int
) -> None:
    args = build_parser(env).parse_args(["--model-uri", "file:///m.onnx", *argv])
    config = ServerConfig(
        model_uri=args.model_uri,
        batch_max_size=args.batch_max_size,
        max_inflight=args.max_inflight,
    )
    assert DataPlane(config).inflight.limit == expected


@pytest.mark.parametrize("value", ["-1", "many", "1.5"])
def test_invalid_env_value_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser({contract.ENV_MAX_INFLIGHT: value})
    assert info.value.code == 2
    assert contract.ENV_MAX_INFLIGHT in capsys.readouterr().err


def test_check_refuses_when_full_and_takes_no_slot() -> None:
    # The REST transport checks before it reads a body, and takes its slot after.
    limiter = InflightLimiter(1)
    limiter.check()  # free: no error
    assert limiter.inflight == 0  # and no slot taken
    with limiter:
        with pytest.raises(OverloadedError) as info:
            limiter.check()
        assert info.value.limit == 1
        assert limiter.inflight == 1
    limiter.check()
    unlimited = InflightLimiter(0)
    with unlimited, unlimited:
        unlimited.check()


def test_check_refuses_as_entering_does_with_the_limit_and_retry_after_configured() -> None:
    # The REST transport answers a refusal by check() (before the body) with its Retry-After.
    limiter = InflightLimiter(2, retry_after_s=5)
    with limiter, limiter:
        with pytest.raises(OverloadedError) as checked:
            limiter.check()
        with pytest.raises(OverloadedError) as entered, limiter:
            pass  # pragma: no cover - never entered
    for error in (checked.value, entered.value):
        assert (error.status, error.limit, error.retry_after_s) == (503, 2, 5)
        assert error.message == (
            "server overloaded: 2 inference requests already in flight, the most it takes at "
            f"once ({contract.ENV_MAX_INFLIGHT}); retry after 5 s"
        )
