"""spot-rebalancer: keeps EKS spot/on-demand fleets drained, labelled and balanced."""
