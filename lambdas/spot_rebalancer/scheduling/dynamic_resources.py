"""Dynamic resource allocation (the DynamicResources plugin), refused rather than simulated.

A pod's `resourceClaims` name ResourceClaims whose devices the scheduler allocates from
ResourceSlices on the chosen node (or keeps where an allocated claim already is). A snapshot holds
neither claims nor slices, so the planner cannot show that a target would meet them; such a pod is
not moved, which is always safe.
"""

from __future__ import annotations

from ..objects import Pod


def unproven_claims(pod: Pod) -> str | None:
    """Why the pod's resource claims keep it where it is, or None when it has none."""
    claims = pod.spec.resource_claims
    if not claims:
        return None
    names = ", ".join(c.name for c in claims[:3]) + (", ..." if len(claims) > 3 else "")
    return f"dynamic resource claims ({names})"
