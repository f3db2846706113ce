"""The spot-rebalancer CDK app: the reusable `SpotRebalancer` construct, its config and its stack."""

from .config import RecommendationPolicy, SpotRebalancerConfig, SpotRebalancerConfigError
from .construct import KUBERNETES_GROUP, SpotRebalancer
from .stack import SpotRebalancerStack

__all__ = [
    "KUBERNETES_GROUP",
    "RecommendationPolicy",
    "SpotRebalancer",
    "SpotRebalancerConfig",
    "SpotRebalancerConfigError",
    "SpotRebalancerStack",
]
