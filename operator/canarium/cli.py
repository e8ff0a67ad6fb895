"""`canarium`: the operator and its command-line tools (also `kubectl canarium`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from canarium import __version__


def _run(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    import canarium.handlers  # noqa: F401  (registers the handlers)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.pod_scrape:
        os.environ["CANARIUM_POD_SCRAPE"] = args.pod_scrape
    if not args.verbose:  # kopf logs every handled event at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_address)
    memo = kopf.Memo(namespaces=list(args.namespace), workers=args.workers)
    # kopf's default identity asks the passwd database for the user's name, which a numeric
    # non-root user (runAsUser 65532, no passwd entry) does not have.
    from kopf._core.engines.peering import Identity

    identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}@{os.getpid()}"
    asyncio.run(
        kopf.operator(
            identity=Identity(identity),
            clusterwide=not args.namespace,
            namespaces=list(args.namespace),
            standalone=args.peering is None,
            peering_name=args.peering,
            liveness_endpoint=args.liveness,
            memo=memo,
        )
    )
    return 0


def _crds(args: argparse.Namespace) -> int:
    from canarium import crdgen

    argv = ["--out", args.out]
    if args.check:
        argv.append("--check")
    if args.stdout:
        argv.append("--stdout")
    return crdgen.main(argv)


def _client_and_namespace(args: argparse.Namespace) -> tuple[Any, str]:
    from kubernetes import config

    from canarium.kube import Kube

    kube = Kube.from_environment()
    namespace = args.namespace
    if not namespace:
        try:
            _, active = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
            namespace = active.get("context", {}).get("namespace") or "default"
        except config.ConfigException:
            namespace = "default"
    return kube, namespace


def _mdep_ref(namespace: str, name: str) -> Any:
    from canarium.kube import ObjectRef

    return ObjectRef("canarium.dev/v1alpha1", "ModelDeployment", namespace, name)


def _status(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from canarium.api import ModelDeployment, RolloutPolicySpec
    from canarium.kube import KubeError, ObjectRef
    from canarium.statusview import render_status

    kube, namespace = _client_and_namespace(args)

    async def view() -> str | None:
        obj = await kube.get(_mdep_ref(namespace, args.name))
        if obj is None:
            return None
        mdep = ModelDeployment.model_validate(obj)
        policy = None
        rollout = mdep.spec.rollout
        if rollout and rollout.policy:
            policy = rollout.policy
        elif rollout and rollout.policy_ref:
            ref = ObjectRef(
                "canarium.dev/v1alpha1", "RolloutPolicy", namespace, rollout.policy_ref.name
            )
            body = await kube.get(ref)
            if body:
                try:
                    policy = RolloutPolicySpec.model_validate(body.get("spec") or {})
                except ValidationError:
                    policy = None
        return render_status(obj, policy)

    try:
        while True:
            text = asyncio.run(view())
            if text is None:
                print(f"modeldeployment {args.name!r} not found in {namespace}", file=sys.stderr)
                return 1
            if args.watch:
                print("\033[2J\033[H" + text, flush=True)
                time.sleep(args.interval)
            else:
                print(text)
                return 0
    except KeyboardInterrupt:
        return 0
    except KubeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _command(args: argparse.Namespace) -> int:
    """promote, abort, retry: a one-shot command the operator carries out once; pause and
    resume: the canarium.dev/paused annotation. The spec is never touched."""
    from canarium.kube import KubeError, resource_path
    from canarium.rollout import ANNOTATION_COMMAND, ANNOTATION_PAUSED

    kube, namespace = _client_and_namespace(args)
    verb = args.verb
    if verb == "promote" and args.full:
        verb = "promote-full"
    annotations: dict[str, str | None]
    if verb == "pause":
        annotations = {ANNOTATION_PAUSED: "true"}
    elif verb == "resume":
        annotations = {ANNOTATION_PAUSED: None}
    else:
        annotations = {ANNOTATION_COMMAND: f"{verb}@{time.time_ns()}"}
    path = resource_path("canarium.dev/v1alpha1", "ModelDeployment", namespace, args.name)
    try:
        asyncio.run(
            kube.request(
                "PATCH",
                path,
                body={"metadata": {"annotations": annotations}},
                content_type="application/merge-patch+json",
            )
        )
    except KubeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"modeldeployment.canarium.dev/{args.name} {verb} requested")
    return 0


def _recording(args: argparse.Namespace) -> int:
    """Print a ModelDeployment's analysis recording (the windows of its last rollout)."""
    from canarium.analysis.recording import RECORDING_KEY, recording_name
    from canarium.kube import KubeError, ObjectRef

    kube, namespace = _client_and_namespace(args)
    ref = ObjectRef("v1", "ConfigMap", namespace, recording_name(args.name))
    try:
        body = asyncio.run(kube.get(ref))
    except KubeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = ((body or {}).get("data") or {}).get(RECORDING_KEY)
    if not text:
        print(
            f"no analysis recording of modeldeployment {args.name!r} in {namespace} "
            "(it is made while a rollout is analysed)",
            file=sys.stderr,
        )
        return 1
    print(text)
    return 0


def _load_policy(path: str) -> Any:
    """A RolloutPolicy from a YAML or JSON file: a RolloutPolicy manifest, a ModelDeployment
    with an inline policy, or a bare policy spec."""
    import yaml
    from pydantic import ValidationError

    from canarium.api import RolloutPolicySpec

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a RolloutPolicy (a YAML mapping is expected)")
    kind = data.get("kind")
    if kind == "RolloutPolicy":
        data = data.get("spec") or {}
    elif kind == "ModelDeployment":
        data = ((data.get("spec") or {}).get("rollout") or {}).get("policy")
        if data is None:
            raise ValueError(
                f"{path}: the ModelDeployment has no inline policy (spec.rollout.policy)"
            )
    try:
        return RolloutPolicySpec.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{path}: not a valid RolloutPolicy: {exc}") from exc


def _replay(args: argparse.Namespace) -> int:
    """Run the state machine and judge over a recording and print the decisions."""
    import json

    from pydantic import ValidationError

    from canarium.analysis.recording import Recording
    from canarium.replay import RecordingSource, replay

    try:
        policy = _load_policy(args.policy)
        if policy.analysis is None:
            raise ValueError(f"{args.policy}: the policy has no analysis: nothing to replay")
        with open(args.recording, encoding="utf-8") as f:
            recording = Recording.model_validate_json(f.read())
    except (OSError, ValueError) as exc:
        text = str(exc)
        if isinstance(exc, ValidationError):
            text = f"{args.recording}: not an AnalysisRecording: {exc}"
        print(f"error: {text}", file=sys.stderr)
        return 2
    result = replay(policy, RecordingSource(recording))
    if args.output == "json":
        print(json.dumps(result.dump(), indent=2))
        return 0
    for interval in result.intervals:
        checks = "; ".join(
            f"{m.check} {m.verdict}" for m in interval.measurements if m.check != "samples"
        )
        print(
            f"interval {interval.index:>3}  {interval.time:%H:%M:%S}  weight "
            f"{interval.weight:>5.1f}%  {interval.verdict:<12}  {checks}"
        )
    at = f" at interval {result.interval}" if result.interval else ""
    print(f"outcome: {result.outcome}{at}: {result.reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="canarium",
        description="Canarium: declarative ML model deployments with canary rollouts.",
    )
    parser.add_argument("--version", action="version", version=f"canarium {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the operator (in the cluster, or from a laptop against KUBECONFIG)",
        description="Run the operator against the cluster of the in-cluster config or KUBECONFIG.",
    )
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; default: all namespaces)",
    )
    run.add_argument(
        "--peering",
        metavar="NAME",
        help="kopf peering object for active/standby HA (needs the kopf peering CRDs); "
        "default: standalone",
    )
    run.add_argument("--workers", type=int, default=8, help="concurrent reconciles (default 8)")
    run.add_argument(
        "--metrics-port", type=int, default=8080, help="Prometheus metrics port (0: off)"
    )
    run.add_argument("--metrics-address", default="0.0.0.0", help="metrics bind address")
    run.add_argument(
        "--liveness",
        default="http://0.0.0.0:8081/healthz",
        help="kopf liveness endpoint URL (default http://0.0.0.0:8081/healthz)",
    )
    run.add_argument(
        "--pod-scrape",
        choices=["pod-ip", "api-proxy"],
        help="how the podMetrics analysis reaches serving pods (env CANARIUM_POD_SCRAPE; "
        "default: pod-ip inside a cluster, api-proxy from outside)",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=_run)

    crds = commands.add_parser("crds", help="write or check the CRD YAML generated from the API")
    crds.add_argument("--out", default="crds", help="directory of the CRD files (default crds/)")
    crds.add_argument("--check", action="store_true", help="fail if the files are stale")
    crds.add_argument("--stdout", action="store_true", help="print the CRDs instead")
    crds.set_defaults(func=_crds)

    def target(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("name", help="the ModelDeployment")
        sub.add_argument("-n", "--namespace", help="its namespace (default: the context's)")

    status = commands.add_parser("status", help="show a ModelDeployment's rollout")
    target(status)
    status.add_argument("-w", "--watch", action="store_true", help="refresh until interrupted")
    status.add_argument("--interval", type=float, default=2.0, help="refresh period (seconds)")
    status.set_defaults(func=_status)
    helps = {
        "promote": "end the current pause or step (with --full: skip all remaining steps)",
        "abort": "roll the canary back now: traffic to stable, canary scaled to zero",
        "retry": "start a rolled-back or aborted rollout again from the first step",
        "pause": "hold the rollout at its current step (analysis keeps running)",
        "resume": "let a paused rollout go on",
    }
    recording = commands.add_parser(
        "recording",
        help="print a ModelDeployment's analysis recording (for `canarium policy replay`)",
    )
    target(recording)
    recording.set_defaults(func=_recording)
    policy = commands.add_parser("policy", help="work with RolloutPolicies offline")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    replay = policy_commands.add_parser(
        "replay",
        help="run the rollout state machine and judge over a recording and print its decisions",
        description="Replay POLICY (a RolloutPolicy YAML/JSON file) over RECORDING (an "
        "AnalysisRecording, e.g. from `kubectl canarium recording NAME`): every judged "
        "interval's verdicts and the outcome (Promoted, RolledBack at interval N, Paused, Held).",
    )
    replay.add_argument("policy", help="RolloutPolicy file (YAML or JSON)")
    replay.add_argument("recording", help="AnalysisRecording file (JSON)")
    replay.add_argument("-o", "--output", choices=["text", "json"], default="text")
    replay.set_defaults(func=_replay)
    for verb, text in helps.items():
        sub = commands.add_parser(verb, help=text, description=text)
        target(sub)
        if verb == "promote":
            sub.add_argument("--full", action="store_true", help="promote to the end at once")
        sub.set_defaults(func=_command, verb=verb)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
