"""Table models for the API database and the cell databases.

The API database knows *where* things are and what capacity is claimed: zones, hosts,
allocations, the queue of work, build requests and request specs of instances not yet
placed, the mapping from every instance to the cell that holds its record, and what the
monitor found in the zones (``monitor_events``), and the API tokens issued (``tokens``).
A cell database holds instance records. cell0 is a cell database like any other; it holds
the instances that could not be placed, so they can be listed, shown and deleted through
the ordinary code path (Nova's cells v2 design).

Table models never leave the storage and service layers: the API has its own schemas.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


_TYPE_MAP: dict[Any, Any] = {
    dict[str, Any]: JSON,
    list[Any]: JSON,
    datetime: DateTime(timezone=True),
}


class ApiBase(DeclarativeBase):
    """Tables of the API database (one metadata, one migration history)."""

    type_annotation_map = _TYPE_MAP


class CellBase(DeclarativeBase):
    """Tables of every cell database, cell0 included."""

    type_annotation_map = _TYPE_MAP


# --- API database -------------------------------------------------------------------


class Zone(ApiBase):
    """A zone (one availability zone) with its claimed usage and schedulable totals.

    Usage counters change only together with an ``allocations`` row, in one transaction.
    ``bursting`` is the hysteresis state of a local zone: set when a request would cross a
    high-water mark, cleared when every metric falls below its low-water mark.
    """

    __tablename__ = "zones"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    driver: Mapped[str] = mapped_column(String(64))
    cell: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="available")
    state_detail: Mapped[str] = mapped_column(Text, default="")
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    bursting: Mapped[bool] = mapped_column(Boolean, default=False)
    ram_used_mb: Mapped[int] = mapped_column(BigInteger, default=0)
    vcpus_used: Mapped[int] = mapped_column(BigInteger, default=0)
    disk_used_gb: Mapped[int] = mapped_column(BigInteger, default=0)
    instances: Mapped[int] = mapped_column(BigInteger, default=0)
    ram_total_mb: Mapped[int] = mapped_column(BigInteger, default=0)
    vcpus_total: Mapped[int] = mapped_column(BigInteger, default=0)
    disk_total_gb: Mapped[int] = mapped_column(BigInteger, default=0)
    # The monitor's view of what the broker runs in a virtual zone, from the driver's
    # listing; NULL until first measured. Claims never read these: they use the counters
    # above, which move atomically with allocations.
    remote_instances: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    remote_vcpus: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    remote_ram_mb: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # What a child zone (another broker) last reported it can still take, as polled by the
    # monitor, with this zone's own usage counters at that moment (see
    # federator.monitor.capabilities). NULL when never reported or not reportable.
    capabilities: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    capabilities_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # Block storage claimed in the zone (moves only with a ``volume_allocations`` row) and
    # the capacity of its pools; ``storage_bursting`` is the gb_percent hysteresis state.
    volume_gb_used: Mapped[int] = mapped_column(BigInteger, default=0)
    volumes: Mapped[int] = mapped_column(BigInteger, default=0)
    volume_gb_total: Mapped[int] = mapped_column(BigInteger, default=0)
    storage_bursting: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Host(ApiBase):
    """A hypervisor host of a zone whose driver lets the broker schedule hosts."""

    __tablename__ = "hosts"
    __table_args__ = (UniqueConstraint("zone", "name", name="uq_hosts_zone_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    zone: Mapped[str] = mapped_column(ForeignKey("zones.name", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    az: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str] = mapped_column(Text, default="")
    vcpus: Mapped[int] = mapped_column(Integer)
    ram_mb: Mapped[int] = mapped_column(BigInteger)
    disk_gb: Mapped[int] = mapped_column(BigInteger)
    vcpus_used: Mapped[int] = mapped_column(Integer, default=0)
    ram_used_mb: Mapped[int] = mapped_column(BigInteger, default=0)
    disk_used_gb: Mapped[int] = mapped_column(BigInteger, default=0)
    instances: Mapped[int] = mapped_column(Integer, default=0)
    cpu_ratio: Mapped[float] = mapped_column(Float, default=4.0)
    ram_ratio: Mapped[float] = mapped_column(Float, default=1.0)
    disk_ratio: Mapped[float] = mapped_column(Float, default=1.0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # What ``enabled`` (may the scheduler place here?) is derived from, with membership of
    # an aggregate: the driver still reports the host, no administrator disabled it, it is
    # not in maintenance (see federator.hosts.membership).
    reported: Mapped[bool] = mapped_column(Boolean, default=True)
    admin_disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    admin_reason: Mapped[str] = mapped_column(Text, default="")
    maintenance: Mapped[bool] = mapped_column(Boolean, default=False)
    maintenance_reason: Mapped[str] = mapped_column(Text, default="")
    maintenance_since: Mapped[datetime | None] = mapped_column(nullable=True)


class Aggregate(ApiBase):
    """A host aggregate (Nova's os-aggregates): a named group of hosts with metadata.

    The metadata key ``availability_zone`` puts the aggregate's hosts in that availability
    zone. Names are unique whatever their case (``name_key`` is the casefolded name).
    """

    __tablename__ = "aggregates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    name_key: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(nullable=True)


class AggregateHost(ApiBase):
    """A host's membership of an aggregate."""

    __tablename__ = "aggregate_hosts"

    aggregate_id: Mapped[int] = mapped_column(
        ForeignKey("aggregates.id", ondelete="CASCADE"), primary_key=True
    )
    host_id: Mapped[int] = mapped_column(
        ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class AggregateMetadata(ApiBase):
    """One metadata key of an aggregate."""

    __tablename__ = "aggregate_metadata"

    aggregate_id: Mapped[int] = mapped_column(
        ForeignKey("aggregates.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class Migration(ApiBase):
    """An instance being moved to another host of its zone (a drain), while it is moving.

    The destination host's counters hold the instance's resources from the moment the row
    is written (a move claim) until the move finishes, when the allocation points at the
    destination and the source host's counters are given back, or is undone. The row goes
    with either, so rows left behind are moves a crash interrupted.
    """

    __tablename__ = "migrations"

    instance_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    node: Mapped[str] = mapped_column(String(64))  # the broker process carrying it out
    zone: Mapped[str] = mapped_column(String(64))
    source_host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"))
    dest_host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"))
    was_active: Mapped[bool] = mapped_column(Boolean)
    vcpus: Mapped[int] = mapped_column(Integer)
    ram_mb: Mapped[int] = mapped_column(BigInteger)
    disk_gb: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Allocation(ApiBase):
    """Capacity claimed for one instance, in a zone and (for scheduled zones) on a host."""

    __tablename__ = "allocations"

    instance_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    zone: Mapped[str] = mapped_column(ForeignKey("zones.name"), index=True)
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id"), index=True, nullable=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    ram_mb: Mapped[int] = mapped_column(BigInteger)
    disk_gb: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ServerGroup(ApiBase):
    """A server group (Nova's os-server-groups): a policy its members are placed under.

    ``max_server_per_host`` is set for anti-affinity only (NULL: one per host); ``scope``
    says what the rule is about: ``host`` (Nova's meaning) or ``zone`` (availability
    zones). Where each member is comes from its allocation, so membership of a placed
    member and the capacity it holds are one fact, written in one transaction.
    """

    __tablename__ = "server_groups"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    user_id: Mapped[str] = mapped_column(String(255))
    policy: Mapped[str] = mapped_column(String(32))
    max_server_per_host: Mapped[int | None] = mapped_column(Integer, nullable=True)
    scope: Mapped[str] = mapped_column(String(8), default="host")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ServerGroupMember(ApiBase):
    """A server's membership of a group, from its boot until it is deleted (a server
    belongs to one group at most)."""

    __tablename__ = "server_group_members"

    instance_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    group_uuid: Mapped[str] = mapped_column(
        ForeignKey("server_groups.uuid", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ServerGroupZone(ApiBase):
    """The server group made in a remote cloud for a group's members placed in one zone
    (drivers with the ``server_groups`` capability). Kept after the group is deleted
    until the remote group is gone too, so no remote group is forgotten."""

    __tablename__ = "server_group_zones"

    group_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    zone: Mapped[str] = mapped_column(String(64), primary_key=True)
    remote_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StoragePool(ApiBase):
    """A pool volumes are made in, as the zone's driver reports it: one per host for
    host-local storage, one for the zone otherwise. ``capacity_gb`` NULL: no bound known.
    ``used_gb`` and ``volumes`` move only with a ``volume_allocations`` row."""

    __tablename__ = "storage_pools"
    __table_args__ = (
        UniqueConstraint("zone", "name", name="uq_storage_pools_zone_name"),
        Index("ix_storage_pools_zone_free", "zone", "free_gb"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    zone: Mapped[str] = mapped_column(ForeignKey("zones.name", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    az: Mapped[str] = mapped_column(String(64))
    capacity_gb: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    used_gb: Mapped[int] = mapped_column(BigInteger, default=0)
    # capacity_gb - used_gb, kept with every claim so a free pool is found by an index
    # (NULL for unbounded pools).
    free_gb: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    volumes: Mapped[int] = mapped_column(Integer, default=0)
    reported: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Volume(ApiBase):
    """A block-storage volume (Cinder's volumes), from its create until it is deleted
    (then ``deleted`` is set and the row kept for listings of deleted volumes).

    ``zone``, ``pool_id`` and ``availability_zone`` are set by placement, with the
    volume's allocation; a volume that could not be placed is ``error`` with a ``fault``.
    """

    __tablename__ = "volumes"
    __table_args__ = (
        Index("ix_volumes_project_created", "project_id", "created_at"),
        Index("ix_volumes_zone_deleted", "zone", "deleted"),
    )

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    project_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    size_gb: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    volume_type: Mapped[str] = mapped_column(String(255))
    requested_az: Mapped[str | None] = mapped_column(String(64), nullable=True)
    availability_zone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    zone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pool_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    remote_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    multiattach: Mapped[bool] = mapped_column(Boolean, default=False)
    bootable: Mapped[bool] = mapped_column(Boolean, default=False)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    fault: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    placement: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(nullable=True)


class VolumeAttachment(ApiBase):
    """A volume attached (or being attached, or detached) to a server: Nova's volume
    attachment and Cinder's ``attachments`` entry. ``state`` is ``attaching``,
    ``attached`` or ``detaching``."""

    __tablename__ = "volume_attachments"
    __table_args__ = (UniqueConstraint("volume_uuid", "server_uuid", name="uq_volume_server"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    volume_uuid: Mapped[str] = mapped_column(
        ForeignKey("volumes.uuid", ondelete="CASCADE"), index=True
    )
    server_uuid: Mapped[str] = mapped_column(String(36), index=True)
    device: Mapped[str | None] = mapped_column(String(64), nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    tag: Mapped[str | None] = mapped_column(String(60), nullable=True)
    delete_on_termination: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class VolumeAllocation(ApiBase):
    """Storage claimed for one volume, in a zone and one of its pools."""

    __tablename__ = "volume_allocations"

    volume_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    zone: Mapped[str] = mapped_column(ForeignKey("zones.name"), index=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("storage_pools.id"), index=True)
    size_gb: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class VCluster(ApiBase):
    """A virtual cluster (seed 003): servers and volumes with groupings, placed all or
    nothing. ``spec`` is the accepted body (the ``vcluster`` object); ``phase`` is where
    its build stands (``planning``: nothing claimed; ``building``: every member claimed and
    recorded; ``rolling_back``; ``done``). ``remote_groups`` maps a grouping to the server
    group made for it in each remote zone (``{grouping: {zone: remote_id}}``)."""

    __tablename__ = "vclusters"
    __table_args__ = (Index("ix_vclusters_project_created", "project_id", "created_at"),)

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    phase: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    fault: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    remote_groups: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The body before an update that is being built (None otherwise): what a failed
    # update returns to.
    previous_spec: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class VClusterMember(ApiBase):
    """One member of a virtual cluster and where the plan put it. ``uuid`` is the
    server's or volume's own id; ``state`` is the member's part in the build
    (``planned``, ``claimed``, ``created``, ``attached``, ``removing``, ``failed``).
    ``attempts`` counts builds that failed and were placed again."""

    __tablename__ = "vcluster_members"
    __table_args__ = (UniqueConstraint("cluster_uuid", "name", name="uq_vcluster_member_name"),)

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    cluster_uuid: Mapped[str] = mapped_column(
        ForeignKey("vclusters.uuid", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    zone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    pool: Mapped[str | None] = mapped_column(String(255), nullable=True)
    availability_zone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    fault: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RequestSpec(ApiBase):
    """What was asked for, kept for rescheduling and recovery."""

    __tablename__ = "request_specs"

    instance_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)


class BuildRequest(ApiBase):
    """An accepted boot not yet placed; shown by the API as status BUILD."""

    __tablename__ = "build_requests"

    instance_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    user_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))
    flavor_id: Mapped[str] = mapped_column(String(255))
    image_id: Mapped[str] = mapped_column(String(64))
    availability_zone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    zone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    placement: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class InstanceMapping(ApiBase):
    """Which cell holds an instance's record (NULL while it is still a build request)."""

    __tablename__ = "instance_mappings"
    __table_args__ = (Index("ix_instance_mappings_project_created", "project_id", "created_at"),)

    instance_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    cell: Mapped[str | None] = mapped_column(String(64), nullable=True)
    project_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Task(ApiBase):
    """Work handed from the API to the workers: build, delete, start, stop, reboot.

    Tasks of one instance run one at a time, in id order. A running task belongs to a node;
    if that node stops heartbeating the task goes back to the queue.
    """

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_state_id", "state", "id"),
        Index("ix_tasks_instance_state", "instance_uuid", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance_uuid: Mapped[str] = mapped_column(String(36))
    action: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="queued")
    node: Mapped[str | None] = mapped_column(String(64), nullable=True)
    run_after: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Node(ApiBase):
    """A running broker process; its heartbeat tells others whether its tasks are alive."""

    __tablename__ = "nodes"

    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[float] = mapped_column(Float)


class ZoneLease(ApiBase):
    """Which node runs a zone's monitor jobs, until when (:mod:`federator.monitor.leases`).

    Cluster-wide jobs take a lease on a pseudo-zone whose name starts with ``*``. Times are
    seconds since the epoch on the owner's clock, as ``nodes.heartbeat_at``.
    """

    __tablename__ = "zone_leases"

    zone: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    acquired_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class PolicyVersion(ApiBase):
    """Every policy document the broker has put in force, in order."""

    __tablename__ = "policy_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text)
    node: Mapped[str] = mapped_column(String(64))
    loaded_at: Mapped[datetime] = mapped_column(default=utcnow)


class MonitorEvent(ApiBase):
    """Something the monitor found or did: an orphan and what was done about it, an
    instance that vanished, a zone going down or coming back, usage drift."""

    __tablename__ = "monitor_events"
    __table_args__ = (Index("ix_monitor_events_zone_kind", "zone", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    zone: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    instance_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    remote_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    action: Mapped[str] = mapped_column(String(32), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Token(ApiBase):
    """An issued API token. Only the token's SHA-256 is stored: a copy of this table does
    not let anyone call the API. Expired rows are pruned when tokens are issued."""

    __tablename__ = "tokens"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Names a token in logs and revocations without revealing it (Keystone's audit id).
    audit_id: Mapped[str] = mapped_column(String(32), unique=True)
    user_id: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(255))
    roles: Mapped[list[Any]] = mapped_column(JSON)
    issued_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column(index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


# --- cell databases -----------------------------------------------------------------


class Instance(CellBase):
    """An instance record. In cell0 it is always ERROR with a ``fault``."""

    __tablename__ = "instances"
    __table_args__ = (
        Index("ix_instances_project_created", "project_id", "created_at"),
        Index("ix_instances_deleted_created", "deleted", "created_at"),
    )

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    flavor_id: Mapped[str] = mapped_column(String(255))
    flavor: Mapped[dict[str, Any]] = mapped_column(JSON)
    image_id: Mapped[str] = mapped_column(String(64))
    availability_zone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    requested_az: Mapped[str | None] = mapped_column(String(64), nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    remote_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    task_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    fault: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    addresses: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    placement: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    policy_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    launched_at: Mapped[datetime | None] = mapped_column(nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(nullable=True)
