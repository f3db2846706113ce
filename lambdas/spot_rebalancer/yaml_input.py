"""YAML input for the CLI (`kubectl get ... -o yaml`), read as the JSON it stands for.

Safe by construction: PyYAML's safe loader builds only plain values, and aliases are refused outright
(a Kubernetes List never needs them, and a few nested ones expand into billions of nodes: "billion
laughs"). Timestamps stay text, as in JSON.
"""

from __future__ import annotations

import json
from typing import Any

import yaml


class YamlInputError(ValueError):
    """YAML that is not plain data, or not YAML at all."""


class _PlainLoader(yaml.SafeLoader):
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise YamlInputError(f"line {mark.line + 1}: YAML aliases are refused (a Kubernetes List "
                                 "needs none, and they can expand without bound)")
        return super().compose_node(parent, index)


# Timestamps stay strings, as the API serves them in JSON.
_PlainLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def yaml_as_json(data: bytes, source: str) -> bytes:
    """The JSON text of one YAML document."""
    try:
        value = yaml.load(data, Loader=_PlainLoader)  # a SafeLoader, without aliases
        return json.dumps(value).encode()
    except YamlInputError as exc:
        raise YamlInputError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise YamlInputError(f"{source}: not YAML or JSON: {exc}") from None
    except (TypeError, ValueError) as exc:  # binary or non-finite values JSON cannot hold
        raise YamlInputError(f"{source}: YAML holds a value JSON cannot: {exc}") from None
