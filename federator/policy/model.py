"""The placement policy document (``policy.json``) as a typed, immutable model.

Every model forbids unknown keys (so a typo such as ``ram_percnt`` is an error, not a
silently ignored setting) and validates strictly (so ``"75"`` is not a number). The
docstrings and field descriptions here also become the descriptions in
``policies/policy.schema.json``, which editors show while a policy is being written.

Checks that need the broker configuration (do the zones, flavors and images exist?) live
in :mod:`federator.policy.loader`; this module checks only what the document alone can tell.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from federator.config import NAME_PATTERN
from federator.policy.problems import Problem

__all__ = [
    "CONSISTENCY_ERROR",
    "CountMarks",
    "DenyRule",
    "LimitOverflowRule",
    "Match",
    "OrphanAction",
    "OrphanPolicy",
    "PercentMarks",
    "Policy",
    "Quota",
    "RestrictRule",
    "Rule",
    "StayLocalRule",
    "Thresholds",
    "Weighing",
    "ZonePolicy",
    "consistency_problems",
]

Weighing = Literal["spread", "pack"]

# The pydantic error type raised by Policy's whole-document checks; its context carries
# the individual problems with their JSON paths.
CONSISTENCY_ERROR = "policy_consistency"


def _no_duplicates(what: str) -> Callable[[tuple[str, ...]], tuple[str, ...]]:
    def check(values: tuple[str, ...]) -> tuple[str, ...]:
        seen: set[str] = set()
        for value in values:
            if value in seen:
                raise ValueError(f"duplicate {what} {value!r}")
            seen.add(value)
        return values

    return check


# Lists are sets in order of preference: editors flag repeats through uniqueItems.
_SET = Field(json_schema_extra={"uniqueItems": True})
_NON_EMPTY_SET = Field(min_length=1, json_schema_extra={"uniqueItems": True})

ZoneName = Annotated[str, Field(pattern=NAME_PATTERN)]
Ref = Annotated[str, Field(min_length=1, max_length=255)]


OverflowTargets = Annotated[
    tuple[ZoneName, ...], _SET, AfterValidator(_no_duplicates("overflow target"))
]
AzList = Annotated[tuple[ZoneName, ...], _NON_EMPTY_SET, AfterValidator(_no_duplicates("zone"))]
TargetList = Annotated[
    tuple[ZoneName, ...], _NON_EMPTY_SET, AfterValidator(_no_duplicates("overflow target"))
]
TenantList = Annotated[tuple[Ref, ...], _NON_EMPTY_SET, AfterValidator(_no_duplicates("tenant"))]
FlavorList = Annotated[tuple[Ref, ...], _NON_EMPTY_SET, AfterValidator(_no_duplicates("flavor"))]
ImageList = Annotated[tuple[Ref, ...], _NON_EMPTY_SET, AfterValidator(_no_duplicates("image"))]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --- thresholds and quotas --------------------------------------------------------


class PercentMarks(_Model):
    """High- and low-water marks as a percentage (0-100) of the zone's schedulable capacity.

    The zone starts overflowing when a request would take usage above ``high`` and stops
    once usage is below ``low`` again.
    """

    high: float = Field(ge=0, le=100, description="Overflow starts above this percentage.")
    low: float = Field(
        ge=0, le=100, description="Overflow stops once usage is below this percentage."
    )

    @model_validator(mode="after")
    def _low_not_above_high(self) -> Self:
        if self.low > self.high:
            raise ValueError(f"low water {self.low:g} is above high water {self.high:g}")
        return self


class CountMarks(_Model):
    """High- and low-water marks as an instance count."""

    high: int = Field(ge=0, description="Overflow starts when a request would exceed this.")
    low: int = Field(ge=0, description="Overflow stops once the count is below this.")

    @model_validator(mode="after")
    def _low_not_above_high(self) -> Self:
        if self.low > self.high:
            raise ValueError(f"low water {self.low} is above high water {self.high}")
        return self


class Thresholds(_Model):
    """Load thresholds of one zone; a metric left out is not watched."""

    ram_percent: PercentMarks | None = Field(
        default=None, description="RAM in use as a percentage of schedulable RAM."
    )
    vcpu_percent: PercentMarks | None = Field(
        default=None, description="vCPUs in use as a percentage of schedulable vCPUs."
    )
    instances: CountMarks | None = Field(
        default=None, description="Number of instances in the zone."
    )
    gb_percent: PercentMarks | None = Field(
        default=None,
        description=(
            "Block storage claimed as a percentage of the zone's pool capacity; decides "
            "where volumes go, as the other metrics decide for servers."
        ),
    )


class Quota(_Model):
    """Ceilings on what the broker may run in a virtual zone; a value left out is unlimited."""

    instances: int | None = Field(default=None, ge=0, description="Most instances at once.")
    vcpus: int | None = Field(default=None, ge=0, description="Most vCPUs in use at once.")
    ram_mb: int | None = Field(default=None, ge=0, description="Most RAM (MiB) in use at once.")
    volumes: int | None = Field(default=None, ge=0, description="Most volumes at once.")
    gigabytes: int | None = Field(
        default=None, ge=0, description="Most block storage (GB) held by volumes at once."
    )


class ZonePolicy(_Model):
    """Policy for one zone, keyed by the zone's name as configured in the broker."""

    thresholds: Thresholds | None = Field(
        default=None,
        description="Local zones: when to overflow. Virtual zones: a cap, if capacity is known.",
    )
    overflow: OverflowTargets = Field(
        default=(),
        description="Local zones only: virtual zones to overflow to, in order of preference.",
    )
    quota: Quota | None = Field(default=None, description="Virtual zones only: usage ceilings.")
    weighing: Weighing | None = Field(
        default=None, description="Host weighing in this zone; defaults to the top-level value."
    )


# --- rules ------------------------------------------------------------------------


class Match(_Model):
    """Which requests a rule applies to; every listed field must match, {} matches all."""

    tenants: TenantList | None = Field(default=None, description="Project (tenant) ids.")
    flavors: FlavorList | None = Field(default=None, description="Flavor names or ids.")
    images: ImageList | None = Field(default=None, description="Image names or ids.")

    def matches(self, *, tenant: str, flavor: Iterable[str], image: Iterable[str]) -> bool:
        """Does a request match?

        :param flavor: every reference to the request's flavor (its id and its name).
        :param image: every reference to the request's image (its id and its name).
        """
        if self.tenants is not None and tenant not in self.tenants:
            return False
        if self.flavors is not None and not set(flavor) & set(self.flavors):
            return False
        return self.images is None or bool(set(image) & set(self.images))


class _RuleBase(_Model):
    name: str = Field(pattern=NAME_PATTERN, description="Unique name, shown in explanations.")
    description: str = Field(default="", max_length=1000, description="Free text.")
    match: Match


class StayLocalRule(_RuleBase):
    """Matching requests are placed in local zones only; they never overflow."""

    action: Literal["stay_local"]


class RestrictRule(_RuleBase):
    """Matching requests are placed only in the listed zones (local or virtual)."""

    action: Literal["restrict"]
    azs: AzList = Field(description="The zones such requests may use.")


class LimitOverflowRule(_RuleBase):
    """Matching requests may overflow only to the listed virtual zones."""

    action: Literal["limit_overflow"]
    targets: TargetList = Field(description="The virtual zones such requests may overflow to.")


class DenyRule(_RuleBase):
    """Matching requests are refused everywhere."""

    action: Literal["deny"]


Rule = Annotated[
    StayLocalRule | RestrictRule | LimitOverflowRule | DenyRule,
    Field(discriminator="action"),
]


# --- orphans ----------------------------------------------------------------------

OrphanAction = Literal["log", "quarantine", "delete"]


class OrphanPolicy(_Model):
    """What the monitor does with an orphan: a remote instance tagged with this broker's
    id that no instance record accounts for and no build in progress is creating."""

    action: OrphanAction = Field(
        default="log",
        description=(
            "log: record it only; quarantine: stop it and record it; delete: delete it and "
            "record it."
        ),
    )
    min_age_seconds: int = Field(
        default=300,
        ge=0,
        description="Orphans launched less than this long ago are left for a later run.",
    )


# --- the document -------------------------------------------------------------------


class Policy(_Model):
    """The federator placement policy: when local zones overflow to virtual zones, and
    which requests may go where."""

    schema_ref: str | None = Field(
        default=None,
        alias="$schema",
        title="Schema",
        description="Ignored by the broker; lets editors find this schema.",
    )
    version: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"\S",
        description="Operator-chosen version, recorded with every placement.",
    )
    description: str = Field(default="", description="Free text: the intent of this policy.")
    weighing: Weighing = Field(
        default="spread",
        description="Host weighing: spread (least loaded host first) or pack (fullest first).",
    )
    allow_explicit_virtual_az: bool = Field(
        default=False,
        description="May a request that names an availability zone name a virtual one?",
    )
    zones: dict[ZoneName, ZonePolicy] = Field(
        default_factory=dict,
        description="Per-zone policy, keyed by zone name.",
        # Keys that are not zone names are errors, so the schema says so too.
        json_schema_extra={"additionalProperties": False},
    )
    rules: tuple[Rule, ...] = Field(
        default=(), description="Request rules; every matching rule applies."
    )
    orphans: OrphanPolicy = Field(
        default_factory=OrphanPolicy,
        description="What the monitor does with remote instances no record accounts for.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = consistency_problems(
            {name: zone.overflow for name, zone in self.zones.items()},
            [(i, rule.name) for i, rule in enumerate(self.rules)],
        )
        if problems:
            raise PydanticCustomError(
                CONSISTENCY_ERROR,
                "{summary}",
                {
                    "summary": "; ".join(f"{p.path}: {p.message}" for p in problems),
                    "problems": [p.as_dict() for p in problems],
                },
            )
        return self

    def zone(self, name: str) -> ZonePolicy:
        """The policy for zone ``name`` (an empty one when the document does not list it)."""
        return self.zones.get(name, _NO_ZONE_POLICY)


_NO_ZONE_POLICY = ZonePolicy()


def consistency_problems(
    overflow: Mapping[str, Sequence[str]], rule_names: Iterable[tuple[int, str]]
) -> list[Problem]:
    """Checks across fields of one document: no zone overflows to itself, rule names unique.

    Takes plain values rather than a :class:`Policy` so the loader can run the same checks
    on the parts of a partly invalid document.

    :param overflow: zone name -> its overflow targets.
    :param rule_names: ``(index in the rules array, rule name)`` pairs.
    """
    problems: list[Problem] = []
    for name, targets in overflow.items():
        for i, target in enumerate(targets):
            if target == name:
                problems.append(
                    Problem.at(
                        ("zones", name, "overflow", i), f"zone {name!r} cannot overflow to itself"
                    )
                )
    first_seen: dict[str, int] = {}
    for index, name in rule_names:
        if name in first_seen:
            problems.append(
                Problem.at(
                    ("rules", index, "name"),
                    f"duplicate rule name {name!r} (first used by rules[{first_seen[name]}])",
                )
            )
        else:
            first_seen[name] = index
    return problems
