"""What the fleet costs an hour, and what spot saves: each node priced by its instance type, its zone
(spot prices differ by zone) and its capacity type, from a price book the shell fills (list prices,
current spot prices, and the operator's overrides on top)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..config import Price
from ..objects import Node
from ..scheduling.capacity_type import LIFECYCLE_LABEL, ON_DEMAND, SPOT, architecture, capacity_type

INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
ZONE_LABEL = "topology.kubernetes.io/zone"


@dataclass(frozen=True, slots=True)
class PriceBook:
    on_demand: Mapping[str, float] = field(default_factory=dict)  # instance type -> $/hour, this region
    spot: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (instance type, zone) -> $/hour
    overrides: Mapping[str, Price] = field(default_factory=dict)

    def on_demand_price(self, instance_type: str) -> float | None:
        override = self.overrides.get(instance_type)
        if override is not None and override.on_demand is not None:
            return override.on_demand
        return self.on_demand.get(instance_type)

    def spot_price(self, instance_type: str, zone: str) -> float | None:
        override = self.overrides.get(instance_type)
        if override is not None and override.spot is not None:
            return override.spot
        return self.spot.get((instance_type, zone))

    def hourly(self, node: Node, capacity: str) -> float | None:
        """The node's price an hour, or None when the book has none for it (or its capacity type is
        neither spot nor on-demand)."""
        labels = node.metadata.labels
        instance_type = labels.get(INSTANCE_TYPE_LABEL, "")
        if capacity == SPOT:
            return self.spot_price(instance_type, labels.get(ZONE_LABEL, ""))
        if capacity == ON_DEMAND:
            return self.on_demand_price(instance_type)
        return None


@dataclass(frozen=True, slots=True)
class CostRow:
    capacity_type: str
    architecture: str
    nodes: int
    priced_nodes: int
    per_hour: float  # of the priced nodes


@dataclass(frozen=True, slots=True)
class FleetCost:
    rows: tuple[CostRow, ...]  # sorted by capacity type, then architecture
    per_hour: float
    # What running the spot nodes on on-demand would cost more an hour (only nodes with both prices).
    spot_saving_per_hour: float
    unpriced: tuple[str, ...]  # nodes the book has no price for


def fleet_cost(nodes: Iterable[Node], book: PriceBook, lifecycle_label: str = LIFECYCLE_LABEL) -> FleetCost:
    groups: dict[tuple[str, str], tuple[int, int, float]] = {}
    saving = 0.0
    unpriced = []
    for node in nodes:
        capacity = capacity_type(node, lifecycle_label)
        key = (capacity, architecture(node))
        count, priced, total = groups.get(key, (0, 0, 0.0))
        price = book.hourly(node, capacity)
        if price is None:
            unpriced.append(node.metadata.name)
            groups[key] = (count + 1, priced, total)
            continue
        groups[key] = (count + 1, priced + 1, total + price)
        if capacity == SPOT:
            on_demand = book.on_demand_price(node.metadata.labels.get(INSTANCE_TYPE_LABEL, ""))
            if on_demand is not None:
                saving += on_demand - price
    rows = tuple(CostRow(kind, arch, count, priced, round(total, 6))
                 for (kind, arch), (count, priced, total) in sorted(groups.items()))
    return FleetCost(rows, round(sum(r.per_hour for r in rows), 6), round(saving, 6), tuple(sorted(unpriced)))
