"""Metrics as plain records while the work runs; published as CloudWatch EMF by the Lambda shell.

Services only add MetricPoints, so the CLI and tests see exactly what a function would publish,
without stdout parsing or a metrics backend.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

NAMESPACE = "SpotRebalancer"


@dataclass(frozen=True, slots=True)
class MetricPoint:
    name: str
    value: float
    unit: str
    dimensions: tuple[tuple[str, str], ...]


@dataclass
class MetricsRecorder:
    points: list[MetricPoint] = field(default_factory=list)

    def add(self, name: str, value: float, unit: str = "Count", **dimensions: str) -> None:
        self.points.append(MetricPoint(name, value, unit, tuple(sorted(dimensions.items()))))

    def total(self, name: str, **dimensions: str) -> float:
        """The sum of a metric's points whose dimensions include these."""
        wanted = set(dimensions.items())
        return sum(p.value for p in self.points if p.name == name and wanted <= set(p.dimensions))

    def publish(self, namespace: str = NAMESPACE) -> None:
        """Print the points as EMF, one document per dimension set, and forget them."""
        from aws_lambda_powertools.metrics import EphemeralMetrics

        by_dimensions: dict[tuple[tuple[str, str], ...], list[MetricPoint]] = defaultdict(list)
        for point in self.points:
            by_dimensions[point.dimensions].append(point)
        for dimensions, points in by_dimensions.items():
            emf = EphemeralMetrics(namespace=namespace)
            # Alarms and the dashboard address metrics by exactly these dimensions; powertools
            # would add `service` from POWERTOOLS_SERVICE_NAME, which only names the function.
            emf.service = None  # type: ignore[assignment]  # typed str; None is what turns it off
            for key, value in dimensions:
                emf.add_dimension(key, value)
            for point in points:
                emf.add_metric(name=point.name, unit=point.unit, value=point.value)
            emf.flush_metrics()
        self.points.clear()
