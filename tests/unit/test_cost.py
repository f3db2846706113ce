"""The fleet's cost an hour and the saving of spot, with exact figures; the price list and spot price
adapters on botocore's Stubber with AWS's documented response shapes (moto has no Price List API and
gives every spot price as 0.00001); maintenance windows."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import ANY, Stubber

from spot_rebalancer.config import Price, Settings, Window
from spot_rebalancer.pricing import ON_DEMAND_SECONDS, SPOT_SECONDS, PriceList, price_list_region
from spot_rebalancer.rebalance import PriceBook, fleet_cost
from spot_rebalancer.rebalance.windows import open_window
from spot_rebalancer.rebalancer import Rebalancer, SnapshotView
from spot_rebalancer.snapshot import ClusterSnapshot
from spot_rebalancer.telemetry import MetricsRecorder
from tests.unit.builders import make_node

ON_DEMAND_PRICES = {"m6i.large": 0.096, "m6g.large": 0.077}
SPOT_PRICES = {("m6i.large", "eu-west-1a"): 0.0412, ("m6i.large", "eu-west-1b"): 0.0395,
               ("m6g.large", "eu-west-1a"): 0.0301}


def node(name: str, instance_type: str, zone: str, capacity: str, arch: str = "amd64"):
    return make_node(name, labels={"node.kubernetes.io/instance-type": instance_type,
                                   "topology.kubernetes.io/zone": zone,
                                   "eks.amazonaws.com/capacityType": capacity, "kubernetes.io/arch": arch})


FLEET = [node("od-1", "m6i.large", "eu-west-1a", "ON_DEMAND"),
         node("od-2", "m6i.large", "eu-west-1b", "ON_DEMAND"),
         node("spot-1", "m6i.large", "eu-west-1a", "SPOT"), node("spot-2", "m6i.large", "eu-west-1b", "SPOT"),
         node("spot-arm", "m6g.large", "eu-west-1a", "SPOT", arch="arm64"),
         node("odd", "x9.huge", "eu-west-1a", "SPOT")]


def test_the_fleet_priced_by_type_zone_and_capacity():
    cost = fleet_cost(FLEET, PriceBook(ON_DEMAND_PRICES, SPOT_PRICES))
    assert [(r.capacity_type, r.architecture, r.nodes, r.priced_nodes, r.per_hour) for r in cost.rows] == [
        ("on-demand", "amd64", 2, 2, 0.192),
        ("spot", "amd64", 3, 2, 0.0807),  # 0.0412 + 0.0395; x9.huge has no price
        ("spot", "arm64", 1, 1, 0.0301),
    ]
    assert cost.per_hour == 0.3028
    # (0.096 - 0.0412) + (0.096 - 0.0395) + (0.077 - 0.0301)
    assert cost.spot_saving_per_hour == 0.1582
    assert cost.unpriced == ("odd",)


def test_overrides_replace_list_and_spot_prices():
    overrides = {"m6i.large": Price(on_demand=0.06), "x9.huge": Price(spot=1.5)}
    cost = fleet_cost(FLEET, PriceBook(ON_DEMAND_PRICES, SPOT_PRICES, overrides))
    assert [r.per_hour for r in cost.rows] == [0.12, 1.5807, 0.0301]
    assert cost.spot_saving_per_hour == round((0.06 - 0.0412) + (0.06 - 0.0395) + (0.077 - 0.0301), 6)
    assert cost.unpriced == ()


def price_list_product(instance_type: str, usd: str) -> str:
    """One Price List product as GetProducts returns it: a JSON string."""
    return json.dumps({
        "product": {"productFamily": "Compute Instance",
                    "attributes": {"instanceType": instance_type, "regionCode": "eu-west-1",
                                   "operatingSystem": "Linux", "tenancy": "Shared"},
                    "sku": "8KTWXMVYEH7Q5ZAX"},
        "serviceCode": "AmazonEC2",
        "terms": {"OnDemand": {"8KTWXMVYEH7Q5ZAX.JRTCKXETXF": {
            "offerTermCode": "JRTCKXETXF", "sku": "8KTWXMVYEH7Q5ZAX",
            "priceDimensions": {"8KTWXMVYEH7Q5ZAX.JRTCKXETXF.6YS6EN2CT7": {
                "unit": "Hrs", "description": f"$0.107 per On Demand Linux {instance_type} Instance Hour",
                "pricePerUnit": {"USD": usd}, "beginRange": "0", "endRange": "Inf"}}}}},
    })


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_list_prices_are_asked_once_a_day_and_spot_prices_once_an_hour():
    pricing = boto3.client("pricing", region_name="us-east-1")
    ec2 = boto3.client("ec2", region_name="eu-west-1")
    clock = Clock()
    prices = PriceList(pricing, ec2, "eu-west-1", clock=clock)
    spot_history = {"SpotPriceHistory": [
        {"AvailabilityZone": "eu-west-1a", "InstanceType": "m6i.large", "ProductDescription": "Linux/UNIX",
         "SpotPrice": "0.041200", "Timestamp": datetime(2024, 3, 14, 9, 0, tzinfo=UTC)},
        {"AvailabilityZone": "eu-west-1a", "InstanceType": "m6i.large", "ProductDescription": "Linux/UNIX",
         "SpotPrice": "0.050000", "Timestamp": datetime(2024, 3, 14, 8, 0, tzinfo=UTC)},  # older
        {"AvailabilityZone": "eu-west-1b", "InstanceType": "m6i.large", "ProductDescription": "Linux/UNIX",
         "SpotPrice": "0.039500", "Timestamp": datetime(2024, 3, 14, 9, 0, tzinfo=UTC)}], "NextToken": ""}
    with Stubber(pricing) as listed, Stubber(ec2) as spot:
        listed.add_response("get_products", {"PriceList": [price_list_product("m6i.large", "0.0960000000")],
                                             "FormatVersion": "aws_v1"},
                            {"ServiceCode": "AmazonEC2", "Filters": ANY, "FormatVersion": "aws_v1"})
        spot.add_response("describe_spot_price_history", spot_history,
                          {"InstanceTypes": ["m6i.large"], "ProductDescriptions": ["Linux/UNIX"],
                           "StartTime": ANY})
        assert prices.on_demand(["m6i.large"]) == {"m6i.large": 0.096}
        assert prices.spot(["m6i.large"]) == {("m6i.large", "eu-west-1a"): 0.0412,
                                             ("m6i.large", "eu-west-1b"): 0.0395}
        clock.now += SPOT_SECONDS - 1
        assert prices.on_demand(["m6i.large"]) == {"m6i.large": 0.096}  # no call: the stubber has none
        assert prices.spot(["m6i.large"])[("m6i.large", "eu-west-1a")] == 0.0412
        listed.assert_no_pending_responses()
        spot.assert_no_pending_responses()
        spot.add_response("describe_spot_price_history", {"SpotPriceHistory": [
            {"AvailabilityZone": "eu-west-1a", "InstanceType": "m6i.large",
             "ProductDescription": "Linux/UNIX", "SpotPrice": "0.045000",
             "Timestamp": datetime(2024, 3, 14, 10, 0, tzinfo=UTC)}]})
        clock.now += 1
        assert prices.spot(["m6i.large"])[("m6i.large", "eu-west-1a")] == 0.045, "an hour on: asked again"
        listed.add_response("get_products", {"PriceList": [price_list_product("m6i.large", "0.0990000000")]})
        clock.now += ON_DEMAND_SECONDS
        assert prices.on_demand(["m6i.large"]) == {"m6i.large": 0.099}, "a day on: asked again"


def test_the_price_list_is_asked_where_it_answers():
    assert price_list_region("eu-west-1") == "us-east-1"
    assert price_list_region("cn-north-1") == "cn-northwest-1"


@pytest.mark.parametrize(("now", "inside"), [
    ("2024-03-14T20:59:59+00:00", False), ("2024-03-14T21:00:00+00:00", True),
    ("2024-03-15T00:59:59+00:00", True), ("2024-03-15T01:00:00+00:00", False),
    ("2024-03-16T21:30:00+00:00", False), ("2024-07-15T20:30:00+00:00", True),
], ids=["a second before it opens", "as it opens (22:00 in Paris)", "its last second", "as it closes",
        "a Saturday", "summer time: 22:30 in Paris is 20:30 UTC"])
def test_a_window_opens_at_its_cron_time_in_its_time_zone_for_its_minutes(now, inside):
    windows = (Window("0 22 * * 1-5", 240, "Europe/Paris"),)
    assert (open_window(windows, datetime.fromisoformat(now)) is not None) is inside


def test_any_of_several_windows_will_do():
    windows = (Window("0 2 * * *", 60), Window("0 14 * * 6,0", 120, "America/New_York"))
    assert open_window(windows, datetime(2024, 3, 16, 18, 30, tzinfo=UTC)) == windows[1]  # Sat 14:30 EDT
    assert open_window(windows, datetime(2024, 3, 16, 2, 59, tzinfo=UTC)) == windows[0]
    assert open_window(windows, datetime(2024, 3, 16, 3, 0, tzinfo=UTC)) is None


def test_windows_and_prices_are_settings():
    settings = Settings.from_env({"REBALANCE_WINDOWS": '[{"cron": "0 22 * * 1-5", "minutes": 240}]',
                                  "PRICE_OVERRIDES": '{"m6i.large": {"onDemand": 0.06}}'})
    assert settings.rebalance_windows == (Window("0 22 * * 1-5", 240, "UTC"),)
    assert dict(settings.price_overrides) == {"m6i.large": Price(on_demand=0.06)}
    assert Settings.from_env(settings.to_env()) == settings


def test_prices_the_operator_set_are_not_asked_for():
    """Only the m6i.large spot price is left to ask: the list price and both m6g.large prices are set.
    A Stubber holding that one answer fails the census on any other call (counted as PricingErrors)."""
    pricing = boto3.client("pricing", region_name="us-east-1")
    ec2 = boto3.client("ec2", region_name="eu-west-1")
    fleet = [n for n in FLEET if n.metadata.name != "odd"]
    settings = Settings(cluster_name="test", dry_run=True, price_overrides=(
        ("m6g.large", Price(on_demand=0.077, spot=0.03)), ("m6i.large", Price(on_demand=0.096))))
    metrics = MetricsRecorder()
    rebalancer = Rebalancer(settings, None, metrics, None, view=SnapshotView(ClusterSnapshot(nodes=fleet)),
                            prices=PriceList(pricing, ec2, "eu-west-1"))
    with Stubber(pricing) as listed, Stubber(ec2) as spot:
        spot.add_response("describe_spot_price_history", {"SpotPriceHistory": [
            {"AvailabilityZone": zone, "InstanceType": "m6i.large", "ProductDescription": "Linux/UNIX",
             "SpotPrice": price, "Timestamp": datetime(2024, 3, 14, 9, 0, tzinfo=UTC)}
            for zone, price in (("eu-west-1a", "0.0412"), ("eu-west-1b", "0.0395"))]},
            {"InstanceTypes": ["m6i.large"], "ProductDescriptions": ["Linux/UNIX"], "StartTime": ANY})
        cost = rebalancer.census().cost
        listed.assert_no_pending_responses()
        spot.assert_no_pending_responses()
    assert metrics.total("PricingErrors", ClusterName="test") == 0
    assert cost is not None and cost.unpriced == ()
    assert cost.per_hour == round(0.096 * 2 + 0.0412 + 0.0395 + 0.03, 6)
