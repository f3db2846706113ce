"""What the people running the fleet are told: one notice per drained node and one per rebalance
cycle that moved pods, as AWS Chatbot custom notifications (Chatbot forwards an SNS message of this
shape to Slack, Microsoft Teams or Chime; an e-mail subscriber gets the JSON).

The shape (Chatbot's custom notification event schema): {"version": "1.0", "source": "custom",
"content": {"textType": "client-markdown", "title", "description", "nextSteps", "keywords"},
"metadata": {"threadId", "summary", "eventType", "relatedResources", "additionalContext"}}, every
additionalContext value a string. Pure: the notifier publishes what these return.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .results import DrainEnd, DrainReport

# Node names listed in one cycle notice; the rest are counted.
LISTED_NODES = 10

_DEADLINE = {
    DrainEnd.DRAINED: "met: every pod to evict left the node in time",
    DrainEnd.DEADLINE_MISSED: "missed: pods were still on the node when its deadline came",
    DrainEnd.NO_NOTICE: ("none given: a spot hibernation begins as its warning arrives; the pods still "
                         "there hibernate with the instance and resume with it"),
}
_TITLES = {
    DrainEnd.DRAINED: "Drained {node}",
    DrainEnd.DEADLINE_MISSED: "Deadline missed draining {node}",
    DrainEnd.NO_NOTICE: "Drained {node} as it hibernated",
}


def _notice(title: str, description: str, *, event_type: str, thread: str, resources: Sequence[str],
            context: dict[str, str], next_steps: Sequence[str] = (), keywords: Sequence[str] = ()
            ) -> dict[str, Any]:
    content: dict[str, Any] = {"textType": "client-markdown", "title": title, "description": description}
    if next_steps:
        content["nextSteps"] = list(next_steps)
    if keywords:
        content["keywords"] = list(keywords)
    return {"version": "1.0", "source": "custom", "content": content,
            "metadata": {"threadId": thread, "summary": title, "eventType": event_type,
                         "relatedResources": list(resources), "additionalContext": context}}


def drain_notice(cluster: str, report: DrainReport) -> dict[str, Any]:
    """The notice for a drain that ended."""
    title = f"{cluster}: " + _TITLES[report.end].format(node=report.node)
    pods = f"*Pods evicted* {report.evicted} · *blocked by budgets* {report.blocked}"
    if report.deleted:
        pods += f" · *deleted at the deadline* {report.deleted}"
    description = "\n".join((
        f"*Node* `{report.node}` · *instance* `{report.instance_id}` · *cluster* `{cluster}`",
        f"*Reason* `{report.reason}` (event `{report.event_kind}`)",
        pods,
        f"*Deadline* {_DEADLINE[report.end]}",
    ))
    steps = []
    if report.blocked:
        steps.append(f"PodDisruptionBudgets kept {report.blocked} pod(s) on the node: "
                     "`kubectl get pdb -A` shows which allow no disruption")
    if report.end is DrainEnd.DEADLINE_MISSED:
        steps.append("Look up the drain in the events function's log by the instance id")
    return _notice(title, description, event_type="Drain", thread=f"spot-rebalancer/{cluster}/drains",
                   resources=(report.instance_id, report.node), next_steps=steps,
                   keywords=(cluster, report.reason, report.end.value),
                   context={"cluster": cluster, "node": report.node, "instanceId": report.instance_id,
                            "reason": report.reason, "eventKind": report.event_kind,
                            "deadline": report.end.value, "podsEvicted": str(report.evicted),
                            "podsBlocked": str(report.blocked), "podsDeleted": str(report.deleted)})


def _money(per_hour: float) -> str:
    return f"${per_hour:,.2f}/hour"


def cycle_notice(cluster: str, *, moved: int, refused: int, waves: int, emptied: Sequence[str],
                 emptied_cost_per_hour: float | None, spot_saving_per_hour: float | None
                 ) -> dict[str, Any] | None:
    """The notice for a rebalance cycle; None when it moved no pod (nothing to tell)."""
    if moved == 0:
        return None
    title = f"{cluster}: {moved} pod(s) moved back to preferred capacity"
    lines = [f"*Pods moved* {moved} in {waves} wave(s) · *refused* {refused} · *cluster* `{cluster}`"]
    if emptied:
        names = ", ".join(f"`{n}`" for n in emptied[:LISTED_NODES])
        more = f" and {len(emptied) - LISTED_NODES} more" if len(emptied) > LISTED_NODES else ""
        cost = f" (they cost {_money(emptied_cost_per_hour)} while they stay)" \
            if emptied_cost_per_hour is not None else ""
        lines.append(f"*On-demand nodes emptied* {len(emptied)}: {names}{more}{cost}")
    else:
        lines.append("*On-demand nodes emptied* none")
    if spot_saving_per_hour is not None:
        lines.append(f"*Spot saving* {_money(spot_saving_per_hour)} against on-demand, fleet-wide")
    context = {"cluster": cluster, "podsMoved": str(moved), "podsRefused": str(refused),
               "waves": str(waves), "nodesEmptied": str(len(emptied))}
    if emptied_cost_per_hour is not None:
        context["emptiedNodesCostPerHour"] = f"{emptied_cost_per_hour:.4f}"
    if spot_saving_per_hour is not None:
        context["spotSavingPerHour"] = f"{spot_saving_per_hour:.4f}"
    return _notice(title, "\n".join(lines), event_type="RebalanceCycle",
                   thread=f"spot-rebalancer/{cluster}/cycles", resources=list(emptied[:LISTED_NODES]),
                   keywords=(cluster, "rebalance"), context=context)
