"""`canarium`: the operator and its command-line tools (also `kubectl canarium`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from canarium import __version__


def _run(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    import canarium.handlers  # noqa: F401  (registers the handlers)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # kopf logs every handled event at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_address)
    memo = kopf.Memo(namespaces=list(args.namespace), workers=args.workers)
    asyncio.run(
        kopf.operator(
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
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=_run)

    crds = commands.add_parser("crds", help="write or check the CRD YAML generated from the API")
    crds.add_argument("--out", default="crds", help="directory of the CRD files (default crds/)")
    crds.add_argument("--check", action="store_true", help="fail if the files are stale")
    crds.add_argument("--stdout", action="store_true", help="print the CRDs instead")
    crds.set_defaults(func=_crds)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
