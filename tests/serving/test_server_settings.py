"""The settings of slow clients and shutdown: flags, environment variables, defaults, checks.

Their behaviour on a real server is tests/serving/test_slow_clients.py's and test_shutdown.py's.
"""

from __future__ import annotations

import pytest
from canarium_serving import contract
from canarium_serving.cli import build_parser
from canarium_serving.config import ServerConfig
from canarium_serving.http_protocol import protocol_class, sweep_interval

# (flag, env var, ServerConfig field, documented default)
SETTINGS = [
    ("--header-timeout-s", contract.ENV_HEADER_TIMEOUT_S, "header_timeout_s", 10.0),
    ("--body-timeout-s", contract.ENV_BODY_TIMEOUT_S, "body_timeout_s", 60.0),
    ("--body-read-timeout-s", contract.ENV_BODY_READ_TIMEOUT_S, "body_read_timeout_s", 30.0),
    ("--keep-alive-timeout-s", contract.ENV_KEEP_ALIVE_TIMEOUT_S, "keep_alive_timeout_s", 5.0),
    ("--shutdown-grace-s", contract.ENV_SHUTDOWN_GRACE_S, "shutdown_grace_s", 20.0),
    ("--shutdown-delay-s", contract.ENV_SHUTDOWN_DELAY_S, "shutdown_delay_s", 0.0),
]


def _config(env: dict[str, str], argv: list[str]) -> ServerConfig:
    """As cli.main builds it."""
    args = build_parser(env).parse_args(["--model-uri", "file:///m.onnx", *argv])
    fields = set(ServerConfig.__slots__)
    return ServerConfig(**{k: v for k, v in vars(args).items() if k in fields})


@pytest.mark.parametrize(("flag", "env", "field", "default"), SETTINGS)
def test_defaults_env_and_flags(flag: str, env: str, field: str, default: float) -> None:
    assert getattr(_config({}, []), field) == default
    assert getattr(ServerConfig(model_uri="x"), field) == default
    assert getattr(_config({env: "7.5"}, []), field) == 7.5
    assert getattr(_config({env: "7.5"}, [flag, "2"]), field) == 2.0  # the flag wins


@pytest.mark.parametrize(("flag", "env", "field", "default"), SETTINGS)
def test_help_names_each_setting_with_its_variable_and_default(
    flag: str, env: str, field: str, default: float
) -> None:
    text = " ".join(build_parser({}).format_help().split())
    assert flag in text
    assert f"[env {env}]" in text
    assert f"(default: {default:g})" in text or f"(default: {default})" in text


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--header-timeout-s", "0"),
        ("--body-timeout-s", "-1"),
        ("--keep-alive-timeout-s", "0"),
        ("--shutdown-grace-s", "-1"),
        ("--shutdown-delay-s", "-0.5"),
        ("--header-timeout-s", "soon"),
    ],
)
def test_out_of_range_values_are_usage_errors(flag: str, value: str) -> None:
    with pytest.raises(SystemExit) as info:
        _config({}, [flag, value])
    assert info.value.code == 2


def test_a_grace_and_a_delay_of_zero_are_allowed() -> None:
    config = _config({}, ["--shutdown-grace-s", "0", "--shutdown-delay-s", "0"])
    assert (config.shutdown_grace_s, config.shutdown_delay_s) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("header", "body", "every"),
    [(10, 60, 1.0), (1, 2, 0.1), (0.2, 60, 0.05), (30, 0.5, 0.05), (3, 3, 0.3)],
)
def test_deadlines_are_swept_every_tenth_of_the_shortest(
    header: float, body: float, every: float
) -> None:
    assert sweep_interval(header, body) == pytest.approx(every)


def test_each_protocol_class_has_its_own_deadlines_and_connections() -> None:
    a, b = protocol_class(1, 2), protocol_class(3, 4)
    assert (a.header_timeout, a.body_timeout) == (1, 2)
    assert (b.header_timeout, b.body_timeout) == (3, 4)
    assert a._open is not b._open
    with pytest.raises(ValueError, match="must be > 0"):
        protocol_class(0, 1)
