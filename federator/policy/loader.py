"""Read and validate a policy document, reporting every problem at once.

Validation runs in three passes whose problems are reported together:

1. JSON syntax (with line and column) and duplicate keys, which ``json`` would
   otherwise silently resolve to the last value;
2. the document model (:mod:`federator.policy.model`): unknown keys, types, ranges,
   low/high order, repeated names;
3. when a :class:`PolicyContext` is given, references to the broker configuration:
   zones, overflow targets, flavors and images must exist and be of the right kind.

Pass 3 reads the raw document leniently rather than the validated model, so a typo in one
place does not hide a bad reference in another.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from federator.config import NAME_PATTERN, Settings
from federator.exception import PolicyInvalid
from federator.policy.model import (
    CONSISTENCY_ERROR,
    Policy,
    consistency_problems,
)
from federator.policy.problems import PathPart, Problem
from federator.policy.schema import policy_json_schema

__all__ = ["API_SOURCE", "LoadedPolicy", "PolicyContext", "load_policy", "parse_policy"]

API_SOURCE = "<api>"
_ZONE_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """What the broker configuration defines, for checking a policy's references."""

    local_zones: tuple[str, ...]
    """Local zone names, in configuration order."""
    virtual_zones: tuple[str, ...]
    """Virtual zone names, in configuration order."""
    flavors: Mapping[str, str]
    """Flavor id -> flavor name; rules may name either."""
    images: Mapping[str, str]
    """Image id -> image name; rules may name either."""

    @classmethod
    def from_settings(cls, settings: Settings) -> PolicyContext:
        return cls(
            local_zones=tuple(z.name for z in settings.zones if z.kind == "local"),
            virtual_zones=tuple(z.name for z in settings.zones if z.kind == "virtual"),
            flavors=MappingProxyType({f.id: f.name for f in settings.flavors}),
            images=MappingProxyType({i.id: i.name for i in settings.images}),
        )

    @property
    def zones(self) -> tuple[str, ...]:
        """Every zone: the local ones, then the virtual ones."""
        return self.local_zones + self.virtual_zones

    def kind(self, zone: str) -> Literal["local", "virtual"] | None:
        """The kind of a configured zone, or None when the configuration has no such zone."""
        if zone in self.local_zones:
            return "local"
        if zone in self.virtual_zones:
            return "virtual"
        return None

    def has_flavor(self, ref: str) -> bool:
        return ref in self.flavors or ref in self.flavors.values()

    def has_image(self, ref: str) -> bool:
        return ref in self.images or ref in self.images.values()


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """A validated policy and the exact document it came from."""

    policy: Policy
    source: str
    """The file path, or ``"<api>"`` for a document posted to the API."""
    sha256: str
    """Hex SHA-256 of the raw bytes (of the UTF-8 text for :func:`parse_policy`)."""
    text: str


def load_policy(path: Path, context: PolicyContext | None) -> LoadedPolicy:
    """Read and validate the policy file at ``path``.

    :param context: the broker configuration to check references against; None checks
        the document alone.
    :raises PolicyInvalid: the file is unreadable, not UTF-8 or invalid; ``problems``
        lists every problem found.
    """
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PolicyInvalid(
            source, [Problem("$", f"cannot read policy file {source}: {reason}").as_dict()]
        ) from exc
    try:
        text = raw.decode("utf-8-sig")  # tolerate the BOM some editors write
    except UnicodeDecodeError as exc:
        raise PolicyInvalid(
            source,
            [Problem("$", f"not UTF-8 text: invalid byte at offset {exc.start}").as_dict()],
        ) from exc
    return _validate(text, source, context, hashlib.sha256(raw).hexdigest())


def parse_policy(text: str, source: str, context: PolicyContext | None) -> LoadedPolicy:
    """Validate a policy document given as text (for example, the body of an API request).

    :param source: how to name the document in problems, usually ``"<api>"``.
    :raises PolicyInvalid: ``problems`` lists every problem found.
    """
    return _validate(text, source, context, hashlib.sha256(text.encode("utf-8")).hexdigest())


def _validate(text: str, source: str, context: PolicyContext | None, sha256: str) -> LoadedPolicy:
    try:
        data = json.loads(text, object_pairs_hook=_Object, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        problem = Problem("$", f"invalid JSON: {exc.msg}", line=exc.lineno, column=exc.colno)
        raise PolicyInvalid(source, [problem.as_dict()]) from exc
    except _NotJsonError as exc:
        raise PolicyInvalid(source, [Problem("$", str(exc)).as_dict()]) from exc
    except RecursionError as exc:
        raise PolicyInvalid(source, [Problem("$", "JSON nested too deeply").as_dict()]) from exc

    problems = list(_duplicate_keys(data))
    policy: Policy | None = None
    try:
        policy = Policy.model_validate_json(text)
    except ValidationError as exc:
        problems.extend(_model_problems(exc, data))
    problems.extend(_part_problems(data, context))
    if problems or policy is None:
        # policy is None only if validation failed, and then problems is not empty.
        raise PolicyInvalid(source, [p.as_dict() for p in _unique(problems)])
    return LoadedPolicy(policy=policy, source=source, sha256=sha256, text=text)


# --- pass 1: JSON ---------------------------------------------------------------------


class _NotJsonError(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NotJsonError(f"invalid JSON: {name} is not a JSON number")


class _Object(dict[str, Any]):
    """A JSON object that remembers which keys appeared more than once."""

    __slots__ = ("duplicates",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.duplicates: list[str] = []
        for key, value in pairs:
            if key in self and key not in self.duplicates:
                self.duplicates.append(key)
            self[key] = value


def _duplicate_keys(root: Any) -> Iterator[Problem]:
    # Iterative, so a deeply nested document cannot exhaust the interpreter's stack.
    stack: list[tuple[Any, tuple[PathPart, ...]]] = [(root, ())]
    while stack:
        node, parts = stack.pop()
        if isinstance(node, _Object):
            for key in node.duplicates:
                yield Problem.at(parts, f"duplicate key {key!r}")
            stack.extend((value, (*parts, key)) for key, value in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((value, (*parts, i)) for i, value in reversed(list(enumerate(node))))


# --- pass 2: the model ----------------------------------------------------------------


def _model_problems(exc: ValidationError, data: Any) -> Iterator[Problem]:
    for err in exc.errors(include_url=False):
        if err["type"] == CONSISTENCY_ERROR:
            # The same checks run in _part_problems; duplicates are dropped later.
            for problem in err.get("ctx", {}).get("problems", ()):
                yield Problem(problem["path"], problem["message"])
        else:
            yield _translate(err, data)


def _translate(err: ErrorDetails, data: Any) -> Problem:
    """Turn one pydantic error into a problem located by JSON path."""
    parts: list[PathPart] = []
    node: Any = data
    is_key = False
    for elem in err["loc"]:
        if elem == "[key]":  # the error is about a mapping key, not its value
            is_key = True
            continue
        if _is_union_tag(elem, node):
            continue  # pydantic names the rule's action in the location; JSON paths do not
        parts.append(elem)
        node = _child(node, elem)

    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        key = str(parts[-1])
        message = f"unknown key {key!r}{_suggest(key, _keys_at(parts[:-1], data))}"
    elif kind == "missing":
        message = f"missing required key {parts[-1]!r}"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        actions = ", ".join(_RULE_ACTIONS)
        parts.append("action")
        if kind == "union_tag_not_found":
            message = f"missing required key 'action' (one of: {actions})"
        else:
            message = f"unknown action {_show(_child(node, 'action'))} (one of: {actions})"
    elif is_key:
        message = f"invalid name {value!r}: {_clean(err['msg'])}"
    elif kind in ("value_error", "assertion_error", "json_invalid"):
        message = _clean(err["msg"])
    else:
        message = f"{_clean(err['msg'])} (got {_show(value)})"
    return Problem.at(parts, message)


_RULE_ACTIONS = ("stay_local", "restrict", "limit_overflow", "deny")


def _is_union_tag(elem: PathPart, node: Any) -> bool:
    return (
        isinstance(elem, str)
        and isinstance(node, dict)
        and elem not in node
        and node.get("action") == elem
    )


def _child(node: Any, elem: PathPart) -> Any:
    if isinstance(node, dict) and isinstance(elem, str):
        return node.get(elem)
    if isinstance(node, list) and isinstance(elem, int) and 0 <= elem < len(node):
        return node[elem]
    return None


def _clean(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _suggest(key: str, allowed: Sequence[str]) -> str:
    if not allowed:
        return ""
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (allowed: {', '.join(allowed)})"


@functools.cache
def _schema() -> dict[str, Any]:
    return policy_json_schema()


def _keys_at(parts: Sequence[PathPart], data: Any) -> list[str]:
    """The keys the schema allows in the object at ``parts`` of ``data``."""
    schema = _schema()
    node: dict[str, Any] = schema
    value = data
    for part in parts:
        node = _resolve(node, value, schema["$defs"])
        if isinstance(part, int):
            node = node.get("items", {})
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        elif node.get("patternProperties"):
            node = next(iter(node["patternProperties"].values()))
        else:
            return []
        value = _child(value, part)
    return list(_resolve(node, value, schema["$defs"]).get("properties", {}))


def _resolve(node: dict[str, Any], value: Any, defs: Mapping[str, Any]) -> dict[str, Any]:
    """Follow references, the rule discriminator and optional (``null``) alternatives."""
    while True:
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
        elif "discriminator" in node:
            tag = (
                value.get(node["discriminator"]["propertyName"])
                if isinstance(value, dict)
                else None
            )
            ref = node["discriminator"]["mapping"].get(tag)
            if ref is None:
                return {}
            node = {"$ref": ref}
        elif "anyOf" in node:
            node = next((o for o in node["anyOf"] if o.get("type") != "null"), {})
        else:
            return node


# --- pass 3: consistency and references ----------------------------------------------


@dataclass(frozen=True, slots=True)
class _References:
    """What a document names, read leniently from the raw JSON.

    Values of the wrong type are left out here; the model pass reports them.
    """

    zones: tuple[str, ...]
    overflow: Mapping[str, tuple[str, ...]]
    quota_zones: frozenset[str]
    rule_names: tuple[tuple[int, str], ...]
    rule_lists: tuple[tuple[int, str, tuple[str, ...]], ...]
    """``(rule index, field, values)`` for restrict ``azs`` and limit_overflow ``targets``."""
    rule_matches: tuple[tuple[int, str, tuple[str, ...]], ...]
    """``(rule index, match field, values)`` for ``flavors`` and ``images``."""

    @classmethod
    def read(cls, data: Any) -> _References:
        raw_zones = _object(_child(data, "zones"))
        raw_rules = _child(data, "rules")
        rules = list(enumerate(raw_rules)) if isinstance(raw_rules, list) else []
        overflow: dict[str, tuple[str, ...]] = {}
        for name, zone in raw_zones.items():
            targets = _strings(_child(zone, "overflow"))
            if targets:
                overflow[name] = targets
        lists: list[tuple[int, str, tuple[str, ...]]] = []
        matches: list[tuple[int, str, tuple[str, ...]]] = []
        for i, rule in rules:
            field = {"restrict": "azs", "limit_overflow": "targets"}.get(_child(rule, "action"))
            if field is not None:
                lists.append((i, field, _strings(_child(rule, field))))
            for what in ("flavors", "images"):
                matches.append((i, what, _strings(_child(_child(rule, "match"), what))))
        return cls(
            zones=tuple(raw_zones),
            overflow=overflow,
            quota_zones=frozenset(
                n for n, z in raw_zones.items() if _child(z, "quota") is not None
            ),
            rule_names=tuple((i, n) for i, r in rules if isinstance(n := _child(r, "name"), str)),
            rule_lists=tuple(lists),
            rule_matches=tuple(matches),
        )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> tuple[str, ...]:
    """A list of strings, or () when it is anything else (so indices stay true)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return ()
    return tuple(value)


def _part_problems(data: Any, context: PolicyContext | None) -> list[Problem]:
    """Whole-document and reference checks, run on the raw document so they also cover the
    well-formed parts of a document that has other problems."""
    refs = _References.read(data)
    problems = consistency_problems(refs.overflow, refs.rule_names)
    if context is not None:
        problems.extend(_reference_problems(refs, context))
    return problems


def _reference_problems(refs: _References, context: PolicyContext) -> Iterator[Problem]:
    all_zones = f"configured zones: {_listing(context.zones)}"
    virtual = f"virtual zones: {_listing(context.virtual_zones)}"

    def not_virtual(parts: tuple[PathPart, ...], target: str) -> Problem:
        local = "; it is a local zone" if context.kind(target) == "local" else ""
        return Problem.at(
            parts, f"overflow target {target!r} is not a configured virtual zone{local} ({virtual})"
        )

    for name in refs.zones:
        kind = context.kind(name)
        if kind is None:
            if _ZONE_NAME.match(name):  # a malformed name is reported by the model pass
                yield Problem.at(("zones", name), f"zone {name!r} is not configured ({all_zones})")
            continue
        targets = refs.overflow.get(name, ())
        if kind == "virtual" and targets:
            yield Problem.at(
                ("zones", name, "overflow"),
                f"zone {name!r} is a virtual zone; only local zones overflow",
            )
        if kind == "local":
            for i, target in enumerate(targets):
                if target != name and context.kind(target) != "virtual":
                    yield not_virtual(("zones", name, "overflow", i), target)
            if name in refs.quota_zones:
                yield Problem.at(
                    ("zones", name, "quota"),
                    f"zone {name!r} is a local zone; quotas apply to virtual zones only"
                    " (local capacity is enforced host by host)",
                )
    for index, field, zones in refs.rule_lists:
        for i, zone in enumerate(zones):
            parts = ("rules", index, field, i)
            if field == "targets" and context.kind(zone) != "virtual":
                yield not_virtual(parts, zone)
            elif context.kind(zone) is None:
                yield Problem.at(parts, f"zone {zone!r} is not configured ({all_zones})")
    for index, what, values in refs.rule_matches:
        exists = context.has_flavor if what == "flavors" else context.has_image
        names = context.flavors.values() if what == "flavors" else context.images.values()
        yield from _unknown_refs(("rules", index, "match", what), values, exists, what[:-1], names)


def _unknown_refs(
    parts: tuple[PathPart, ...],
    refs: Sequence[str],
    exists: Callable[[str], bool],
    what: str,
    names: Iterable[str],
) -> Iterator[Problem]:
    for i, ref in enumerate(refs):
        if not exists(ref):
            yield Problem.at(
                (*parts, i),
                f"{what} {ref!r} is not configured ({what}s, by name or id: {_listing(names)})",
            )


def _listing(names: Iterable[str]) -> str:
    items = list(names)
    return ", ".join(items) if items else "none"


def _unique(problems: Iterable[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))
