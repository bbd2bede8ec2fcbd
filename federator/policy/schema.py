"""The JSON Schema of policy documents, as committed in ``policies/policy.schema.json``.

The schema is generated from :mod:`federator.policy.model`; a test fails when the
committed file drifts. Regenerate it with::

    federator policy schema > policies/policy.schema.json
"""

from __future__ import annotations

import json
from typing import Any

from federator.policy.model import Policy

__all__ = ["SCHEMA_DIALECT", "policy_json_schema", "render_schema"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a policy document.

    Unknown keys are rejected everywhere (``additionalProperties: false``), as the broker
    rejects them; the optional ``$schema`` key is allowed so editors can find the schema.
    """
    schema = Policy.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = SCHEMA_DIALECT
    schema["title"] = "federator placement policy"
    schema["description"] = (
        "When local zones overflow to virtual availability zones backed by remote clouds, "
        "and which requests may go where. Reference: docs/policy.md."
    )
    return schema


def render_schema() -> str:
    """The exact text of ``policies/policy.schema.json``."""
    return json.dumps(policy_json_schema(), indent=2, sort_keys=True) + "\n"
