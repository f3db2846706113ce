"""Which budgets cover a pod: the indexed lookup against every budget of the namespace asked in turn,
over selectors by labels, by expressions only, empty (everything), missing (nothing) and invalid."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from spot_rebalancer.label_selector import SelectorError
from spot_rebalancer.objects import LabelSelector, LabelSelectorRequirement
from spot_rebalancer.rebalance.budgets import DisruptionBudgets
from spot_rebalancer.scheduling.labels import selector_matches
from tests.unit.builders import make_pdb, make_pod

KEYS, VALUES = ["app", "tier"], ["a", "b"]
label_sets = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=2)
expressions = st.builds(
    lambda key, operator, values: LabelSelectorRequirement(key=key, operator=operator, values=values),
    st.sampled_from(KEYS), st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Bogus"]),
    st.lists(st.sampled_from(VALUES), max_size=2))
selectors = st.none() | st.builds(
    lambda labels, exprs: LabelSelector(match_labels=labels, match_expressions=exprs),
    label_sets, st.lists(expressions, max_size=2))


def one_by_one(pdbs, pod):
    """Every budget of the pod's namespace, in order; the first invalid selector asked raises."""
    return [f"{b.metadata.namespace}/{b.metadata.name}" for b in pdbs
            if b.metadata.namespace == pod.metadata.namespace
            and selector_matches(b.spec.selector, pod.metadata.labels)]


def outcome(function, *args):
    try:
        return function(*args)
    except SelectorError as exc:
        return str(exc)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(selectors, st.sampled_from(["default", "team"])), max_size=6),
       st.lists(st.tuples(label_sets, st.sampled_from(["default", "team"])), min_size=1, max_size=4))
def test_the_budgets_covering_a_pod_are_those_whose_selector_picks_it_in_its_namespace(budgets, pods):
    pdbs = []
    for i, (selector, namespace) in enumerate(budgets):
        pdb = make_pdb(f"pdb-{i}", {}, 1, namespace=namespace)
        pdb.spec.selector = selector
        pdbs.append(pdb)
    index = DisruptionBudgets(pdbs)
    for i, (labels, namespace) in enumerate(pods):
        pod = make_pod(f"p{i}", labels=labels, namespace=namespace)
        assert outcome(index.covering, pod) == outcome(one_by_one, pdbs, pod)
