"""A virtual cluster's body: parsed, checked, and turned into what the planner reads.

The seed's example bodies repeat ``instance`` and ``grouping`` keys; the API keeps its
names and structure with lists instead::

    {"vcluster": {"name": "db",
                  "instances": [{"name": "db-server-1", "type": "server",
                                 "spec": {"imageRef": "cirros", "flavorRef": "m1.small"}},
                                {"name": "db-vol-1", "type": "volume",
                                 "spec": {"size": 10, "volume_type": ""}}],
                  "groupings": [{"name": "group-1",
                                 "membersRef": ["db-server-1", "db-vol-1"],
                                 "spec": {"rule": "affinity"}}]}}

Every problem is reported with the JSON path of the value at fault
(``vcluster.groupings[2].membersRef[1]``), all of them at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from federator.config import Settings
from federator.exception import BadRequest
from federator.groups.rules import AFFINITY, ANTI_AFFINITY, POLICIES, SCOPES, Rule
from federator.vclusters.model import SERVER, VOLUME, Grouping, Member

__all__ = ["ClusterSpec", "InstanceSpec", "parse_cluster"]

SYNONYMS = {"proximity": AFFINITY}
"""Rule names the seed uses for the server-group rules."""
MAX_NAME = 255
MAX_MEMBERS = 1000


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """One member as asked for: a server's flavor and image (resolved to ids), or a
    volume's size and type (None: the default type)."""

    name: str
    kind: str
    flavor_id: str | None = None
    image_id: str | None = None
    size_gb: int = 0
    volume_type: str | None = None
    availability_zone: str | None = None


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    name: str
    instances: tuple[InstanceSpec, ...]
    groupings: tuple[Grouping, ...]

    def members(self, settings: Settings) -> list[Member]:
        """The planner's view: each server with its flavor's size, each volume with its."""
        found = []
        for i in self.instances:
            if i.kind == SERVER:
                flavor = settings.flavor(i.flavor_id or "")
                assert flavor is not None  # resolved by parse_cluster
                found.append(Member(i.name, SERVER, flavor.vcpus, flavor.ram_mb, flavor.disk_gb))
            else:
                found.append(Member(i.name, VOLUME, size_gb=i.size_gb))
        return found


class _Problems:
    def __init__(self) -> None:
        self.found: list[dict[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.found.append({"field": path, "message": message})


def parse_cluster(body: Any, settings: Settings) -> ClusterSpec:
    """The cluster ``body`` asks for, with flavors, images and volume types resolved.

    :raises BadRequest: naming the JSON path of every value at fault.
    """
    p = _Problems()
    root = body.get("vcluster") if isinstance(body, Mapping) else None
    if not isinstance(root, Mapping):
        raise BadRequest(
            "vcluster: the body must be an object with a 'vcluster' object",
            problems=[{"field": "vcluster", "message": "required object"}],
        )
    name = _name(root.get("name"), "vcluster.name", p)
    instances = _instances(root.get("instances"), settings, p)
    names = {i.name for i in instances}
    kinds = {i.name: i.kind for i in instances}
    groupings = _groupings(root.get("groupings", []), names, kinds, p)
    _contradictions(groupings, p)
    for key in root:
        if key not in ("name", "instances", "groupings", "description"):
            p.add(f"vcluster.{key}", "unknown field")
    if p.found:
        first = p.found[0]
        more = f" (and {len(p.found) - 1} more)" if len(p.found) > 1 else ""
        raise BadRequest(f"{first['field']}: {first['message']}{more}", problems=p.found)
    return ClusterSpec(name or "", tuple(instances), tuple(groupings))


def _name(value: Any, path: str, p: _Problems) -> str | None:
    if not isinstance(value, str) or not value.strip():
        p.add(path, "required: a non-empty string")
        return None
    if len(value) > MAX_NAME:
        p.add(path, f"at most {MAX_NAME} characters")
        return None
    return value


def _instances(value: Any, settings: Settings, p: _Problems) -> list[InstanceSpec]:
    path = "vcluster.instances"
    if not isinstance(value, list) or not value:
        p.add(path, "required: a non-empty list of instances")
        return []
    if len(value) > MAX_MEMBERS:
        p.add(path, f"at most {MAX_MEMBERS} instances")
        return []
    found: list[InstanceSpec] = []
    seen: dict[str, int] = {}
    for n, item in enumerate(value):
        at = f"{path}[{n}]"
        if not isinstance(item, Mapping):
            p.add(at, "must be an object")
            continue
        name = _name(item.get("name"), f"{at}.name", p)
        if name is not None and name in seen:
            p.add(f"{at}.name", f"duplicate instance name {name!r} (also {path}[{seen[name]}])")
            name = None
        if name is not None:
            seen[name] = n
        kind = item.get("type")
        spec = item.get("spec")
        if kind not in (SERVER, VOLUME):
            p.add(f"{at}.type", f"must be 'server' or 'volume', not {kind!r}")
            continue
        if not isinstance(spec, Mapping):
            p.add(f"{at}.spec", "required object")
            continue
        made = (_server if kind == SERVER else _volume)(name, spec, f"{at}.spec", settings, p)
        if made is not None and name is not None:
            found.append(made)
    return found


def _server(
    name: str | None, spec: Mapping[str, Any], at: str, settings: Settings, p: _Problems
) -> InstanceSpec | None:
    flavor_ref, image_ref = spec.get("flavorRef"), spec.get("imageRef")
    flavor = settings.flavor(str(flavor_ref)) if flavor_ref is not None else None
    image = settings.image(str(image_ref)) if image_ref is not None else None
    for key, ref, found, what in (("flavorRef", flavor_ref, flavor, "flavor"),
                                  ("imageRef", image_ref, image, "image")):  # fmt: skip
        if ref is None:
            p.add(f"{at}.{key}", f"required: the {what}'s id or name")
        elif found is None:
            p.add(f"{at}.{key}", f"unknown {what} {ref!r}")
    az = _zone(spec.get("availability_zone"), f"{at}.availability_zone", settings, p)
    for key in spec:
        if key not in ("flavorRef", "imageRef", "availability_zone", "metadata"):
            p.add(f"{at}.{key}", "unknown field")
    if flavor is None or image is None or name is None:
        return None
    return InstanceSpec(name, SERVER, flavor.id, image.id, availability_zone=az)


def _volume(
    name: str | None, spec: Mapping[str, Any], at: str, settings: Settings, p: _Problems
) -> InstanceSpec | None:
    size = spec.get("size")
    limit = settings.volumes.max_size_gb
    ok = True
    if isinstance(size, bool) or not isinstance(size, int):
        p.add(f"{at}.size", "required: a size in GB")
        ok = False
    elif not 1 <= size <= limit:
        p.add(f"{at}.size", f"{size} is not a size in GB between 1 and {limit}")
        ok = False
    vtype_ref = spec.get("volume_type") or None  # the seed's "" is the default type
    if vtype_ref is not None and settings.volumes.type(str(vtype_ref)) is None:
        p.add(f"{at}.volume_type", f"unknown volume type {vtype_ref!r}")
        ok = False
    az = _zone(spec.get("availability_zone"), f"{at}.availability_zone", settings, p)
    for key in spec:
        if key not in ("size", "volume_type", "availability_zone", "metadata"):
            p.add(f"{at}.{key}", "unknown field")
    if not ok or name is None:
        return None
    assert isinstance(size, int)
    return InstanceSpec(
        name, VOLUME, size_gb=size, volume_type=None if vtype_ref is None else str(vtype_ref),
        availability_zone=az,
    )  # fmt: skip


def _zone(value: Any, at: str, settings: Settings, p: _Problems) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value not in {z.name for z in settings.zones}:
        p.add(at, f"unknown availability zone {value!r}")
        return None
    return value


def _groupings(
    value: Any, names: set[str], kinds: Mapping[str, str], p: _Problems
) -> list[Grouping]:
    path = "vcluster.groupings"
    if not isinstance(value, list):
        p.add(path, "must be a list of groupings")
        return []
    found: list[Grouping] = []
    seen: set[str] = set()
    for n, item in enumerate(value):
        at = f"{path}[{n}]"
        if not isinstance(item, Mapping):
            p.add(at, "must be an object")
            continue
        name = _name(item.get("name"), f"{at}.name", p)
        if name is not None and name in seen:
            p.add(f"{at}.name", f"duplicate grouping name {name!r}")
        members = item.get("membersRef")
        refs: list[str] = []
        if not isinstance(members, list) or len(members) < 2:
            p.add(f"{at}.membersRef", "required: a list of at least two instance names")
        else:
            for m, ref in enumerate(members):
                if ref not in names:
                    p.add(f"{at}.membersRef[{m}]", f"no instance named {ref!r}")
                elif ref in refs:
                    p.add(f"{at}.membersRef[{m}]", f"{ref!r} is listed twice")
                else:
                    refs.append(ref)
        rule = _rule(item.get("spec"), f"{at}.spec", p)
        if name is None or rule is None or len(refs) != len(members or []):
            continue
        seen.add(name)
        found.append(Grouping(name, tuple(refs), rule))
    return found


def _rule(spec: Any, at: str, p: _Problems) -> Rule | None:
    if not isinstance(spec, Mapping):
        p.add(at, "required object with a 'rule'")
        return None
    raw = spec.get("rule")
    policy = SYNONYMS.get(raw, raw) if isinstance(raw, str) else None
    if policy not in POLICIES:
        choices = ", ".join([*POLICIES, *SYNONYMS])
        p.add(f"{at}.rule", f"must be one of {choices}, not {raw!r}")
        return None
    scope = spec.get("scope", "host")
    if scope not in SCOPES:
        p.add(f"{at}.scope", f"must be one of {', '.join(SCOPES)}, not {scope!r}")
        return None
    most = spec.get("max_per_host", 1)
    if isinstance(most, bool) or not isinstance(most, int) or most < 1:
        p.add(f"{at}.max_per_host", "must be a positive integer")
        return None
    if most != 1 and policy in (AFFINITY, "soft-affinity"):
        p.add(f"{at}.max_per_host", "applies to anti-affinity only")
        return None
    for key in spec:
        if key not in ("rule", "scope", "max_per_host"):
            p.add(f"{at}.{key}", "unknown field")
    return Rule(str(policy), max_per_host=most, scope=str(scope))


def _contradictions(groupings: Sequence[Grouping], p: _Problems) -> None:
    """Hard affinity and hard anti-affinity over the same pair can never both hold in the
    same scope, nor host affinity with zone anti-affinity."""
    together: dict[frozenset[str], tuple[int, Grouping]] = {}
    for n, g in enumerate(groupings):
        if g.rule.policy == AFFINITY:
            for a, b in combinations(g.members, 2):
                together.setdefault(frozenset((a, b)), (n, g))
    for n, g in enumerate(groupings):
        if g.rule.policy != ANTI_AFFINITY:
            continue
        for a, b in combinations(g.members, 2):
            hit = together.get(frozenset((a, b)))
            if hit is None:
                continue
            m, other = hit
            # Same host implies same availability zone; the reverse does not hold.
            if other.rule.scope == g.rule.scope or (other.rule.scope, g.rule.scope) == (
                "host",
                "zone",
            ):
                p.add(
                    f"vcluster.groupings[{n}]",
                    f"grouping {g.name!r} (anti-affinity) keeps {a!r} and {b!r} apart, which "
                    f"grouping {other.name!r} (vcluster.groupings[{m}], affinity) keeps together",
                )
                break
