"""spot-rebalancer: keeps EKS spot/on-demand fleets drained, labelled and balanced."""

__version__ = "0.1.0"
