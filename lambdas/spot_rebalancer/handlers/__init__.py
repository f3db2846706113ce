"""Lambda entry points: thin adapters from AWS invocations to the package's services."""
