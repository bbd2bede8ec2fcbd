"""Placement policy: load and validate ``policy.json``, rank zones for a request, explain.

* :mod:`~federator.policy.model` - the typed document;
* :mod:`~federator.policy.loader` - reading, validation and reference checks;
* :mod:`~federator.policy.schema` - the JSON Schema committed in ``policies/``;
* :mod:`~federator.policy.evaluate` - the pure ranking of candidate zones.

The reference for operators is ``docs/policy.md``.
"""

from federator.policy.evaluate import (
    Candidate,
    Limits,
    PlacementRequest,
    Ranking,
    Verdict,
    ZoneLoad,
    rank,
    threshold_figures,
    zone_weighing,
)
from federator.policy.loader import (
    API_SOURCE,
    LoadedPolicy,
    PolicyContext,
    load_policy,
    parse_policy,
)
from federator.policy.model import Policy, Weighing
from federator.policy.schema import policy_json_schema, render_schema

__all__ = [
    "API_SOURCE",
    "Candidate",
    "Limits",
    "LoadedPolicy",
    "PlacementRequest",
    "Policy",
    "PolicyContext",
    "Ranking",
    "Verdict",
    "Weighing",
    "ZoneLoad",
    "load_policy",
    "parse_policy",
    "policy_json_schema",
    "rank",
    "render_schema",
    "threshold_figures",
    "zone_weighing",
]
