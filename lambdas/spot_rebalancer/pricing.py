"""List prices from the AWS Price List Query API and current spot prices from EC2, cached.

On-demand list prices change rarely (kept a day); spot prices move (kept an hour). Only the instance
types and zones the fleet runs are asked for. Linux, shared tenancy, no pre-installed software: what
EKS nodes run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

ON_DEMAND_SECONDS = 24 * 3600
SPOT_SECONDS = 3600
# The Price List Query API answers in a few Regions only; these serve every Region of their partition.
PRICE_LIST_REGIONS = {"aws": "us-east-1", "aws-cn": "cn-northwest-1"}
_LINUX_ON_DEMAND = {"operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA",
                    "capacitystatus": "Used", "licenseModel": "No License required"}


def price_list_region(region: str) -> str:
    return PRICE_LIST_REGIONS["aws-cn" if region.startswith("cn-") else "aws"]


class PriceList:
    def __init__(self, pricing: Any, ec2: Any, region: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._pricing = pricing
        self._ec2 = ec2
        self._region = region
        self._clock = clock
        self._on_demand: dict[str, tuple[float, float | None]] = {}  # type -> (fetched at, $/hour)
        self._spot: dict[tuple[str, str], tuple[float, float]] = {}  # (type, zone) -> (fetched at, $/h)
        self._spot_asked: dict[str, float] = {}  # type -> when its spot prices were fetched

    def on_demand(self, instance_types: Iterable[str]) -> dict[str, float]:
        """$/hour of each type that has a list price here."""
        now = self._clock()
        for instance_type in set(instance_types):
            cached = self._on_demand.get(instance_type)
            if cached is None or now - cached[0] >= ON_DEMAND_SECONDS:
                self._on_demand[instance_type] = (now, self._list_price(instance_type))
        return {t: price for t, (_, price) in self._on_demand.items() if price is not None}

    def spot(self, instance_types: Iterable[str]) -> dict[tuple[str, str], float]:
        """$/hour of each type in each zone of the Region, as EC2 prices it now."""
        now = self._clock()
        stale = sorted(t for t in set(instance_types)
                       if now - self._spot_asked.get(t, float("-inf")) >= SPOT_SECONDS)
        if stale:
            for (instance_type, zone), price in self._spot_prices(stale).items():
                self._spot[instance_type, zone] = (now, price)
            self._spot_asked.update(dict.fromkeys(stale, now))
        return {key: price for key, (_, price) in self._spot.items()}

    def _list_price(self, instance_type: str) -> float | None:
        filters = [{"Type": "TERM_MATCH", "Field": field, "Value": value}
                   for field, value in {"instanceType": instance_type, "regionCode": self._region,
                                        **_LINUX_ON_DEMAND}.items()]
        pages = self._pricing.get_paginator("get_products").paginate(
            ServiceCode="AmazonEC2", Filters=filters, FormatVersion="aws_v1")
        for page in pages:
            for product in page.get("PriceList", []):
                price = _hourly_on_demand(json.loads(product) if isinstance(product, str) else product)
                if price is not None:
                    return price
        return None

    def _spot_prices(self, instance_types: list[str]) -> dict[tuple[str, str], float]:
        # With a start time of now, EC2 returns the price in effect now, once per type and zone.
        pages = self._ec2.get_paginator("describe_spot_price_history").paginate(
            InstanceTypes=instance_types, ProductDescriptions=["Linux/UNIX"], StartTime=datetime.now(UTC))
        latest: dict[tuple[str, str], tuple[datetime, float]] = {}
        for page in pages:
            for entry in page.get("SpotPriceHistory", []):
                key = (entry["InstanceType"], entry["AvailabilityZone"])
                stamp = entry["Timestamp"]
                if key not in latest or stamp > latest[key][0]:
                    latest[key] = (stamp, float(entry["SpotPrice"]))
        return {key: price for key, (_, price) in latest.items()}


def _hourly_on_demand(product: dict[str, Any]) -> float | None:
    """The hourly USD price in a Price List product's on-demand terms (the first one above zero)."""
    for offer in product.get("terms", {}).get("OnDemand", {}).values():
        for dimension in offer.get("priceDimensions", {}).values():
            usd = dimension.get("pricePerUnit", {}).get("USD")
            if dimension.get("unit") == "Hrs" and usd is not None and float(usd) > 0:
                return float(usd)
    return None
