"""A synthesized alarm, fed datapoints through moto's CloudWatch, judged as CloudWatch would.

moto stores datapoints and answers GetMetricData for plain metrics, but evaluates no alarm and no
metric math (an expression only echoes the query it names). So the datapoints go through moto, each
metric the alarm reads is fetched back by the namespace, name, dimensions, statistic and period the
template gives it (a datapoint published under another name or dimension set is not seen), and the
rest is done here: the few metric-math forms the stack uses, then the alarm's comparison,
M-out-of-N evaluation and missing-data rule. A form this module does not know raises
UnsupportedAlarm rather than guessing.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

Series = list[float | None]  # one value per period, oldest first; None: no datapoint


class UnsupportedAlarm(ValueError):
    """An alarm or expression form this evaluator does not model."""


@dataclass(frozen=True)
class Feed:
    """Datapoints of one metric as the product (or AWS) publishes it: one value per period, oldest
    first; None publishes nothing in that period."""

    namespace: str
    name: str
    dimensions: dict[str, str]
    values: Series


# ---- metric math ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|(>=|<=|==|!=|[-+*/()<>,]))")
_FUNCTIONS = {"FILL", "IF", "DIFF"}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _tokens(expression: str) -> list[str]:
    tokens, at = [], 0
    while at < len(expression.rstrip()):
        match = _TOKEN.match(expression, at)
        if match is None:
            raise UnsupportedAlarm(f"cannot read {expression[at:]!r} in {expression!r}")
        tokens.append(match.group(match.lastindex or 0))
        at = match.end()
    return tokens


class _Parser:
    """Recursive descent over: OR < AND < comparisons < + - < * < unary minus < calls, names,
    numbers and parentheses. Values are Series, evaluated as the tokens are read."""

    def __init__(self, expression: str, series: dict[str, Series], length: int) -> None:
        self.tokens = _tokens(expression)
        self.at = 0
        self.series = series
        self.length = length
        self.expression = expression

    def parse(self) -> Series:
        value = self._or()
        if self.at != len(self.tokens):
            raise UnsupportedAlarm(f"unexpected {self.tokens[self.at]!r} in {self.expression!r}")
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> str:
        token = self._peek()
        if token is None or (expected is not None and token != expected):
            raise UnsupportedAlarm(f"expected {expected or 'more'} in {self.expression!r}")
        self.at += 1
        return token

    def _binary(self, operand: Callable[[], Series], operators: dict[str, Callable[[float, float], Any]]
                ) -> Series:
        left = operand()
        while self._peek() in operators:
            op = operators[self._take()]
            right = operand()
            left = [None if a is None or b is None else float(op(a, b))
                    for a, b in zip(left, right, strict=True)]
        return left

    def _or(self) -> Series:
        return self._binary(self._and, {"OR": lambda a, b: bool(a) or bool(b)})

    def _and(self) -> Series:
        return self._binary(self._comparison, {"AND": lambda a, b: bool(a) and bool(b)})

    def _comparison(self) -> Series:
        return self._binary(self._sum, _COMPARE)

    def _sum(self) -> Series:
        return self._binary(self._product, {k: _ARITHMETIC[k] for k in "+-"})

    def _product(self) -> Series:
        # No division: CloudWatch's division by zero is not modelled, and the stack uses none.
        if "/" in self.tokens:
            raise UnsupportedAlarm(f"division is not modelled: {self.expression!r}")
        return self._binary(self._unary, {"*": _ARITHMETIC["*"]})

    def _unary(self) -> Series:
        if self._peek() == "-":
            self._take()
            return [None if v is None else -v for v in self._unary()]
        return self._atom()

    def _atom(self) -> Series:
        token = self._take()
        if token == "(":
            value = self._or()
            self._take(")")
            return value
        if re.fullmatch(r"\d+(?:\.\d+)?", token):
            return [float(token)] * self.length
        if self._peek() == "(":
            return self._call(token)
        if token not in self.series:
            raise UnsupportedAlarm(f"{token!r} is no metric of the alarm: {self.expression!r}")
        return self.series[token]

    def _call(self, name: str) -> Series:
        if name not in _FUNCTIONS:
            raise UnsupportedAlarm(f"function {name} is not modelled: {self.expression!r}")
        self._take("(")
        args = [self._or()]
        while self._peek() == ",":
            self._take()
            args.append(self._or())
        self._take(")")
        if name == "FILL" and len(args) == 2:
            # FILL(m, constant): a missing datapoint takes the constant.
            return [fill if v is None else v for v, fill in zip(args[0], args[1], strict=True)]
        if name == "DIFF" and len(args) == 1:
            # The change from the previous period; the first has none.
            values = args[0]
            return [None, *(None if a is None or b is None else b - a for a, b in itertools.pairwise(values))]
        if name == "IF" and len(args) == 3:
            return [None if c is None else (a if c else b) for c, a, b in zip(*args, strict=True)]
        raise UnsupportedAlarm(f"{name} with {len(args)} arguments is not modelled: {self.expression!r}")


def evaluate_expression(expression: str, series: dict[str, Series]) -> Series:
    """The expression over the metrics' per-period values (all of one length)."""
    lengths = {len(values) for values in series.values()}
    if len(lengths) != 1:
        raise UnsupportedAlarm(f"metrics of different lengths for {expression!r}")
    return _Parser(expression, series, lengths.pop()).parse()


# ---- the alarm ---------------------------------------------------------------------------------

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanOrEqualToThreshold": lambda v, t: v >= t, "GreaterThanThreshold": lambda v, t: v > t,
    "LessThanThreshold": lambda v, t: v < t, "LessThanOrEqualToThreshold": lambda v, t: v <= t}


def _resolve(value: Any) -> str:
    """A dimension value as the test names it: a resource reference becomes its logical id."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return value["Ref"]
    if isinstance(value, dict) and set(value) == {"Fn::GetAtt"}:
        return value["Fn::GetAtt"][0]
    raise UnsupportedAlarm(f"dimension value {value!r} is not modelled")


@dataclass(frozen=True)
class _Query:
    id: str
    namespace: str
    name: str
    dimensions: dict[str, str]
    stat: str
    period: int


def _queries(alarm: dict[str, Any]) -> tuple[list[_Query], str | None]:
    """The metrics an alarm reads and its expression (None: it watches one metric)."""
    if "Metrics" not in alarm:
        dims = {d["Name"]: _resolve(d["Value"]) for d in alarm.get("Dimensions", [])}
        if "ExtendedStatistic" in alarm or "Statistic" not in alarm:
            raise UnsupportedAlarm("only plain statistics are modelled")
        return [_Query("m", alarm["Namespace"], alarm["MetricName"], dims, alarm["Statistic"],
                       int(alarm["Period"]))], None
    queries, expressions = [], []
    for entry in alarm["Metrics"]:
        if "Expression" in entry:
            if entry.get("ReturnData", True) is False:
                raise UnsupportedAlarm("intermediate expressions are not modelled")
            expressions.append(entry["Expression"])
            continue
        stat = entry["MetricStat"]
        metric = stat["Metric"]
        queries.append(_Query(entry["Id"], metric["Namespace"], metric["MetricName"],
                              {d["Name"]: _resolve(d["Value"]) for d in metric.get("Dimensions", [])},
                              stat["Stat"], int(stat["Period"])))
    if len(expressions) != 1 or len({q.period for q in queries}) != 1:
        raise UnsupportedAlarm("one expression over metrics of one period is modelled")
    return queries, expressions[0]


def alarm_period(alarm: dict[str, Any]) -> int:
    return _queries(alarm)[0][0].period


def publish(cloudwatch: Any, feeds: Sequence[Feed], start: datetime, period: int) -> None:
    """Each feed's values into moto, one datapoint in the middle of each of its periods."""
    for feed in feeds:
        for index, value in enumerate(feed.values):
            if value is None:
                continue
            cloudwatch.put_metric_data(Namespace=feed.namespace, MetricData=[{
                "MetricName": feed.name, "Value": value,
                "Dimensions": [{"Name": k, "Value": v} for k, v in feed.dimensions.items()],
                "Timestamp": start + timedelta(seconds=index * period + period // 2)}])


def _fetch(cloudwatch: Any, query: _Query, start: datetime, periods: int) -> Series:
    """The query's statistic per period, from moto."""
    dimensions = [{"Name": k, "Value": v} for k, v in query.dimensions.items()]
    # moto's GetMetricData ignores the namespace when dimensions are given: ListMetrics does not.
    listed = cloudwatch.list_metrics(Namespace=query.namespace, MetricName=query.name,
                                     Dimensions=dimensions)["Metrics"]
    if not any(len(m["Dimensions"]) == len(dimensions) for m in listed):
        return [None] * periods
    answer = cloudwatch.get_metric_data(
        MetricDataQueries=[{"Id": query.id, "MetricStat": {
            "Metric": {"Namespace": query.namespace, "MetricName": query.name, "Dimensions": dimensions},
            "Period": query.period, "Stat": query.stat}}],
        StartTime=start, EndTime=start + timedelta(seconds=periods * query.period - 1))
    result = answer["MetricDataResults"][0]
    by_start = {t.astimezone(UTC): v for t, v in zip(result["Timestamps"], result["Values"], strict=True)}
    return [by_start.get(start + timedelta(seconds=k * query.period)) for k in range(periods)]


def alarm_values(cloudwatch: Any, alarm: dict[str, Any], start: datetime, periods: int) -> Series:
    """What the alarm sees each period: its metric's statistic, or its expression's value."""
    queries, expression = _queries(alarm)
    fetched = {q.id: _fetch(cloudwatch, q, start, periods) for q in queries}
    return fetched["m"] if expression is None else evaluate_expression(expression, fetched)


def alarm_state(alarm: dict[str, Any], values: Series) -> str:
    """ALARM, OK or INSUFFICIENT_DATA after the last period, by the alarm's rules."""
    compare = _OPERATORS.get(alarm["ComparisonOperator"])
    if compare is None:
        raise UnsupportedAlarm(f"comparison {alarm['ComparisonOperator']} is not modelled")
    threshold = float(alarm["Threshold"])
    wanted = int(alarm["EvaluationPeriods"])
    to_alarm = int(alarm.get("DatapointsToAlarm", wanted))
    missing = alarm.get("TreatMissingData", "missing")
    if missing == "missing":
        # CloudWatch looks further back for the datapoints it lacks.
        window: list[bool | None] = [compare(v, threshold) for v in values if v is not None][-wanted:]
        if not window:
            return "INSUFFICIENT_DATA"
    elif missing in ("breaching", "notBreaching"):
        window = [missing == "breaching" if v is None else compare(v, threshold) for v in values[-wanted:]]
    else:
        raise UnsupportedAlarm(f"TreatMissingData {missing} is not modelled")
    return "ALARM" if sum(bool(b) for b in window) >= to_alarm else "OK"
