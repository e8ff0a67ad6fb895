"""Recordings and replay: the documented format round-trips what the judge reads, and the
replay runs the real state machine and judge, so a recording of a rollout replays to the
decisions that rollout took."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from canarium.analysis import MeasuredWindow, RevisionMetrics, WindowResult, judge
from canarium.analysis.recording import (
    RecordedWindow,
    Recording,
    Traffic,
    appended,
    fitted,
    record_to_window,
    window_to_record,
)
from canarium.api import RolloutPolicySpec
from canarium.cli import main
from canarium.replay import START, RecordingSource, judged_by, replay
from pydantic import ValidationError

POLICY: dict[str, Any] = {
    "steps": [
        {"setWeight": 10},
        {"pause": {"duration": "1m"}},
        {"setWeight": 50},
        {"pause": {"duration": "1m"}},
        {"setWeight": 100},
    ],
    "analysis": {"interval": "30s", "minSamples": 20, "checks": {"errorRate": {}}},
}


def metrics(requests: float, errors: float, **extra: Any) -> RevisionMetrics:
    return RevisionMetrics(requests=requests, errors=errors, **extra)


def window(
    at: int, canary: RevisionMetrics | None, stable: RevisionMetrics | None
) -> MeasuredWindow:
    return MeasuredWindow(START + timedelta(seconds=at), WindowResult(canary, stable))


def good_window(at: int) -> MeasuredWindow:
    """A canary that errs as often as stable (1%), with errors enough on both sides that a
    canary twice as bad is clearly less likely: the window passes on its own."""
    return window(at, metrics(300, 3), metrics(2700, 27))


def test_a_window_round_trips_through_the_recording_format() -> None:
    full = metrics(
        120,
        3,
        latency_buckets={0.005: 10.0, 0.1: 118.0, math.inf: 120.0},
        prediction_classes={("label", "0"): 40.0, ("label", "1"): 80.0},
        prediction_value_buckets={"y": {1.0: 5.0, math.inf: 9.0}},
        input_feature_buckets={"x0": {0.5: 60.0, math.inf: 120.0}},
        reference_input_ratios={"x0": {0.5: 0.5, math.inf: 1.0}},
        reference_prediction_class_ratios={("label", "0"): 0.3},
        reference_prediction_value_ratios={"y": {1.0: 0.4, math.inf: 1.0}},
        pods=2,
    )
    measured = MeasuredWindow(START, WindowResult(full, metrics(900, 9)), {"gpu": 0.5})
    record = window_to_record(measured, Traffic(10, 20, 1, 1))
    text = Recording(windows=[record]).model_dump_json(by_alias=True)
    back = record_to_window(Recording.model_validate_json(text).windows[0])
    assert back == measured
    data = json.loads(text)["windows"][0]
    assert data["canary"]["latency"] == {"0.005": 10.0, "0.1": 118.0, "+Inf": 120.0}
    assert data["canary"]["predictionClasses"] == {"label": {"0": 40.0, "1": 80.0}}
    assert (data["weight"], data["effectiveWeight"], data["canaryReady"]) == (10, 20, 1)


def test_a_baseline_and_a_window_without_data_round_trip() -> None:
    baseline = MeasuredWindow(START, None)
    assert record_to_window(window_to_record(baseline)) == baseline
    assert window_to_record(baseline).baseline
    empty = MeasuredWindow(START, WindowResult(None, None), {}, "no answer within 30s")
    assert record_to_window(window_to_record(empty)) == empty


def test_bad_recordings_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValidationError, match="requests"):
        Recording.model_validate(
            {"windows": [{"time": START.isoformat(), "canary": {"requests": -1}}]}
        )
    with pytest.raises(ValidationError, match="kind"):
        Recording.model_validate({"kind": "Something", "windows": []})
    with pytest.raises(ValidationError, match="bogus"):
        Recording.model_validate({"windows": [{"time": START.isoformat(), "bogus": 1}]})
    record = RecordedWindow.model_validate(
        {"time": START.isoformat(), "canary": {"latency": {"abc": 1}}}
    )
    with pytest.raises(ValueError, match="abc"):
        record_to_window(record)


def test_a_recording_holds_one_rollout_and_fits_a_configmap() -> None:
    first = window_to_record(window(30, metrics(10, 0), metrics(90, 0)))
    one = appended(None, "iris-a", "iris-s", first)
    two = appended(one, "iris-a", "iris-s", first)
    assert len(two.windows) == 2
    assert two.canary == "iris-a"
    other = appended(two, "iris-b", "iris-s", first)
    assert len(other.windows) == 1
    assert other.canary == "iris-b"
    many = two.model_copy(update={"windows": [first] * 500})
    text = fitted(many, max_bytes=20_000)
    assert len(text.encode()) <= 20_000
    kept = Recording.model_validate_json(text).windows
    assert 0 < len(kept) < 500


def source_of(windows: list[MeasuredWindow]) -> RecordingSource:
    """A recording that does not say how ready the pods were: they always were."""
    records = [window_to_record(MeasuredWindow(START, None))]
    records += [window_to_record(w) for w in windows]
    return RecordingSource(Recording(windows=records))


def test_a_bad_canary_is_rolled_back_at_the_interval_that_shows_it() -> None:
    policy = RolloutPolicySpec.model_validate(POLICY)
    good = [good_window(30 * i) for i in range(1, 3)]
    bad = [window(30 * i, metrics(100, 30), metrics(900, 9)) for i in range(3, 10)]
    result = replay(policy, source_of(good + bad))
    assert result.outcome == "RolledBack"
    assert result.interval == 3
    assert [i.verdict for i in result.intervals] == ["Passed", "Passed", "Failed"]
    assert "errorRate" in result.reason
    assert result.canary_requests == 700


def test_a_good_canary_is_promoted_through_every_step() -> None:
    policy = RolloutPolicySpec.model_validate(POLICY)
    windows = [good_window(30 * i) for i in range(1, 20)]
    result = replay(policy, source_of(windows))
    assert result.outcome == "Promoted"
    assert {i.verdict for i in result.intervals} == {"Passed"}
    assert {"RolloutStarted", "Promoted"} <= {e.reason for e in result.events}
    # The weights it was judged at follow the steps.
    assert next(i.weight for i in result.intervals) == 10.0
    assert 50.0 in [i.weight for i in result.intervals]


def test_too_few_windows_hold() -> None:
    policy = RolloutPolicySpec.model_validate(POLICY)
    result = replay(policy, source_of([window(30, metrics(100, 1), metrics(900, 9))]))
    assert result.outcome == "Held"
    assert len(result.intervals) == 1


def test_the_replay_waits_for_pods_the_recording_shows_not_ready() -> None:
    """At 50% the real rollout waited for its canary's pods: the windows measured meanwhile
    are judged at that step with the pods it had, as the operator judged them, and the next
    pause starts only once they are ready."""
    policy = RolloutPolicySpec.model_validate(POLICY)
    at_10, at_50 = Traffic(10, 10, 1, 1), Traffic(50, 17, 5, 1)
    records = [window_to_record(MeasuredWindow(START, None), at_10)]
    for i in range(1, 4):
        w = window(30 * i, metrics(100, 1), metrics(900, 9))
        records.append(window_to_record(w, at_10))
    for i in range(4, 8):  # weight 50, but only one of five pods ready: the pause waits
        w = window(30 * i, metrics(100, 1), metrics(900, 9))
        records.append(window_to_record(w, at_50))
    waiting = replay(policy, RecordingSource(Recording(windows=records, replicas=10)))
    assert waiting.outcome == "Held"
    assert len(waiting.intervals) == 7
    # Judged with the one ready canary pod of five it had, beside five of stable (1 in 6).
    assert [i.weight for i in waiting.intervals[3:]] == [16.67] * 4
    ready = [r.model_copy(update={"canary_ready": r.canary_replicas}) for r in records]
    at_once = replay(policy, RecordingSource(Recording(windows=ready, replicas=10)))
    assert 50.0 in [i.weight for i in at_once.intervals[3:]]


def test_another_judge_runs_through_the_same_state_machine() -> None:
    policy = RolloutPolicySpec.model_validate(POLICY)
    calls = []

    def counting(*args: Any) -> Any:
        calls.append(args)
        return judge(*args)

    windows = [window(30 * i, metrics(100, 1), metrics(900, 9)) for i in range(1, 20)]
    result = replay(policy, source_of(windows), judge=judged_by(counting))
    assert result.outcome == "Promoted"
    assert len(calls) == len(result.intervals)
    assert calls[1][6], "the evidence of the first interval reaches the second"


def test_a_policy_without_analysis_cannot_be_replayed() -> None:
    policy = RolloutPolicySpec.model_validate({"steps": [{"setWeight": 100}]})
    with pytest.raises(ValueError, match="no analysis"):
        replay(policy, source_of([]))


def write_recording(path: Path, windows: list[MeasuredWindow]) -> None:
    records = [window_to_record(MeasuredWindow(START, None))]
    records += [window_to_record(w) for w in windows]
    path.write_text(Recording(windows=records).model_dump_json(by_alias=True))


def test_the_cli_replays_a_policy_file_over_a_recording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        "apiVersion: canarium.dev/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: p}\nspec: "
        + json.dumps(POLICY)
    )
    recording = tmp_path / "rec.json"
    good = [good_window(30 * i) for i in range(1, 3)]
    bad = [window(30 * i, metrics(100, 30), metrics(900, 9)) for i in range(3, 6)]
    write_recording(recording, good + bad)
    assert main(["policy", "replay", str(policy_file), str(recording), "-o", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["outcome"], out["interval"]) == ("RolledBack", 3)
    assert [i["verdict"] for i in out["intervals"]] == ["Passed", "Passed", "Failed"]
    error_rate = next(c for c in out["intervals"][2]["checks"] if c["check"] == "errorRate")
    assert error_rate["verdict"] == "Failed"
    assert "ratio" in error_rate["reason"]
    assert main(["policy", "replay", str(policy_file), str(recording)]) == 0
    text = capsys.readouterr().out
    assert "outcome: RolledBack at interval 3" in text


def test_the_cli_says_what_is_wrong_with_its_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = tmp_path / "rec.json"
    write_recording(recording, [])
    no_analysis = tmp_path / "p.yaml"
    no_analysis.write_text("steps: [{setWeight: 100}]\n")
    assert main(["policy", "replay", str(no_analysis), str(recording)]) == 2
    assert "no analysis" in capsys.readouterr().err
    bad_policy = tmp_path / "bad.yaml"
    bad_policy.write_text("steps: []\n")
    assert main(["policy", "replay", str(bad_policy), str(recording)]) == 2
    assert "not a valid RolloutPolicy" in capsys.readouterr().err
    policy_file = tmp_path / "ok.yaml"
    policy_file.write_text(json.dumps(POLICY))
    broken = tmp_path / "broken.json"
    broken.write_text('{"windows": [{"time": "yesterday"}]}')
    assert main(["policy", "replay", str(policy_file), str(broken)]) == 2
    assert "not an AnalysisRecording" in capsys.readouterr().err
    assert main(["policy", "replay", str(policy_file), str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
