"""Policy documents shipped with federator: the JSON Schema, the default and examples."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_POLICY = HERE / "default.json"
SCHEMA = HERE / "policy.schema.json"
