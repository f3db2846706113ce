"""The `spot-rebalancer` command: the functions the Lambdas run, as a dry run over a live cluster
(through --kubeconfig, else $KUBECONFIG, else ~/.kube/config) or a `kubectl get nodes,pods,pdb,pv,pvc
-A -o json` (or `-o yaml`) List (--from-file; `-` reads stdin).

Bad input (unreadable files, malformed events or lists, bad settings, an unusable kubeconfig) is
reported on stderr in one line with exit code 2; a live cluster or AWS API that cannot be reached or
answers with an error, in one line with exit code 1. A closed pipe (`| head`) ends it quietly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence, Set
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from . import __version__
from .capacity_blocks import CapacityBlocks
from .config import ConfigError, Settings
from .deployment import DeploymentError, context_settings, stack_settings
from .drain import UNDOING_KINDS, closed_change, drain_reason
from .drain_policy import plan_drain, plan_undo, waiting_step
from .events import CapacityBlockWarning, Event, EventError, Ignored, InstanceEvent, parse_event
from .kube import KubeApiError, KubeClient
from .label_selector import SelectorError, parse_selector
from .nodes import match_node
from .objects import Node, Pod
from .quantity import QuantityError
from .rebalance import Census, Explanation, NaiveClockError, Plan, WorkloadRef, explain
from .rebalancer import LiveCluster, Rebalancer, SnapshotView, TickResult
from .results import Step, StepAction, StepOutcome
from .snapshot import ClusterSnapshot, SnapshotError, read_list
from .tables import table
from .telemetry import MetricsRecorder
from .yaml_input import YamlInputError, yaml_as_json

EXIT_API_ERROR = 1
EXIT_BAD_INPUT = 2
# What a shell reports for a process ended by SIGPIPE, as kubectl's is in a closed pipe.
EXIT_CLOSED_PIPE = 128 + 13
OUTPUTS = ("table", "wide", "json", "yaml")
STDIN = "-"

Now = Callable[[], datetime]


class UsageError(Exception):
    """Input the command cannot use; its message is printed as is."""


BAD_INPUT = (UsageError, EventError, SnapshotError, ConfigError, QuantityError, DeploymentError,
             SelectorError, YamlInputError, NaiveClockError, OSError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:
        # Whoever read the output has gone (`| head`): stop, and keep Python from complaining again
        # when it flushes stdout on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_CLOSED_PIPE
    except BAD_INPUT as exc:
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


# --- the command line ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spot-rebalancer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    handle = commands.add_parser("handle", help="what an event would do to its node (dry run)")
    handle.add_argument("--event", required=True,
                        help="an EventBridge event as JSON (a file, or - for stdin)")
    handle.add_argument("--dry-run", action="store_true", required=True,
                        help="required: the CLI only plans; the deployed function acts")
    _add_common(handle, namespaces=True)
    handle.set_defaults(run=_handle)

    plan_command = commands.add_parser("plan", help="the moves a rebalance cycle would make (dry run)")
    _add_common(plan_command, namespaces=True)
    plan_command.add_argument("-l", "--selector", default="",
                              help="only pods with these labels (kubectl's syntax: a=b,c!=d,e in (f,g))")
    _add_max_evictions(plan_command)
    plan_command.set_defaults(run=_plan)

    explain_command = commands.add_parser(
        "explain", help="why a pod is or is not moved: each rule it passed or failed, its target and score")
    explain_command.add_argument("pod", metavar="NAMESPACE/POD")
    _add_common(explain_command, namespaces=False)
    _add_max_evictions(explain_command)
    explain_command.set_defaults(run=_explain)

    census_command = commands.add_parser("census", help="the fleet by capacity type and architecture")
    _add_common(census_command, namespaces=False)
    census_command.set_defaults(run=_census)

    tick = commands.add_parser("tick", help="what one run of the schedule function would do (dry run): "
                                            "the sweep, the census and a rebalance cycle")
    _add_common(tick, namespaces=False)
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


def _add_max_evictions(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-evictions", type=_count,
                        help="evictions per cycle (default: the settings' maxEvictionsPerCycle)")


def _add_common(parser: argparse.ArgumentParser, *, namespaces: bool) -> None:
    """Where the cluster is read from, the settings, the output and, where it means something, which
    namespaces are shown (planning always sees the whole cluster)."""
    source = parser.add_argument_group("cluster", "the live cluster (the default) or a List file")
    exclusive = source.add_mutually_exclusive_group()
    exclusive.add_argument("--kubeconfig",
                           help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    exclusive.add_argument("-f", "--from-file", help="a `kubectl get nodes,pods,pdb,pv,pvc -A -o json` "
                                                     "(or -o yaml) List; - reads stdin")
    source.add_argument("--context", help="kubeconfig context (default: its current context)")

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

    output = parser.add_argument_group("output")
    formats = output.add_mutually_exclusive_group()
    formats.add_argument("-o", "--output", choices=OUTPUTS, default="table",
                         help="table (the default), wide (more columns), json or yaml")
    formats.add_argument("--json", dest="output", action="store_const", const="json", help="-o json")
    if namespaces:
        scope = output.add_mutually_exclusive_group()
        scope.add_argument("-n", "--namespace", help="only pods of this namespace")
        scope.add_argument("-A", "--all-namespaces", action="store_true",
                           help="pods of every namespace (the default: the rebalancer works cluster-wide)")


def _settings(args: argparse.Namespace) -> Settings:
    from_context = bool(args.cdk_context or args.cdk_json)
    if args.stack and from_context:
        raise UsageError("--stack reads what is deployed, -c and --cdk-json what would be: give one or "
                         "the other")
    if args.stack:
        import boto3

        from .aws import boto_config

        settings = stack_settings(args.stack, boto3.client("cloudformation", config=boto_config()),
                                  boto3.client("lambda", config=boto_config()))
    elif from_context:
        default = Path("cdk.json")
        settings = context_settings(args.cdk_json or (default if default.is_file() else None),
                                    args.cdk_context)
    else:
        settings = Settings.from_env()
    if getattr(args, "max_evictions", None) is not None:
        settings = dataclasses.replace(settings, max_evictions_per_cycle=args.max_evictions)
    # The CLI only plans; the deployed function acts.
    return dataclasses.replace(settings, dry_run=True)


# --- reading -------------------------------------------------------------------------------------


def _read_input(path: str, what: str) -> bytes:
    if path == STDIN:
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the {what}: {exc.strerror}") from None


def _read_list(path: str) -> ClusterSnapshot:
    """A List file as JSON or, when it does not start like JSON, YAML."""
    data = _read_input(path, "List")
    source = "stdin" if path == STDIN else path
    if data.lstrip()[:1] not in (b"{", b"["):
        data = yaml_as_json(data, source)
    return read_list(data, source=source)


def _kube(args: argparse.Namespace) -> KubeClient:
    try:
        return KubeClient.from_kubeconfig(args.kubeconfig, args.context)
    except Exception as exc:  # the kubeconfig loader raises several types for one cause
        where = args.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise UsageError(f"{where}: unusable kubeconfig: {exc}") from None


def _cluster(args: argparse.Namespace, settings: Settings | None = None
             ) -> tuple[KubeClient | None, ClusterSnapshot]:
    """The live cluster's client (None for a file) and one snapshot of it, with its namespaces when
    the rebalancer's `settings` select pods by namespace labels (drains, given none, never do)."""
    wanted = settings is not None and bool(settings.namespace_selector)
    if args.from_file:
        snapshot = _read_list(args.from_file)
        if wanted and not snapshot.namespaces:
            raise UsageError(f"{args.from_file}: namespaceSelector is set, so the List must hold the "
                             "namespaces too (kubectl get nodes,pods,pdb,pv,pvc,namespaces -A -o json)")
        return None, snapshot
    kube = _kube(args)
    return kube, kube.snapshot(namespaces=wanted)


class _ReadOnce:
    """The live cluster, with the snapshot the command has already read (and shows)."""

    def __init__(self, kube: KubeClient, snapshot: ClusterSnapshot) -> None:
        self._live = LiveCluster(kube)  # its snapshot is never read: the command's is
        self._snapshot = snapshot

    def snapshot(self) -> ClusterSnapshot:
        return self._snapshot

    def list_nodes(self) -> list[Node]:
        return self._live.list_nodes()

    def workload_annotations(self, kinds: Set[str]) -> Mapping[WorkloadRef, Mapping[str, str]]:
        return self._live.workload_annotations(kinds)


def _rebalancer(settings: Settings, kube: KubeClient | None, snapshot: ClusterSnapshot,
                now: Now) -> Rebalancer:
    """The schedule function's rebalancer as a dry run on the snapshot, reading workloads from the
    live cluster when there is one. No history: the CLI does not see the moves the deployed function
    has in flight."""
    view = SnapshotView(snapshot) if kube is None else _ReadOnce(kube, snapshot)
    return Rebalancer(settings, kube, MetricsRecorder(), None, view=view, now=now)


def _in_namespace(args: argparse.Namespace, namespace: str) -> bool:
    return not args.namespace or namespace == args.namespace


def _now() -> datetime:
    return datetime.now(UTC)


# --- output --------------------------------------------------------------------------------------


def _emit(args: argparse.Namespace, document: Any, lines: Callable[[], list[str]]) -> None:
    """The document as JSON or YAML, or the table lines."""
    if args.output == "json":
        print(json.dumps(document))
    elif args.output == "yaml":
        import yaml

        print(yaml.safe_dump(document, sort_keys=False), end="")
    else:
        print("\n".join(lines()))


# --- handle --------------------------------------------------------------------------------------


def _handle(args: argparse.Namespace, now: Now = _now) -> int:
    settings = _settings(args)
    if args.event == STDIN and args.from_file == STDIN:
        raise UsageError("--event - and --from-file - cannot both read stdin")
    events = parse_event(_read_input(args.event, "event"))
    _, snapshot = _cluster(args)
    steps = [step for event in events for step in _event_steps(event, snapshot, settings, now())
             if not step.namespace or _in_namespace(args, step.namespace)]
    if args.output == "json":  # one object per line, as the functions log them
        for step in steps:
            print(json.dumps(step.as_json()))
        return 0
    _emit(args, [step.as_json() for step in steps], lambda: _steps_table(steps, wide=args.output == "wide"))
    return 0


def _event_steps(event: Event, snapshot: ClusterSnapshot, settings: Settings, now: datetime) -> list[Step]:
    if not isinstance(event, CapacityBlockWarning):
        return _handle_one(event, snapshot, settings, now)
    # The warning names a reservation: its instances come from EC2, as the function finds them.
    import boto3

    from .aws import Ec2, boto_config

    fan_out = CapacityBlocks(settings, Ec2(boto3.client("ec2", config=boto_config())), now=lambda: now
                             ).fan_out(event)
    if not fan_out.events:
        return fan_out.steps
    return [step for one in fan_out.events for step in _handle_one(one, snapshot, settings, now)]


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


def _steps_table(steps: Sequence[Step], *, wide: bool) -> list[str]:
    headers = ["ACTION", "NODE", "POD", "REASON", *(["OUTCOME"] if wide else [])]
    return table(headers, ([step.action, step.node or None,
                            f"{step.namespace}/{step.pod}" if step.pod else None, step.reason,
                            *([step.outcome or None] if wide else [])] for step in steps))


# --- plan and explain ----------------------------------------------------------------------------


def _plan(args: argparse.Namespace, now: Now = _now) -> int:
    selector = parse_selector(args.selector)
    settings = _settings(args)
    kube, snapshot = _cluster(args, settings)
    result = _rebalancer(settings, kube, snapshot, now).cycle().plan
    pods = {(p.metadata.namespace, p.metadata.name): p for p in snapshot.pods}

    def shown(namespace: str, name: str) -> bool:
        pod = pods.get((namespace, name))
        return (_in_namespace(args, namespace)
                and (pod is not None and selector.matches(pod.metadata.labels)))

    result = dataclasses.replace(
        result, evictions=tuple(e for e in result.evictions if shown(e.namespace, e.name)),
        skipped=tuple(s for s in result.skipped if shown(s.namespace, s.name)))
    _emit(args, _plan_json(result), lambda: _plan_table(result, pods, wide=args.output == "wide"))
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
                     for r in result.capacity],
        "emptying": list(result.emptying)}


def _plan_table(result: Plan, pods: dict[tuple[str, str], Pod], *, wide: bool) -> list[str]:
    """Moves (biggest gain first), then the pods kept and why, then the nodes to add."""
    rows: list[list[object]] = [
        ["evict", f"{e.namespace}/{e.name}", e.from_node, e.to_node,
         f"score {e.from_score} -> {e.to_score}", *([e.workload] if wide else [])]
        for e in result.evictions]
    for s in result.skipped:
        pod = pods.get((s.namespace, s.name))
        rows.append(["keep", f"{s.namespace}/{s.name}", pod.spec.node_name if pod else None, None,
                     s.code.value, *([s.detail] if wide else [])])
    lines = table(["VERDICT", "POD", "NODE", "TARGET", "REASON", *(["DETAIL"] if wide else [])], rows)
    if result.capacity:
        lines += ["", *table(["ADD NODES", "TO GROUP", "KIND", "FOR PODS"],
                             ([r.nodes, r.group.name, r.group.kind, r.pods] for r in result.capacity))]
    if result.emptying:
        lines += ["", *table(["EMPTIED NODE", "LEFT"], ([node, "only daemons"] for node in result.emptying))]
    return [*lines, f"{len(result.evictions)} to evict, {len(result.skipped)} kept, "
                    f"{len(result.emptying)} on-demand node(s) emptied"]


def _explain(args: argparse.Namespace, now: Now = _now) -> int:
    namespace, slash, name = args.pod.partition("/")
    if not slash or not namespace or not name:
        raise UsageError(f"{args.pod}: expected NAMESPACE/POD")
    settings = _settings(args)
    kube, snapshot = _cluster(args, settings)
    pod = next((p for p in snapshot.pods
                if (p.metadata.namespace, p.metadata.name) == (namespace, name)), None)
    if pod is None:
        raise UsageError(f"pod {namespace}/{name} is not in the cluster")
    plan = _rebalancer(settings, kube, snapshot, now).cycle().plan
    explanation = explain(plan, pod)
    _emit(args, _explanation_json(explanation), lambda: _explanation_table(explanation))
    return 0


def _explanation_json(e: Explanation) -> dict[str, object]:
    return {"namespace": e.namespace, "name": e.name, "node": e.node, "verdict": e.verdict,
            "target": e.target, "score": e.score, "target_score": e.target_score,
            "rules": [{"code": r.code.value, "rule": r.rule, "result": r.result.value, "detail": r.detail}
                      for r in e.rules]}


def _explanation_table(e: Explanation) -> list[str]:
    if e.verdict == "evict":
        verdict = f"evict: its replacement goes to {e.target} (score {e.score} -> {e.target_score})"
    elif e.verdict == "keep":
        verdict = "keep: " + next(r.code.value for r in e.rules if r.result == "fail")
    else:
        verdict = "never moved: it has no preferred node affinity"
    lines = table(["POD", "NODE", "VERDICT"], [[f"{e.namespace}/{e.name}", e.node, verdict]])
    if e.rules:
        lines += ["", *table(["RULE", "RESULT", "DETAIL"],
                             ([r.rule, r.result.value, r.detail] for r in e.rules))]
    return lines


# --- census and tick -----------------------------------------------------------------------------


def _census(args: argparse.Namespace, now: Now = _now) -> int:
    settings = _settings(args)
    kube, snapshot = _cluster(args, settings)
    result = _rebalancer(settings, kube, snapshot, now).census()
    _emit(args, msgspec.to_builtins(result), lambda: _census_table(result))
    return 0


def _census_table(result: Census) -> list[str]:
    lines = table(["CAPACITY", "ARCH", "NODES", "CPU ALLOC", "CPU REQ", "MEM ALLOC", "MEM REQ"],
                  ([row.capacity_type, row.architecture, row.nodes, f"{row.allocatable_cpu / 1000:.2f}",
                    f"{row.requested_cpu / 1000:.2f}", _gib(row.allocatable_memory),
                    _gib(row.requested_memory)] for row in result.rows))
    share = "n/a" if result.spot_cpu_share is None else f"{result.spot_cpu_share:.1%}"
    lines += [f"spot share of requested CPU: {share}",
              f"pods with a preferred node affinity: {result.pods_with_preferences}, "
              f"misplaced: {result.misplaced_pods}"]
    if result.cost is not None:
        rows = ", ".join(f"{r.capacity_type} {r.architecture} ${r.per_hour:.4f}" for r in result.cost.rows)
        unpriced = f"; {len(result.cost.unpriced)} node(s) unpriced" if result.cost.unpriced else ""
        lines.append(f"cost per hour: ${result.cost.per_hour:.4f} ({rows}); spot saves "
                     f"${result.cost.spot_saving_per_hour:.4f} an hour{unpriced}")
    return lines


def _gib(quantity: int) -> str:
    return f"{quantity / 2**30:.1f}Gi"


def _tick(args: argparse.Namespace, now: Now = _now) -> int:
    settings = _settings(args)
    kube, snapshot = _cluster(args, settings)
    rebalancer = _rebalancer(settings, kube, snapshot, now)
    result = rebalancer.tick()
    document = {**result.summary(), "census": msgspec.to_builtins(result.census),
                "plan": _plan_json(result.cycle.plan)}
    pods = {(p.metadata.namespace, p.metadata.name): p for p in snapshot.pods}
    _emit(args, document, lambda: _tick_lines(result, pods, wide=args.output == "wide"))
    return 0


def _tick_lines(result: TickResult, pods: dict[tuple[str, str], Pod], *, wide: bool) -> list[str]:
    review = result.cycle.review.metrics
    return [f"sweep: {len(result.sweep.steps)} step(s)",
            *(_steps_table(result.sweep.steps, wide=wide) if result.sweep.steps else []),
            "census:", *_census_table(result.census),
            f"cycle: last moves {review['MovesSucceeded']} succeeded, {review['MovesFailed']} failed, "
            f"{review['MovesInFlight']} in flight",
            *_plan_table(result.cycle.plan, pods, wide=wide)]


if __name__ == "__main__":
    sys.exit(main())
