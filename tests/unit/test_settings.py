"""The operator's settings from its environment."""

from __future__ import annotations

import pytest
from canarium.settings import Settings


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARIUM_PROGRESS_DEADLINE_SECONDS", "120")
    monkeypatch.setenv("CANARIUM_ANALYSIS_CONCURRENCY", "3")
    monkeypatch.setenv("CANARIUM_ANALYSIS_TIMEOUT_SECONDS", "12.5")
    monkeypatch.setenv("CANARIUM_POD_SCRAPE", "pod-ip")
    settings = Settings.from_env()
    assert settings.progress_deadline_seconds == 120
    assert settings.analysis_concurrency == 3
    assert settings.analysis_timeout_seconds == 12.5
    assert settings.pod_scrape == "pod-ip"


def test_settings_default_without_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CANARIUM_PROGRESS_DEADLINE_SECONDS",
        "CANARIUM_ANALYSIS_CONCURRENCY",
        "CANARIUM_ANALYSIS_TIMEOUT_SECONDS",
        "CANARIUM_POD_SCRAPE",
        "KUBERNETES_SERVICE_HOST",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env()
    assert (settings.analysis_concurrency, settings.analysis_timeout_seconds) == (8, 30.0)
    assert settings.pod_scrape == "api-proxy"
