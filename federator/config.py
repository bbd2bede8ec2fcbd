"""The broker configuration: one validated settings object.

Sources, lowest to highest precedence: built-in defaults, a TOML file (``--config``
or ``FEDERATOR_CONFIG``), then ``FEDERATOR_*`` environment variables with ``__`` between
nesting levels (``FEDERATOR_API__PORT=9000``, ``FEDERATOR_DATABASE__API_URL=...``).

With no file at all the broker runs on an embedded default: SQLite files in the data
directory, a simulated local zone of four hosts, two virtual zones standing in for remote
clouds (``aws-standin``, the ``aws`` driver against an in-process moto server that
:mod:`federator.embedded` starts, and ``sim-cloud-b``, simulated), and
``policies/default.json``.
"""

from __future__ import annotations

import os
import socket
import tomllib
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from federator.exception import ConfigError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
CONFIG_ENV = "FEDERATOR_CONFIG"
STAND_IN_ZONE = "aws-standin"
STAND_IN_LABEL = "AWS EC2 (in-process moto stand-in, no account needed)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _printable(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    return value


AggregateName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255, strip_whitespace=True),
    AfterValidator(_printable),
]
# Nova keeps ':' out of availability zone names (it separates zone, host and node in hints);
# 64 characters, as every column holding an availability zone.
AZ_NAME_MAX = 64
AzName = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=AZ_NAME_MAX, strip_whitespace=True, pattern=r"^[^:]+$"
    ),
    AfterValidator(_printable),
]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=255)]
MetadataValue = Annotated[str, StringConstraints(max_length=255)]


class AggregateConfig(_Strict):
    """A host aggregate of a local zone, kept by the broker.

    At every start the aggregate is created if missing, given ``availability_zone`` (when
    set) and the ``metadata`` keys listed, and the zone's hosts whose names match a
    ``hosts`` pattern (``fnmatch``: ``*``, ``?``, ``[...]``) are added to it; a host the
    driver reports later joins when it first appears. Hosts in no aggregate take no
    instances, so a local zone without a declared aggregate needs an administrator to add
    each new host (``federator aggregate-add-host``).
    """

    name: AggregateName
    availability_zone: AzName | None = None
    hosts: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=lambda: ["*"]
    )
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _no_az_key(cls, metadata: dict[str, str]) -> dict[str, str]:
        if "availability_zone" in metadata:
            raise ValueError("give the availability zone as availability_zone, not in metadata")
        return metadata


class ZoneConfig(_Strict):
    """A zone: a local hypervisor pool or a virtual AZ backed by a remote cloud.

    Each zone is exposed as an availability zone of the same name. Hosts of a local zone
    can be grouped into host aggregates (``aggregates``); an aggregate with an
    availability zone moves its hosts into that availability zone.
    """

    name: Name
    driver: str
    kind: Literal["local", "virtual"]
    cell: Name = "cell1"
    label: str = ""
    ram_allocation_ratio: float = Field(default=1.0, gt=0)
    cpu_allocation_ratio: float = Field(default=4.0, gt=0)
    disk_allocation_ratio: float = Field(default=1.0, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)
    aggregates: list[AggregateConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _aggregates_local(self) -> ZoneConfig:
        if self.aggregates and self.kind != "local":
            raise ValueError(
                f"zone {self.name!r}: aggregates group the hosts of local zones; "
                "a virtual zone has none"
            )
        return self


DEFAULT_VOLUME_TYPE = "__DEFAULT__"
_VOLUME_TYPE_NAMESPACE = "4f1e8a5c-3b7d-5c2a-9e61-0d6b2f7a9c13"


class VolumeTypeConfig(_Strict):
    """A volume type (Cinder's volume types) users name when they create a volume.

    ``backends`` maps a zone to the backend the type means there (an EBS volume type, a
    remote cloud's volume type, a libvirt pool format); when it is not empty the type is
    offered in those zones only. ``id`` defaults to a uuid derived from the name, stable
    across restarts.
    """

    name: Annotated[str, Field(min_length=1, max_length=255)]
    id: Annotated[str, Field(min_length=1, max_length=36)] | None = None
    description: str = Field(default="", max_length=1000)
    backends: dict[Name, Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=dict
    )
    extra_specs: dict[MetadataKey, MetadataValue] = Field(default_factory=dict)
    multiattach: bool = False

    def type_id(self) -> str:
        return self.id or str(uuid.uuid5(uuid.UUID(_VOLUME_TYPE_NAMESPACE), self.name))


def _default_volume_types() -> list[VolumeTypeConfig]:
    return [VolumeTypeConfig(name=DEFAULT_VOLUME_TYPE, description="Default Volume Type")]


class VolumesConfig(_Strict):
    """Block storage: the volume types offered, the default one, and per-project limits
    (Cinder's ``volumes`` and ``gigabytes`` quotas; None is unlimited)."""

    types: list[VolumeTypeConfig] = Field(default_factory=_default_volume_types, min_length=1)
    default_type: Annotated[str, Field(min_length=1, max_length=255)] = DEFAULT_VOLUME_TYPE
    max_size_gb: int = Field(default=16384, ge=1, description="largest volume accepted")
    project_volumes: int | None = Field(default=None, ge=0)
    project_gigabytes: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _types_consistent(self) -> VolumesConfig:
        _require_unique("volume type name", [t.name for t in self.types])
        _require_unique("volume type id", [t.type_id() for t in self.types])
        if self.default_type not in {t.name for t in self.types}:
            raise ValueError(
                f"volumes.default_type {self.default_type!r} is not one of volumes.types"
            )
        return self

    def type(self, ref: str) -> VolumeTypeConfig | None:
        """Look a type up by id, then by name."""
        for t in self.types:
            if t.type_id() == ref:
                return t
        for t in self.types:
            if t.name == ref:
                return t
        return None


class FlavorConfig(_Strict):
    """A flavor. ``extra_specs`` are Nova's flavor extra specs; the host scheduler
    matches unscoped keys and keys scoped ``aggregate_instance_extra_specs:`` against
    aggregate metadata (``{ "aggregate_instance_extra_specs:ssd" = "true" }``)."""

    id: Annotated[str, Field(min_length=1, max_length=255)]
    name: Name
    vcpus: int = Field(gt=0)
    ram_mb: int = Field(gt=0)
    disk_gb: int = Field(ge=0)
    extra_specs: dict[MetadataKey, MetadataValue] = Field(default_factory=dict)


class ImageConfig(_Strict):
    """An image. ``properties`` are its Glance properties (``os_distro``); an aggregate
    whose metadata names a property key takes only images with that value."""

    id: Annotated[str, Field(min_length=1, max_length=64)]
    name: Name
    properties: dict[MetadataKey, MetadataValue] = Field(default_factory=dict)


# The host scheduler's filters, by entry-point name (namespace federator.scheduler.filters),
# in the order they run; see docs/scheduler.md.
DEFAULT_SCHEDULER_FILTERS = (
    "enabled",
    "availability_zone",
    "ignore_hosts",
    "aggregate_tenant_isolation",
    "aggregate_extra_specs",
    "aggregate_image_properties",
    "ram",
    "vcpu",
    "disk",
    "host_instance_limit",
    "aggregate_instance_limit",
    "anti_affinity",
    "affinity",
)
PluginName = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]


class WeigherConfig(_Strict):
    """One weigher (namespace federator.scheduler.weighers) and how much it counts.

    ``multiplier`` unset: the weigher's default (ram 1.0, vcpu 1.0, instances 0.5,
    soft_affinity and soft_anti_affinity 10.0); 0 turns it off. ``options`` are passed to
    a plugin weigher's constructor.
    """

    name: PluginName
    multiplier: float | None = Field(default=None, allow_inf_nan=False)
    options: dict[str, Any] = Field(default_factory=dict)


def _default_weighers() -> list[WeigherConfig]:
    return [
        WeigherConfig(name=n)
        for n in ("ram", "vcpu", "instances", "soft_affinity", "soft_anti_affinity")
    ]


class SchedulerConfig(_Strict):
    """The host scheduler: which filters run, in which order, and how hosts are weighed.

    Names are entry points; an unknown one stops the broker at start-up. Spread or pack
    is the policy's choice per zone (``weighing``), not this section's.
    ``max_instances_per_host`` is the default limit of ``host_instance_limit`` and
    ``aggregate_instance_limit`` (unset: none). ``filter_options`` gives a filter's
    constructor keyword arguments, by filter name.
    """

    filters: list[PluginName] = Field(default_factory=lambda: list(DEFAULT_SCHEDULER_FILTERS))
    weighers: list[WeigherConfig] = Field(default_factory=_default_weighers)
    max_instances_per_host: int | None = Field(default=None, ge=1)
    filter_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> SchedulerConfig:
        _require_unique("scheduler filter", self.filters)
        _require_unique("scheduler weigher", [w.name for w in self.weighers])
        for name in self.filter_options:
            if name not in self.filters:
                raise ValueError(
                    f"filter_options names filter {name!r}, which is not in scheduler.filters"
                )
        return self


class DatabaseConfig(_Strict):
    """SQLAlchemy URLs. Unset URLs become SQLite files in the data directory."""

    api_url: str | None = None
    cell0_url: str | None = None
    cells: dict[Name, str] = Field(default_factory=dict)


class ApiConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8774, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    default_limit: int = Field(default=1000, gt=0)
    keep_alive_seconds: int = Field(
        default=75,
        ge=1,
        le=3600,
        description="how long an idle client connection stays open; longer than the "
        "OpenStack clients' 5-second status polls, so a poll never races the close",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="API worker processes sharing the listening socket; each is a node of "
        "its own (node id '<node_id>-<n>') with its own build workers, and the zones' "
        "monitor jobs run in one of them at a time (zone leases)",
    )


class WorkerConfig(_Strict):
    count: int = Field(default=8, ge=1, le=256)
    max_attempts: int = Field(default=5, ge=1)
    poll_interval: float = Field(default=0.5, gt=0)
    lease_seconds: float = Field(default=120.0, gt=0)
    transient_retries: int = Field(default=3, ge=0)
    transient_backoff: float = Field(default=0.2, ge=0)


class MonitorConfig(_Strict):
    """Intervals (seconds) of the monitor's jobs and the thresholds they apply."""

    load_interval: float = Field(default=10.0, gt=0)
    heartbeat_interval: float = Field(default=5.0, gt=0)
    sync_interval: float = Field(default=10.0, gt=0)
    orphan_interval: float = Field(default=60.0, gt=0)
    vcluster_interval: float = Field(
        default=10.0,
        gt=0,
        description="how often built virtual clusters are checked: DEGRADED when a member has "
        "gone wrong, ACTIVE again when every member is fine",
    )
    zone_lease_seconds: float = Field(
        default=15.0,
        gt=0,
        description="how long a node's lease on a zone's monitor jobs lasts without renewal: "
        "the node's heartbeat renews it (at least three times a period); when the owner stops "
        "renewing it, another node sharing the database takes the zone over within two periods",
    )
    failures_to_down: int = Field(default=3, ge=1)
    list_batch_size: int = Field(default=500, ge=1)
    vanish_grace_seconds: float = Field(default=60.0, ge=0)


RoleName = Literal["admin", "member"]
IdentityRef = Annotated[str, Field(pattern=NAME_PATTERN)]


class ProjectConfig(_Strict):
    """A project (tenant). Its id is what servers record and policy rules match on; it
    defaults to the name."""

    name: Name
    id: IdentityRef | None = None

    @property
    def project_id(self) -> str:
        return self.id or self.name


class UserConfig(_Strict):
    """A user, member of exactly one project. ``password_hash`` is an argon2 hash, as
    printed by ``federator identity hash-password``; the password itself is never stored."""

    name: Name
    id: IdentityRef | None = None
    password_hash: Annotated[str, Field(pattern=r"^\$argon2(id|i|d)\$")]
    project: Name
    roles: Annotated[tuple[RoleName, ...], Field(min_length=1)] = ("member",)
    domain: Literal["Default"] = "Default"

    @property
    def user_id(self) -> str:
        return self.id or self.name


class IdentityConfig(_Strict):
    """Who may call the API. With no users the broker creates an ``admin`` user in project
    ``admin`` on first start (see :mod:`federator.identity.bootstrap`)."""

    token_ttl_seconds: int = Field(default=3600, ge=1, le=7 * 86400)
    # How long one process trusts a token it has validated before reading it again; a
    # token revoked through another process stops working within this time.
    token_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    region: Name = "RegionOne"
    projects: list[ProjectConfig] = Field(default_factory=list)
    users: list[UserConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> IdentityConfig:
        _require_unique("project name", [p.name for p in self.projects])
        _require_unique("project id", [p.project_id for p in self.projects])
        _require_unique("user name", [u.name for u in self.users])
        _require_unique("user id", [u.user_id for u in self.users])
        known = {p.name for p in self.projects}
        for u in self.users:
            if u.project not in known:
                raise ValueError(
                    f"user {u.name!r} names project {u.project!r}, which is not in "
                    "identity.projects"
                )
        return self


def builtin_zones() -> list[ZoneConfig]:
    """The embedded default's zones (the stand-in still to be completed by
    :func:`federator.embedded.prepare`)."""
    return [
        ZoneConfig(
            name="local",
            driver="sim",
            kind="local",
            label="simulated hypervisors",
            options={
                "hosts": 4,
                "host_ram_mb": 8192,
                "host_vcpus": 8,
                "host_disk_gb": 200,
                # a 100 GB volume pool on every host, reachable from every host (as
                # network storage would be)
                "volume_pool_gb": 100,
                "volume_shared": True,
            },
            aggregates=[AggregateConfig(name="local", hosts=["*"])],
        ),
        # Completed at start-up by federator.embedded: its endpoint, network and AMIs exist
        # only once the in-process moto server runs (a sim zone when moto is missing).
        ZoneConfig(
            name=STAND_IN_ZONE,
            driver="aws",
            kind="virtual",
            label=STAND_IN_LABEL,
            options={"stand_in": True},
        ),
        ZoneConfig(
            name="sim-cloud-b",
            driver="sim",
            kind="virtual",
            label="simulated stand-in for a remote cloud",
            options={"hosts": 8, "host_ram_mb": 16384, "host_vcpus": 16, "expose_hosts": False},
        ),
    ]


def _default_flavors() -> list[FlavorConfig]:
    return [
        FlavorConfig(id="1", name="m1.tiny", vcpus=1, ram_mb=512, disk_gb=1),
        FlavorConfig(id="2", name="m1.small", vcpus=1, ram_mb=1024, disk_gb=10),
        FlavorConfig(id="3", name="m1.medium", vcpus=2, ram_mb=4096, disk_gb=40),
        FlavorConfig(id="4", name="m1.large", vcpus=4, ram_mb=8192, disk_gb=80),
    ]


def _default_images() -> list[ImageConfig]:
    return [
        ImageConfig(id="5a2b4a3c-8c1e-4c39-9e0b-6a1f0c1d2e01", name="cirros"),
        ImageConfig(id="5a2b4a3c-8c1e-4c39-9e0b-6a1f0c1d2e02", name="ubuntu-24.04"),
        ImageConfig(id="5a2b4a3c-8c1e-4c39-9e0b-6a1f0c1d2e03", name="debian-12"),
    ]


def default_policy_path() -> Path:
    """The documented default policy shipped in ``policies/``."""
    import policies

    return policies.DEFAULT_POLICY


class Settings(BaseSettings):
    """The whole broker configuration, validated once at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="FEDERATOR_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    broker_id: Name = "federator"
    node_id: Name = Field(default_factory=lambda: _safe_hostname())  # noqa: PLW0108 - defined below
    data_dir: Path = Path("federator-data")
    policy_file: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    workers: WorkerConfig = Field(default_factory=WorkerConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    zones: list[ZoneConfig] = Field(default_factory=builtin_zones)
    flavors: list[FlavorConfig] = Field(default_factory=_default_flavors)
    images: list[ImageConfig] = Field(default_factory=_default_images)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    volumes: VolumesConfig = Field(default_factory=VolumesConfig)

    @field_validator("zones")
    @classmethod
    def _unique_zones(cls, zones: list[ZoneConfig]) -> list[ZoneConfig]:
        _require_unique("zone name", [z.name for z in zones])
        if not any(z.kind == "local" for z in zones):
            raise ValueError("at least one zone of kind 'local' is required")
        return zones

    @field_validator("flavors")
    @classmethod
    def _unique_flavors(cls, flavors: list[FlavorConfig]) -> list[FlavorConfig]:
        _require_unique("flavor id", [f.id for f in flavors])
        _require_unique("flavor name", [f.name for f in flavors])
        return flavors

    @field_validator("images")
    @classmethod
    def _unique_images(cls, images: list[ImageConfig]) -> list[ImageConfig]:
        _require_unique("image id", [i.id for i in images])
        _require_unique("image name", [i.name for i in images])
        return images

    @model_validator(mode="after")
    def _aggregates_consistent(self) -> Settings:
        kinds = {z.name: z.kind for z in self.zones}
        names: dict[str, str] = {}
        az_zone: dict[str, str] = {}
        for z in self.zones:
            for a in z.aggregates:
                key = a.name.casefold()
                if key in names:
                    raise ValueError(
                        f"aggregate {a.name!r} of zone {z.name!r}: zone {names[key]!r} declares "
                        "an aggregate of that name (names are unique, whatever their case)"
                    )
                names[key] = z.name
                az = a.availability_zone
                if az is None:
                    continue
                if az in kinds and az != z.name:
                    raise ValueError(
                        f"aggregate {a.name!r} of zone {z.name!r}: availability zone {az!r} is "
                        f"the name of {kinds[az]} zone {az!r}"
                    )
                if az_zone.setdefault(az, z.name) != z.name:
                    raise ValueError(
                        f"aggregate {a.name!r} of zone {z.name!r}: availability zone {az!r} is "
                        f"already in zone {az_zone[az]!r}; an availability zone lies within one "
                        "zone"
                    )
        return self

    @model_validator(mode="after")
    def _volume_backends_known(self) -> Settings:
        zones = {z.name for z in self.zones}
        for t in self.volumes.types:
            for zone in t.backends:
                if zone not in zones:
                    raise ValueError(
                        f"volume type {t.name!r} names a backend for zone {zone!r}, which is "
                        "not configured"
                    )
        return self

    @model_validator(mode="after")
    def _cells_known(self) -> Settings:
        cells = self.cell_names()
        for z in self.zones:
            if z.cell == "cell0":
                raise ValueError(f"zone {z.name!r}: cell0 holds unplaced instances only")
            if z.cell not in cells:
                raise ValueError(f"zone {z.name!r} names cell {z.cell!r}, which is not configured")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file (init_settings carries the parsed TOML).
        return (env_settings, init_settings)

    # --- derived values ---------------------------------------------------------

    def cell_names(self) -> list[str]:
        return sorted({"cell1", *self.database.cells})

    def api_db_url(self) -> str:
        return self.database.api_url or _sqlite_url(self.data_dir / "api.sqlite")

    def cell_db_url(self, cell: str) -> str:
        if cell == "cell0":
            return self.database.cell0_url or _sqlite_url(self.data_dir / "cell0.sqlite")
        return self.database.cells.get(cell) or _sqlite_url(self.data_dir / f"{cell}.sqlite")

    def resolved_policy_file(self) -> Path:
        return self.policy_file if self.policy_file is not None else default_policy_path()

    def zone(self, name: str) -> ZoneConfig:
        for z in self.zones:
            if z.name == name:
                return z
        raise KeyError(name)

    def flavor(self, ref: str) -> FlavorConfig | None:
        """Look a flavor up by id, then by name."""
        for f in self.flavors:
            if f.id == ref:
                return f
        for f in self.flavors:
            if f.name == ref:
                return f
        return None

    def image(self, ref: str) -> ImageConfig | None:
        """Look an image up by id, then by name."""
        for i in self.images:
            if i.id == ref:
                return i
        for i in self.images:
            if i.name == ref:
                return i
        return None


def _safe_hostname() -> str:
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return (name or "node")[:63].lstrip("-_.") or "node"


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.expanduser().resolve()}"


def _require_unique(what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"duplicate {what} {v!r}")
        seen.add(v)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Load and validate the configuration.

    :param path: TOML file; defaults to ``$FEDERATOR_CONFIG`` or none (embedded default).
    :raises ConfigError: the file is unreadable or any value is invalid; the message
        names every offending key.
    """
    if path is None and os.environ.get(CONFIG_ENV):
        path = Path(os.environ[CONFIG_ENV])
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(reason=f"cannot read configuration {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(reason=f"configuration {path} is not valid TOML: {exc}") from exc
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = ".".join(str(p) for p in err["loc"]) or "(root)"
            problems.append(f"{loc}: {err['msg']}")
        source = str(path) if path else "the environment"
        raise ConfigError(
            reason=f"configuration from {source} is invalid:\n  " + "\n  ".join(problems)
        ) from exc
