"""`canarium`: the operator and its command-line tools (also `kubectl canarium`).

The client commands behave like kubectl's: `-n/--namespace`, `--kubeconfig` and `--context`
go anywhere on the line (kubectl hands a plugin every argument after its name, and KUBECONFIG
in the environment); an error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from canarium import __version__

# Exit codes (also in `--help`): kubectl's convention.
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EPILOG = """exit codes:
  0  success
  1  error: the object does not exist, the cluster cannot be reached, the kubeconfig or
     context is unusable, or the API server refused the request (one line on stderr)
  2  usage error: unknown command or option, or an input file that cannot be read

-n/--namespace, --kubeconfig and --context may be given anywhere on the line
(`kubectl canarium -n ml status iris -o json`); the namespace defaults to the context's."""
MDEP_API = "canarium.dev/v1alpha1"


class CliError(Exception):
    """An expected failure of a client command: printed as one line, exit code 1."""


def _run(args: argparse.Namespace) -> int:
    if getattr(args, "context", None):
        print("error: `run` uses the kubeconfig's current context; --context is for the "
              "client commands", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    try:
        import kopf
        from prometheus_client import start_http_server

        import canarium.handlers  # noqa: F401  (registers the handlers)
    except ModuleNotFoundError as exc:  # a plain install is the CLI only
        print(f"error: `canarium run` needs the operator extra (no module {exc.name!r}): "
              "pip install 'canarium[operator]'", file=sys.stderr)  # fmt: skip
        return EXIT_ERROR

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if getattr(args, "kubeconfig", None):  # kopf and the client both read KUBECONFIG
        os.environ["KUBECONFIG"] = args.kubeconfig
    if args.pod_scrape:
        os.environ["CANARIUM_POD_SCRAPE"] = args.pod_scrape
    if not args.verbose:  # kopf logs every handled event at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_address)
    # `canarium -n ns run` (the global option, a string) and `run -n a -n b` (a list) alike.
    given = getattr(args, "namespace", None) or []
    namespaces = [given] if isinstance(given, str) else list(given)
    lease = None
    if args.leader_elect:
        from canarium.leader import LeaseConfig

        lease_namespace = args.leader_election_namespace or _own_namespace(namespaces)
        if lease_namespace is None:
            print("error: --leader-elect needs --leader-election-namespace here (no pod "
                  "namespace, and not exactly one watched namespace)", file=sys.stderr)  # fmt: skip
            return EXIT_USAGE
        try:
            lease = LeaseConfig(
                namespace=lease_namespace,
                name=args.leader_election_id,
                # Unique per process, as client-go's hostname_uuid.
                identity=f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4()}",
                lease_duration=args.lease_duration,
                renew_deadline=args.renew_deadline,
                retry_period=args.retry_period,
            )
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    memo = kopf.Memo(namespaces=namespaces, workers=args.workers, lease=lease)
    # kopf's default identity asks the passwd database for the user's name, which a numeric
    # non-root user (runAsUser 65532, no passwd entry) does not have.
    from kopf._core.engines.peering import Identity

    identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}@{os.getpid()}"
    asyncio.run(
        kopf.operator(
            identity=Identity(identity),
            clusterwide=not namespaces,
            namespaces=namespaces,
            # kopf's own peering stays off: the Lease decides who reconciles.
            standalone=True,
            liveness_endpoint=args.liveness,
            memo=memo,
        )
    )
    return 0


def _own_namespace(watched: list[str]) -> str | None:
    """Where the leader Lease lives by default: the pod's namespace, else the one namespace
    the operator watches."""
    own = os.environ.get("POD_NAMESPACE")
    if own:
        return own
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip() or None
    except OSError:
        pass
    return watched[0] if len(watched) == 1 else None


def _crds(args: argparse.Namespace) -> int:
    from canarium import crdgen

    argv = ["--out", args.out]
    if args.check:
        argv.append("--check")
    if args.stdout:
        argv.append("--stdout")
    return crdgen.main(argv)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def context_namespace(
    contexts: Sequence[dict[str, Any]], active: dict[str, Any] | None, name: str | None
) -> str | None:
    """The namespace a kubeconfig context names: the context `name` (--context), else the
    current one; None when it names none."""
    chosen = active
    if name is not None:
        chosen = next((c for c in contexts if c.get("name") == name), None)
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else None


SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _default_namespace(kubeconfig: str | None, context: str | None) -> str:
    """kubectl's default: the context's namespace, in a pod its own, else `default`."""
    from kubernetes import config

    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        contexts, active = [], None
    namespace = context_namespace(contexts, active, context)
    if namespace:
        return namespace
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def _connect(args: argparse.Namespace) -> tuple[Any, str]:
    """The API client and the namespace for a client command, from the global options."""
    from kubernetes import config

    from canarium.kube import Kube

    kubeconfig: str | None = getattr(args, "kubeconfig", None)
    context: str | None = getattr(args, "context", None)
    if kubeconfig:
        missing = [p for p in kubeconfig.split(os.pathsep) if p and not os.path.exists(p)]
        if missing:
            raise CliError(f"kubeconfig {missing[0]}: no such file")
    try:
        if context is not None:
            contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            if all(c.get("name") != context for c in contexts):
                raise CliError(f'context "{context}" not found in the kubeconfig')
        kube = Kube.from_environment(kubeconfig=kubeconfig, context=context)
    except config.ConfigException as exc:
        raise CliError(f"no usable kubeconfig: {_one_line(exc)}") from None
    namespace = getattr(args, "namespace", None) or _default_namespace(kubeconfig, context)
    return kube, namespace


def not_found_message(body: str, what: str, name: str, namespace: str) -> str:
    """A 404's meaning: the object is missing, or the cluster does not serve the kind at all
    (the CRDs are not installed): the API server names the object only in the first case."""
    import json

    try:
        details = json.loads(body).get("details") or {}
    except (ValueError, AttributeError):
        details = {}
    if isinstance(details, dict) and details.get("name"):
        return f'{what} "{name}" not found in namespace "{namespace}"'
    return (
        f"the cluster does not serve {what}s ({MDEP_API}): are Canarium's CRDs installed? "
        "(kubectl apply -k manifests/install)"
    )


def unreachable_message(exc: BaseException) -> str:
    """What a connection failure says in one line: the server's address and the cause
    (urllib3's MaxRetryError carries its pool and the underlying error)."""
    import urllib3

    where = ""
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.pool is not None:
        where = f" at {exc.pool.scheme}://{exc.pool.host}:{exc.pool.port}"
    reason: BaseException = getattr(exc, "reason", None) or exc
    # e.g. NewConnectionError from ConnectionRefusedError: the OS's words are the clearest.
    detail = getattr(reason.__cause__ or reason.__context__, "strerror", None) or _one_line(reason)
    return f"cannot reach the Kubernetes API server{where}: {detail}"


def _client_command(
    func: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """A command that talks to the cluster: its expected failures become one line on stderr
    and exit code 1 (bugs still show their traceback)."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        import urllib3

        from canarium.kube import KubeError, Unreachable

        try:
            return func(args)
        except CliError as exc:
            message = str(exc)
        except urllib3.exceptions.HTTPError as exc:
            message = unreachable_message(exc)
        except Unreachable as exc:
            message = unreachable_message(exc.__cause__ or exc)
        except KubeError as exc:
            message = _one_line(exc)
        print(f"error: {message}", file=sys.stderr)
        return EXIT_ERROR

    return wrapper


async def _get_object(kube: Any, kind: str, namespace: str, name: str) -> dict[str, Any]:
    """A Canarium object (`kind`: ModelDeployment, ModelRetraining); a 404 is a CliError."""
    from canarium.kube import KubeError, resource_path

    try:
        obj: dict[str, Any] = await kube.request(
            "GET", resource_path(MDEP_API, kind, namespace, name)
        )
    except KubeError as exc:
        if exc.status == 404:
            raise CliError(not_found_message(exc.body, kind.lower(), name, namespace)) from None
        raise
    return obj


async def _get_mdep(kube: Any, namespace: str, name: str) -> dict[str, Any]:
    return await _get_object(kube, "ModelDeployment", namespace, name)


async def _patch_annotations(
    kube: Any, kind: str, namespace: str, name: str, annotations: dict[str, str | None]
) -> dict[str, Any]:
    """A JSON merge patch of the object's metadata.annotations alone (None deletes one): the
    operator's API for a person's commands; the spec is never touched. Returns the object."""
    from canarium.kube import KubeError, resource_path

    try:
        obj: dict[str, Any] = await kube.request(
            "PATCH",
            resource_path(MDEP_API, kind, namespace, name),
            body={"metadata": {"annotations": annotations}},
            content_type="application/merge-patch+json",
        )
    except KubeError as exc:
        if exc.status == 404:
            raise CliError(not_found_message(exc.body, kind.lower(), name, namespace)) from None
        raise
    return obj


def dump(document: Any, output: str) -> str:
    """`-o json` / `-o yaml` of an object or a List."""
    import json

    import yaml

    if output == "json":
        return json.dumps(document, indent=2)
    return str(yaml.safe_dump(document, default_flow_style=False, sort_keys=False)).rstrip("\n")


# `status KIND/NAME`: the kinds it shows, by every name kubectl knows them by (case-insensitive).
STATUS_KINDS: dict[str, str] = {
    alias: kind
    for kind, plural, short in (
        ("ModelDeployment", "modeldeployments", "mdep"),
        ("ModelRetraining", "modelretrainings", "mretrain"),
    )
    for name in (kind.lower(), plural)
    for alias in (name, f"{name}.canarium.dev", short)
}


def status_target(word: str) -> tuple[str, str]:
    """The kind and name `status` shows: NAME is a ModelDeployment's; KIND/NAME (kubectl's
    form: mdep/NAME, mretrain/NAME, modelretraining/NAME, ...) names the kind. Raises
    ValueError for an unknown kind or an empty name."""
    kind_word, slash, name = word.rpartition("/")
    kind = STATUS_KINDS.get(kind_word.lower()) if slash else "ModelDeployment"
    if kind is None:
        raise ValueError(
            f'unknown kind "{kind_word}" in "{word}": status shows modeldeployments (NAME, '
            "mdep/NAME) and modelretrainings (mretrain/NAME)"
        )
    if not name:
        raise ValueError(f'"{word}" names no object')
    return kind, name


async def _deployment_view(kube: Any, namespace: str, name: str) -> str:
    """`status NAME`: the ModelDeployment, its policy's steps and, while it serves a retrained
    candidate, that candidate's sha256 from its ModelRetraining."""
    from pydantic import ValidationError

    from canarium.api import ModelDeployment, RolloutPolicySpec
    from canarium.kube import KubeError, ObjectRef
    from canarium.statusview import render_status

    obj = await _get_mdep(kube, namespace, name)
    mdep = ModelDeployment.model_validate(obj)
    policy = None
    rollout = mdep.spec.rollout
    if rollout and rollout.policy:
        policy = rollout.policy
    elif rollout and rollout.policy_ref:
        ref = ObjectRef(MDEP_API, "RolloutPolicy", namespace, rollout.policy_ref.name)
        body = await kube.get(ref)
        if body:
            try:
                policy = RolloutPolicySpec.model_validate(body.get("spec") or {})
            except ValidationError:
                policy = None
    retraining = None
    retrained = mdep.status.retrained
    if retrained is not None:
        ref = ObjectRef(MDEP_API, "ModelRetraining", namespace, retrained.retraining)
        try:  # only for the candidate's sha256: not worth failing the view over
            retraining = await kube.get(ref)
        except KubeError:
            retraining = None
    return render_status(obj, policy, retraining)


async def _retraining_view(kube: Any, namespace: str, name: str) -> str:
    """`status mretrain/NAME`: the ModelRetraining."""
    from canarium.statusview import render_retraining

    return render_retraining(await _get_object(kube, "ModelRetraining", namespace, name))


@_client_command
def _status(args: argparse.Namespace) -> int:
    kube, namespace = _connect(args)
    kind: str = getattr(args, "kind", "ModelDeployment")
    if args.output:
        obj = asyncio.run(_get_object(kube, kind, namespace, args.name))
        print(dump(obj.get("status") or {}, args.output))
        return EXIT_OK
    view = _retraining_view if kind == "ModelRetraining" else _deployment_view
    try:
        while True:
            text = asyncio.run(view(kube, namespace, args.name))
            if not args.watch:
                print(text)
                return EXIT_OK
            print("\033[2J\033[H" + text, flush=True)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return EXIT_OK


@_client_command
def _list(args: argparse.Namespace) -> int:
    """ModelDeployments of a namespace (or all of them) as `kubectl get` prints them."""
    from datetime import UTC, datetime

    from canarium.kube import KubeError
    from canarium.statusview import render_list

    kube, namespace = _connect(args)
    scope = None if args.all_namespaces else namespace

    async def fetch() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async def policies() -> list[dict[str, Any]]:
            try:  # only for the STEP column's total: not worth failing the list over
                listed: list[dict[str, Any]] = await kube.list(MDEP_API, "RolloutPolicy", scope)
            except KubeError:
                return []
            return listed

        try:
            items, listed = await asyncio.gather(
                kube.list(MDEP_API, "ModelDeployment", scope, labels=args.selector or ""),
                policies(),
            )
        except KubeError as exc:
            if exc.status == 404:
                raise CliError(not_found_message(exc.body, "modeldeployment", "", "")) from None
            raise
        return items, listed

    items, rollout_policies = asyncio.run(fetch())
    if args.output:
        print(dump({"apiVersion": "v1", "kind": "List", "items": items}, args.output))
        return EXIT_OK
    if not items:
        where = "" if args.all_namespaces else f" in {namespace} namespace"
        print(f"No resources found{where}.", file=sys.stderr)
        return EXIT_OK
    steps = {
        (p["metadata"].get("namespace", ""), p["metadata"]["name"]): len(
            (p.get("spec") or {}).get("steps") or []
        )
        for p in rollout_policies
    }
    print(render_list(items, steps, datetime.now(UTC), all_namespaces=args.all_namespaces))
    return EXIT_OK


@_client_command
def _command(args: argparse.Namespace) -> int:
    """promote, abort, retry: a one-shot command the operator carries out once; pause and
    resume: the canarium.dev/paused annotation. The spec is never touched."""
    from canarium.rollout import ANNOTATION_COMMAND, ANNOTATION_PAUSED

    kube, namespace = _connect(args)
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
    asyncio.run(_patch_annotations(kube, "ModelDeployment", namespace, args.name, annotations))
    print(f"modeldeployment.canarium.dev/{args.name} {verb} requested")
    return EXIT_OK


def retrain_target(obj: dict[str, Any], verb: str, run: str) -> tuple[str, str]:
    """The run (and its model's version) whose candidate `retrain --approve/--discard` names:
    `run`, else the current candidate's. Raises CliError when the ModelRetraining has no such
    candidate: none, already approved (approve), or the candidate of another run; the
    operator would ignore the annotation."""
    from canarium.api.modelretraining import ModelRetrainingStatus

    name = (obj.get("metadata") or {}).get("name", "")
    status = ModelRetrainingStatus.model_validate(obj.get("status") or {})
    candidate = status.candidate
    phase = f"phase {status.phase or 'Pending'}"
    if candidate is None:
        wanted = "awaiting approval" if verb == "approve" else "to discard"
        raise CliError(f'modelretraining "{name}" has no candidate {wanted} ({phase})')
    if verb == "approve" and candidate.approved:
        raise CliError(
            f'modelretraining "{name}" has no candidate awaiting approval: candidate '
            f"{candidate.model.version} of run {candidate.run} is approved already"
        )
    if run and run != candidate.run:
        raise CliError(
            f'run "{run}" is not the candidate of modelretraining "{name}": the candidate is '
            f"{candidate.model.version} of run {candidate.run}"
        )
    return candidate.run, candidate.model.version


@_client_command
def _retrain(args: argparse.Namespace) -> int:
    """A ModelRetraining's annotations: canarium.dev/retrain-requested-at (a new value starts a
    run), canarium.dev/approve-run or canarium.dev/discard-run (a run's candidate). The spec
    is never touched."""
    from datetime import UTC, datetime

    from canarium.api.modelretraining import (
        ANNOTATION_APPROVE,
        ANNOTATION_DISCARD,
        ANNOTATION_RETRAIN,
    )

    kube, namespace = _connect(args)
    name: str = args.name
    if args.approve is None and args.discard is None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        obj = asyncio.run(
            _patch_annotations(kube, "ModelRetraining", namespace, name, {ANNOTATION_RETRAIN: now})
        )
        note = ""
        if (obj.get("spec") or {}).get("suspend"):
            note = " (it is suspended: the run starts once spec.suspend is false)"
        print(f"modelretraining.canarium.dev/{name} retrain requested at {now}{note}")
        return EXIT_OK
    verb, annotation, given = (
        ("approve", ANNOTATION_APPROVE, args.approve)
        if args.approve is not None
        else ("discard", ANNOTATION_DISCARD, args.discard)
    )
    current = asyncio.run(_get_object(kube, "ModelRetraining", namespace, name))
    run, version = retrain_target(current, verb, given)
    asyncio.run(_patch_annotations(kube, "ModelRetraining", namespace, name, {annotation: run}))
    print(
        f"modelretraining.canarium.dev/{name} {verb} of run {run} (candidate {version}) requested"
    )
    return EXIT_OK


@_client_command
def _recording(args: argparse.Namespace) -> int:
    """Print a ModelDeployment's analysis recording (the windows of its last rollout)."""
    from canarium.analysis.recording import RECORDING_KEY, recording_name
    from canarium.kube import ObjectRef

    kube, namespace = _connect(args)
    ref = ObjectRef("v1", "ConfigMap", namespace, recording_name(args.name))
    body = asyncio.run(kube.get(ref))
    text = ((body or {}).get("data") or {}).get(RECORDING_KEY)
    if not text:
        raise CliError(
            f"no analysis recording of modeldeployment {args.name!r} in {namespace} "
            "(it is made while a rollout is analysed)"
        )
    print(text)
    return EXIT_OK


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


# What `canarium model build` imports from the `build` extra (the base install is the CLI's).
BUILD_MODULES = ("numpy", "sklearn", "skl2onnx", "onnx", "onnxruntime", "joblib", "orjson")
MODEL_BUILD_EPILOG = """\
The estimator file is unpickled (joblib.load): that runs code from the file, so give it only
files you trust, as for any pickle.

Held-out scores (accuracy and f1_macro, or r2 and mae, from the ONNX model's predictions) come
from --holdout FILE, or from a seeded split of DATA (--holdout-fraction, default 0.2, --seed).
The split's rows must not be rows the estimator was fitted on: with an estimator fitted on all
of DATA, give --holdout data it never saw, or --fit to fit it here on the training part.

Writes OUT/model.onnx (reference statistics inside), model.reference.json and, last,
model.manifest.json (the version, the estimator, the features, the training and held-out data's
row counts and sha256 fingerprints, the scores, the library versions).

exit codes:
  0  success
  1  error: the build extra is missing, the estimator is not fitted or cannot be converted to
     ONNX, the output cannot be written or uploaded (one line on stderr)
  2  usage error: unknown or conflicting options, or an input file that cannot be read"""


def _model_build(args: argparse.Namespace) -> int:
    import importlib

    try:
        for module in BUILD_MODULES:
            importlib.import_module(module)
        from canarium import modelbuild
    except ModuleNotFoundError as exc:  # a plain install is the CLI only
        print(f"error: `canarium model build` needs the build extra (no module {exc.name!r}): "
              "pip install 'canarium[build]'", file=sys.stderr)  # fmt: skip
        return EXIT_ERROR
    try:
        return modelbuild.run(args, args.output)
    except modelbuild.BuildError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code


def _model_parser(commands: Any) -> None:
    from canarium_serving import contract

    model = commands.add_parser("model", help="package models (needs the build extra)")
    model_commands = model.add_subparsers(dest="model_command", required=True, metavar="COMMAND")
    build = model_commands.add_parser(
        "build",
        help="a fitted scikit-learn estimator and its data -> model.onnx, reference "
        "statistics, sha256 and manifest",
        description="Package a fitted scikit-learn estimator (or pipeline) for Canarium: "
        "convert it to ONNX\nwith reference statistics of DATA, score it on held-out data and "
        "write a manifest.",
        epilog=MODEL_BUILD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument(
        "estimator", metavar="ESTIMATOR", help="a joblib or pickle file (trusted ones only)"
    )
    build.add_argument(
        "data",
        metavar="DATA",
        help="its training data: CSV with a header, .npy (features) or .npz (arrays X, y and "
        "optionally feature_names)",
    )
    build.add_argument("--target", metavar="COLUMN", help="the CSV column of the labels")
    build.add_argument("--labels", metavar="FILE", help="the labels: .npy, or a one-column CSV")
    build.add_argument(
        "--feature-names",
        metavar="A,B,...",
        help="the features in the model's input order: the CSV columns to take (default: the "
        "estimator's feature_names_in_, else every column but --target), or names for .npy",
    )
    build.add_argument("--holdout", metavar="FILE", help="held-out data, as DATA")
    build.add_argument("--holdout-labels", metavar="FILE", help="its labels, as --labels")
    build.add_argument(
        "--holdout-fraction",
        type=float,
        metavar="F",
        help="hold out this fraction of DATA instead (default 0.2; 0: no held-out scores)",
    )
    build.add_argument("--seed", type=int, default=0, help="the split's seed (default 0)")
    build.add_argument(
        "--fit",
        action="store_true",
        help="fit the estimator on the training part of DATA first (it may come unfitted)",
    )
    build.add_argument("--name", help=f"the model's name (default: ${contract.ENV_MODEL_NAME})")
    build.add_argument(
        "--version", help=f"the model's version (default: ${contract.ENV_MODEL_VERSION})"
    )
    build.add_argument(
        "--out",
        metavar="DIR",
        help="where to write (default: NAME-VERSION; with --upload, a temporary folder)",
    )
    build.add_argument(
        "--upload",
        nargs="?",
        const="",
        metavar="URI",
        help="then upload the folder to URI (file://, s3://, gs://, az://; default: "
        f"${contract.TRAINING_ENV_OUTPUT_URI}), the manifest last",
    )
    build.add_argument("--bins", type=int, default=10, help="reference histogram bins (10)")
    build.add_argument(
        "-o", "--output", choices=["json", "yaml"], help="print the result as JSON or YAML"
    )
    build.set_defaults(func=_model_build)


def _retrain_parser(client: Callable[[str, str], argparse.ArgumentParser]) -> None:
    retrain = client(
        "retrain",
        "start a ModelRetraining's run now, or approve or discard its candidate",
    )
    # NAME first: `--approve NAME` would take NAME for the run.
    retrain.usage = (
        "%(prog)s NAME [--approve [RUN] | --discard [RUN]] [-n NAMESPACE] [--kubeconfig PATH] "
        "[--context NAME]"
    )
    retrain.add_argument("name", metavar="NAME", help="the ModelRetraining")
    choice = retrain.add_mutually_exclusive_group()
    choice.add_argument(
        "--approve",
        nargs="?",
        const="",
        metavar="RUN",
        help="approve the candidate awaiting approval (spec.approval Manual): RUN's, by "
        "default the current candidate's",
    )
    choice.add_argument(
        "--discard",
        nargs="?",
        const="",
        metavar="RUN",
        help="discard the candidate, back to spec.model: RUN's, by default the current candidate's",
    )
    retrain.set_defaults(func=_retrain)


def cluster_options(default: Any) -> argparse.ArgumentParser:
    """-n/--namespace, --kubeconfig and --context, accepted before the command (top level:
    `default` None) and after it (`default` SUPPRESS: a subcommand that was not given one keeps
    what the top level parsed, as argparse copies a subparser's every value over it)."""
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("cluster options (anywhere on the line, as kubectl's)")
    group.add_argument(
        "-n",
        "--namespace",
        default=default,
        help="the namespace (default: the context's, else `default`)",
    )
    group.add_argument(
        "--kubeconfig",
        metavar="PATH",
        default=default,
        help="kubeconfig file (default: KUBECONFIG, else ~/.kube/config; in a pod: its own "
        "service account)",
    )
    group.add_argument(
        "--context",
        metavar="NAME",
        default=default,
        help="kubeconfig context (default: the current one)",
    )
    return options


def leader_election_options(run: argparse.ArgumentParser) -> None:
    """`canarium run`'s leader election flags (controller-runtime's names and defaults)."""
    run.add_argument(
        "--leader-elect",
        action="store_true",
        help="active/standby replicas: reconcile only while holding a coordination.k8s.io "
        "Lease (the installs set it)",
    )
    run.add_argument(
        "--leader-election-id",
        metavar="NAME",
        default="canarium-operator",
        help="the Lease's name (default canarium-operator)",
    )
    run.add_argument(
        "--leader-election-namespace",
        metavar="NS",
        help="the Lease's namespace (default: the pod's namespace, POD_NAMESPACE or the "
        "service account's, else the one watched namespace)",
    )
    run.add_argument(
        "--lease-duration",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="how long standbys wait before taking a Lease that is not renewed (default 15)",
    )
    run.add_argument(
        "--renew-deadline",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="the leader stops writing when it has not renewed for this long (default 10)",
    )
    run.add_argument(
        "--retry-period",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how often the Lease is renewed or tried (default 2)",
    )


def build_parser() -> argparse.ArgumentParser:
    common = cluster_options(argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="canarium",
        description="Canarium: declarative ML model deployments with canary rollouts.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[cluster_options(None)],
    )
    parser.add_argument("--version", action="version", version=f"canarium {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def client(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=text,
            description=text,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
        )

    run = commands.add_parser(
        "run",
        help="run the operator (in the cluster, or from a laptop against KUBECONFIG)",
        description="Run the operator against the cluster of the in-cluster config or KUBECONFIG.",
    )
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=argparse.SUPPRESS,
        help="watch only this namespace (repeatable; default: all namespaces)",
    )
    run.add_argument(
        "--kubeconfig",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="kubeconfig file (sets KUBECONFIG; default: in-cluster config, else KUBECONFIG)",
    )
    leader_election_options(run)
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

    listing = client("list", "list ModelDeployments: phase, versions, canary weight, step, age")
    listing.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="across all namespaces (adds a NAMESPACE column)",
    )
    listing.add_argument("-l", "--selector", help="label selector, e.g. team=ml")
    listing.add_argument(
        "-o", "--output", choices=["json", "yaml"], help="the objects as a List instead"
    )
    listing.set_defaults(func=_list)

    status = client(
        "status",
        "show a ModelDeployment's rollout (NAME), or a ModelRetraining's runs (mretrain/NAME)",
    )
    status.add_argument(
        "name",
        metavar="[KIND/]NAME",
        help="a ModelDeployment (NAME or mdep/NAME), or a ModelRetraining (mretrain/NAME, "
        "modelretraining/NAME)",
    )
    status.add_argument("-w", "--watch", action="store_true", help="refresh until interrupted")
    status.add_argument("--interval", type=float, default=2.0, help="refresh period (seconds)")
    status.add_argument(
        "-o", "--output", choices=["json", "yaml"], help="print the object's status as JSON or YAML"
    )
    status.set_defaults(func=_status)
    helps = {
        "promote": "end the current pause or step (with --full: skip all remaining steps)",
        "abort": "roll the canary back now: traffic to stable, canary scaled to zero",
        "retry": "start a rolled-back or aborted rollout again from the first step",
        "pause": "hold the rollout at its current step (analysis keeps running)",
        "resume": "let a paused rollout go on",
    }
    recording = client(
        "recording",
        "print a ModelDeployment's analysis recording (for `canarium policy replay`)",
    )
    recording.add_argument("name", help="the ModelDeployment")
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
    _model_parser(commands)
    for verb, text in helps.items():
        sub = client(verb, text)
        sub.add_argument("name", help="the ModelDeployment")
        if verb == "promote":
            sub.add_argument("--full", action="store_true", help="promote to the end at once")
        sub.set_defaults(func=_command, verb=verb)
    _retrain_parser(client)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "watch", False) and getattr(args, "output", None):
        parser.error("status --watch shows the text view; -o json|yaml prints once")
    if args.command == "status":
        try:
            args.kind, args.name = status_target(args.name)
        except ValueError as exc:
            _subcommands(parser)["status"].error(str(exc))
    result: int = args.func(args)
    return result


# --- completion: kubectl runs `kubectl_complete-canarium ARGS... PARTIAL` (kubectl >= 1.26) ---

COMPLETE_NO_FILES, COMPLETE_FILES = ":4", ":0"  # cobra's ShellCompDirective lines


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option(parser: argparse.ArgumentParser, word: str) -> argparse.Action | None:
    return next((a for a in parser._actions if word in a.option_strings), None)


@dataclasses.dataclass
class _Line:
    """A command line read as far as it goes: the command's parser, its verb, how many
    positionals it has, the option values given and the option still waiting for one."""

    parser: argparse.ArgumentParser
    verb: str | None = None
    positionals: int = 0
    given: dict[str, str] = dataclasses.field(default_factory=dict)
    pending: argparse.Action | None = None


def _read_line(parser: argparse.ArgumentParser, words: Sequence[str]) -> _Line:
    line = _Line(parser)
    for word in words:
        if line.pending is not None:
            line.given[line.pending.dest], line.pending = word, None
        elif word.startswith("-"):
            name, eq, value = word.partition("=")
            action = _option(line.parser, name) or _option(parser, name)
            if action is not None and action.nargs != 0:
                if eq:
                    line.given[action.dest] = value
                else:
                    line.pending = action
        elif line.verb is None and word in _subcommands(parser):
            line.verb, line.parser = word, _subcommands(parser)[word]
        else:
            line.positionals += 1
    return line


def _option_values(
    action: argparse.Action,
    given: dict[str, str],
    lookup: Callable[[str, dict[str, str]], list[str]],
) -> list[str]:
    if action.choices:
        return [str(c) for c in action.choices]
    kinds = {"namespace": "namespaces", "context": "contexts"}
    return lookup(kinds[action.dest], given) if action.dest in kinds else []


# What a command's NAME is (the others' are ModelDeployments), and the kinds `lookup` lists.
NAME_KINDS = {"retrain": "modelretrainings"}
LOOKUP_KINDS = {"ModelDeployment": "modeldeployments", "ModelRetraining": "modelretrainings"}


def completions(
    parser: argparse.ArgumentParser,
    words: Sequence[str],
    partial: str,
    lookup: Callable[[str, dict[str, str]], list[str]],
) -> tuple[list[str], str]:
    """What may come next after `words` (the line so far) for the word `partial`: commands,
    options, option values, ModelDeployment names (ModelRetraining names for `retrain` and
    `status mretrain/...`). `lookup(kind, options)` asks the cluster for "modeldeployments",
    "modelretrainings", "namespaces" or "contexts" with the cluster options given so far.
    Returns the candidates and cobra's directive line (no file names but for --kubeconfig)."""
    line = _read_line(parser, words)
    candidates: list[str] = []
    if line.pending is not None:  # the value of an option
        if line.pending.dest == "kubeconfig":
            return [], COMPLETE_FILES
        candidates = _option_values(line.pending, line.given, lookup)
    elif partial.startswith("-"):
        candidates = sorted({o for a in line.parser._actions for o in a.option_strings})
    elif line.verb is None:
        candidates = list(_subcommands(parser))
    elif line.positionals == 0 and any(a.dest == "name" for a in line.parser._actions):
        kind_word, slash, _ = partial.rpartition("/")
        if line.verb == "status" and slash:  # KIND/NAME: that kind's names
            plural = LOOKUP_KINDS.get(STATUS_KINDS.get(kind_word.lower(), ""))
            names = lookup(plural, line.given) if plural else []
            candidates = [f"{kind_word}/{name}" for name in names]
        else:
            candidates = lookup(NAME_KINDS.get(line.verb, "modeldeployments"), line.given)
    return [c for c in candidates if c.startswith(partial)], COMPLETE_NO_FILES


def _lookup(kind: str, given: dict[str, str]) -> list[str]:
    """Names from the cluster (or the kubeconfig) for completion; nothing on any failure, as a
    completion must never print an error."""
    try:
        if kind == "contexts":
            from kubernetes import config

            contexts, _ = config.list_kube_config_contexts(config_file=given.get("kubeconfig"))  # type: ignore[no-untyped-call]
            return [str(c["name"]) for c in contexts]
        kube, namespace = _connect(argparse.Namespace(**given))
        if kind == "namespaces":
            path = "/api/v1/namespaces"
        else:
            from canarium.kube import resource_path

            kinds = {plural: kind for kind, plural in LOOKUP_KINDS.items()}
            path = resource_path(MDEP_API, kinds[kind], namespace)
        listed = asyncio.run(kube.request("GET", path, timeout=5))
        return sorted(str(o["metadata"]["name"]) for o in listed.get("items", []))
    except Exception:  # no cluster, no kubeconfig, no CRDs: no candidates
        return []


def complete(argv: Sequence[str] | None = None) -> int:
    """`kubectl_complete-canarium`: kubectl's completion of `kubectl canarium ...` calls it
    with the words so far and the one being completed; it prints cobra's format."""
    args = list(sys.argv[1:] if argv is None else argv) or [""]
    candidates, directive = completions(build_parser(), args[:-1], args[-1], _lookup)
    print("\n".join([*candidates, directive]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
