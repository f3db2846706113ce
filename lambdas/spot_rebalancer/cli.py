"""The `spot-rebalancer` command: the functions the Lambdas run, as a dry run over a live cluster
(--kubeconfig) or a `kubectl get nodes,pods,pdb -A -o json` file (--from-file).

Bad input (unreadable files, malformed events or lists, bad settings, an unusable kubeconfig) is
reported on stderr in one line with exit code 2; a live cluster that cannot be reached or answers
with an error, in one line with exit code 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from .config import ConfigError, Settings
from .deployment import DeploymentError, context_settings, stack_settings
from .drain import UNDOING_KINDS, closed_change, drain_reason
from .drain_policy import plan_drain, plan_undo, waiting_step
from .events import Event, EventError, Ignored, InstanceEvent, parse_event
from .kube import KubeApiError, KubeClient
from .nodes import match_node
from .quantity import QuantityError
from .rebalance import Census, NaiveClockError, Plan
from .rebalancer import CycleResult, Rebalancer, SnapshotView, TickResult
from .results import Step, StepAction, StepOutcome
from .snapshot import ClusterSnapshot, SnapshotError, read_list
from .telemetry import MetricsRecorder

EXIT_API_ERROR = 1
EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Input the command cannot use; its message is printed as is."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (UsageError, EventError, SnapshotError, ConfigError, QuantityError, DeploymentError,
            NaiveClockError, OSError) as exc:
        _complain(exc)
        return EXIT_BAD_INPUT
    except KubeApiError as exc:
        _complain(exc)
        return EXIT_API_ERROR
    except Exception as exc:
        if not _aws_error(exc):
            raise
        _complain(exc)
        return EXIT_API_ERROR


def _complain(exc: Exception) -> None:
    """One line on stderr: loaders (YAML, urllib3) put line breaks and nested causes in messages."""
    print(f"spot-rebalancer: {' '.join(str(exc).split())}", file=sys.stderr)


def _aws_error(exc: Exception) -> bool:
    """An AWS API or transport error (--stack): its own message says enough."""
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, (BotoCoreError, ClientError))


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

    plan_command = commands.add_parser("plan", help="the moves a rebalance cycle would make (dry run)")
    _add_source(plan_command)
    plan_command.add_argument("--max-evictions", type=_count, help="evictions per cycle (default: "
                              "MAX_EVICTIONS_PER_CYCLE or 10)")
    plan_command.add_argument("--json", action="store_true", help="one JSON object")
    plan_command.set_defaults(run=_plan)

    census_command = commands.add_parser("census", help="the fleet by capacity type and architecture")
    _add_source(census_command)
    census_command.add_argument("--json", action="store_true", help="one JSON object")
    census_command.set_defaults(run=_census)

    tick = commands.add_parser("tick", help="what one run of the schedule function would do (dry run): "
                                            "the sweep, the census and a rebalance cycle")
    _add_source(tick)
    tick.add_argument("--json", action="store_true", help="one JSON object")
    tick.set_defaults(run=_tick)
    return parser


def _count(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _add_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--kubeconfig", help="read the live cluster through this kubeconfig")
    source.add_argument("--from-file", help="a `kubectl get nodes,pods,pdb -A -o json` List")
    parser.add_argument("--context", help="kubeconfig context")
    settings = parser.add_argument_group(
        "settings", "what the dry run runs with; by default the defaults, with environment variables named "
                    "after the settings (MAX_EVICTIONS_PER_CYCLE...) over them")
    settings.add_argument("--stack", help="the settings a deployed stack's functions run with (needs "
                                          "cloudformation:DescribeStacks, lambda:GetFunctionConfiguration)")
    settings.add_argument("-c", "--cdk-context", action="append", default=[], metavar="KEY=VALUE",
                          help="the settings `cdk synth -c KEY=VALUE` would deploy, over cdk.json's context "
                               "(repeatable)")
    settings.add_argument("--cdk-json", type=Path, help="the CDK app's cdk.json (default: ./cdk.json, when "
                                                        "-c is given and it exists)")


def _settings(args: argparse.Namespace) -> Settings:
    from_context = bool(args.cdk_context or args.cdk_json)
    if args.stack and from_context:
        raise UsageError("--stack reads what is deployed, -c and --cdk-json what would be: give one or "
                         "the other")
    if args.stack:
        import boto3

        from .aws import boto_config

        return stack_settings(args.stack, boto3.client("cloudformation", config=boto_config()),
                              boto3.client("lambda", config=boto_config()))
    if from_context:
        default = Path("cdk.json")
        return context_settings(args.cdk_json or (default if default.is_file() else None), args.cdk_context)
    return Settings.from_env()


def read_snapshot(args: argparse.Namespace) -> ClusterSnapshot:
    if args.from_file:
        return read_list(Path(args.from_file).read_bytes(), source=args.from_file)
    return _kube(args).snapshot()


def _kube(args: argparse.Namespace) -> KubeClient:
    try:
        return KubeClient.from_kubeconfig(args.kubeconfig, args.context)
    except Exception as exc:  # the kubeconfig loader raises several types for one cause
        raise UsageError(f"{args.kubeconfig}: unusable kubeconfig: {exc}") from None


def _rebalancer(args: argparse.Namespace, settings: Settings, now: Callable[[], datetime]) -> Rebalancer:
    """The schedule function's rebalancer as a dry run, reading the live cluster or the file. No
    history: the CLI does not see the moves the deployed function has in flight."""
    settings = dataclasses.replace(settings, dry_run=True)
    if args.kubeconfig:
        return Rebalancer(settings, _kube(args), MetricsRecorder(), None, now=now)
    view = SnapshotView(read_snapshot(args))
    return Rebalancer(settings, None, MetricsRecorder(), None, view=view, now=now)


def _handle(args: argparse.Namespace, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> int:
    settings = _settings(args)
    try:
        raw = Path(args.event).read_bytes()
    except OSError as exc:
        raise UsageError(f"{args.event}: {exc.strerror}") from None
    events = parse_event(raw)
    snapshot = read_snapshot(args)
    steps: list[Step] = []
    for event in events:
        steps.extend(_handle_one(event, snapshot, settings, now()))
    _print_steps(steps, args.json)
    return 0


def _handle_one(event: Event, snapshot: ClusterSnapshot, settings: Settings, now: datetime) -> list[Step]:
    reason = drain_reason(event)
    if isinstance(event, Ignored):
        return [Step(StepAction.IGNORE, reason=event.why)]
    undoes = event.kind in UNDOING_KINDS
    if (reason is None and not undoes) or not isinstance(event, InstanceEvent):
        return [Step(StepAction.IGNORE, reason=f"{event.kind} is not an interruption")]
    # No EC2 here: the node is found by its providerID alone.
    node = match_node(snapshot.nodes, event.instance_id)
    if node is None:
        return [Step(StepAction.IGNORE, reason=f"{event.instance_id}: not a node of this cluster")]
    if reason is None:
        return plan_undo(node, now, settings, closed_change=closed_change(event)).steps(StepOutcome.DRY_RUN)
    waiting = waiting_step(reason.spec, event.deadline, settings, now, node.metadata.name)
    if waiting is not None:
        return [waiting]  # as the function decides: nothing now, the drain at its start
    pods = [p for p in snapshot.pods if p.spec.node_name == node.metadata.name]
    plan = plan_drain(reason, node, pods, settings, now, event_deadline=event.deadline, started=now)
    return plan.steps(now)


def _print_steps(steps: list[Step], as_json: bool) -> None:
    if as_json:
        for step in steps:
            print(json.dumps(step.as_json()))
        return
    for step in steps:
        pod = f"{step.namespace}/{step.pod}" if step.pod else ""
        print(f"{step.action:<10} {step.node:<40} {pod:<50} {step.reason}".rstrip())


def _plan(args: argparse.Namespace, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> int:
    settings = _settings(args)
    if args.max_evictions is not None:
        settings = dataclasses.replace(settings, max_evictions_per_cycle=args.max_evictions)
    result = _rebalancer(args, settings, now).cycle()
    _print_plan(result.plan, args.json)
    return 0


def _plan_json(result: Plan) -> dict[str, object]:
    return {
        "evictions": [{"namespace": e.namespace, "name": e.name, "workload": str(e.workload),
                       "from_node": e.from_node, "to_node": e.to_node, "from_score": e.from_score,
                       "to_score": e.to_score, "score_gain": e.score_gain, "reason": e.reason}
                      for e in result.evictions],
        "considered": [{"namespace": s.namespace, "name": s.name, "code": s.code.value,
                        "detail": s.detail} for s in result.skipped],
        "capacity": [{"group": r.group.name, "kind": r.group.kind, "nodes": r.nodes, "pods": r.pods}
                     for r in result.capacity]}


def _print_plan(result: Plan, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_plan_json(result)))
        return
    for e in result.evictions:
        print(f"{'evict':<8} {e.namespace + '/' + e.name:<50} {e.from_node} -> {e.to_node} "
              f"(+{e.score_gain})")
    for s in result.skipped:
        print(f"{'keep':<8} {s.namespace + '/' + s.name:<50} {s.code.value:<22} {s.detail}".rstrip())
    for r in result.capacity:
        print(f"{'add':<8} {r.nodes} node(s) to {r.group.kind} {r.group.name} for {r.pods} pod(s)")
    print(f"{len(result.evictions)} to evict, {len(result.skipped)} kept")


def _census(args: argparse.Namespace, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> int:
    _print_census(_rebalancer(args, _settings(args), now).census(), args.json)
    return 0


def _tick(args: argparse.Namespace, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> int:
    result = _rebalancer(args, _settings(args), now).tick()
    if args.json:
        print(json.dumps({**result.summary(), "census": msgspec.to_builtins(result.census),
                          "plan": _plan_json(result.cycle.plan)}))
        return 0
    _print_tick(result)
    return 0


def _print_tick(result: TickResult) -> None:
    print(f"sweep: {len(result.sweep.steps)} step(s)")
    _print_steps(result.sweep.steps, as_json=False)
    print("census:")
    _print_census(result.census, as_json=False)
    _print_cycle(result.cycle)


def _print_cycle(result: CycleResult) -> None:
    review = result.review.metrics
    print(f"cycle: last moves {review['MovesSucceeded']} succeeded, {review['MovesFailed']} failed, "
          f"{review['MovesInFlight']} in flight")
    _print_plan(result.plan, as_json=False)


def _print_census(result: Census, as_json: bool) -> None:
    if as_json:
        print(json.dumps(msgspec.to_builtins(result)))
        return
    print(f"{'CAPACITY':<10} {'ARCH':<8} {'NODES':>5} {'CPU ALLOC':>10} {'CPU REQ':>10} "
          f"{'MEM ALLOC':>10} {'MEM REQ':>10}")
    for row in result.rows:
        print(f"{row.capacity_type:<10} {row.architecture:<8} {row.nodes:>5} "
              f"{row.allocatable_cpu / 1000:>10.2f} {row.requested_cpu / 1000:>10.2f} "
              f"{_gib(row.allocatable_memory):>10} {_gib(row.requested_memory):>10}")
    share = "n/a" if result.spot_cpu_share is None else f"{result.spot_cpu_share:.1%}"
    print(f"spot share of requested CPU: {share}")
    print(f"pods with a preferred node affinity: {result.pods_with_preferences}, "
          f"misplaced: {result.misplaced_pods}")
    if result.cost is not None:
        rows = ", ".join(f"{r.capacity_type} {r.architecture} ${r.per_hour:.4f}" for r in result.cost.rows)
        unpriced = f"; {len(result.cost.unpriced)} node(s) unpriced" if result.cost.unpriced else ""
        print(f"cost per hour: ${result.cost.per_hour:.4f} ({rows}); spot saves "
              f"${result.cost.spot_saving_per_hour:.4f} an hour{unpriced}")


def _gib(quantity: int) -> str:
    return f"{quantity / 2**30:.1f}Gi"


if __name__ == "__main__":
    sys.exit(main())
