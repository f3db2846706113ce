"""The `spot-rebalancer` command: the functions the Lambdas run, as a dry run over a live cluster
(--kubeconfig) or a `kubectl get nodes,pods,pdb -A -o json` file (--from-file).

Bad input (unreadable files, malformed events or lists, bad settings) is reported on stderr with
exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from .config import ConfigError, Settings
from .drain_policy import DrainReason
from .events import EventError, InstanceEvent, parse_event
from .interruption import Step, drain_deadline, plan_drain
from .nodes import match_node
from .snapshot import ClusterSnapshot, SnapshotError, read_list

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Input the command cannot use; its message is printed as is."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (UsageError, EventError, SnapshotError, ConfigError, OSError) as exc:
        print(f"spot-rebalancer: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spot-rebalancer", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    handle = commands.add_parser("handle", help="what an event would do to its node (dry run)")
    handle.add_argument("--event", required=True, help="an EventBridge event as JSON")
    _add_source(handle)
    handle.add_argument("--dry-run", action="store_true", required=True,
                        help="required: the CLI only plans; the deployed function acts")
    handle.add_argument("--json", action="store_true", help="one JSON object per line")
    handle.set_defaults(run=_handle)
    return parser


def _add_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--kubeconfig", help="read the live cluster through this kubeconfig")
    source.add_argument("--from-file", help="a `kubectl get nodes,pods,pdb -A -o json` List")
    parser.add_argument("--context", help="kubeconfig context")


def read_snapshot(args: argparse.Namespace) -> ClusterSnapshot:
    if args.from_file:
        return read_list(Path(args.from_file).read_bytes(), source=args.from_file)
    from .kube import KubeClient

    try:
        kube = KubeClient.from_kubeconfig(args.kubeconfig, args.context)
    except Exception as exc:  # the kubeconfig loader raises several types for one cause
        raise UsageError(f"{args.kubeconfig}: unusable kubeconfig: {exc}") from None
    return ClusterSnapshot(kube.list_nodes(), kube.list_pods(), kube.list_pdbs())


def _handle(args: argparse.Namespace, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> int:
    settings = Settings.from_env()
    try:
        raw = Path(args.event).read_bytes()
    except OSError as exc:
        raise UsageError(f"{args.event}: {exc.strerror}") from None
    events = parse_event(raw, health_lead_time_seconds=settings.health_lead_time_seconds)
    snapshot = read_snapshot(args)
    steps: list[Step] = []
    for event in events:
        steps.extend(_handle_one(event, snapshot, settings, now()))
    _print_steps(steps, args.json)
    return 0


def _handle_one(event, snapshot: ClusterSnapshot, settings: Settings, now: datetime) -> list[Step]:
    reason = DrainReason.for_event(event.kind)
    if reason is None or not isinstance(event, InstanceEvent):
        why = getattr(event, "why", f"{event.kind} is not an interruption")
        return [Step("ignore", reason=why)]
    # No EC2 here: the node is found by its providerID alone.
    node = match_node(snapshot.nodes, event.instance_id)
    if node is None:
        return [Step("ignore", reason=f"{event.instance_id}: not a node of this cluster")]
    pods = [p for p in snapshot.pods if p.spec.node_name == node.metadata.name]
    plan = plan_drain(reason, node, pods, settings, now, drain_deadline(event, settings, now))
    return plan.steps(now)


def _print_steps(steps: list[Step], as_json: bool) -> None:
    if as_json:
        for step in steps:
            print(json.dumps(step.as_json()))
        return
    for step in steps:
        pod = f"{step.namespace}/{step.pod}" if step.pod else ""
        print(f"{step.action:<10} {step.node:<40} {pod:<50} {step.reason}".rstrip())


if __name__ == "__main__":
    sys.exit(main())
