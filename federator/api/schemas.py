"""Request bodies, validated at the edge. Shapes follow OpenStack Compute v2.1."""

from __future__ import annotations

import uuid as uuidlib
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from federator.exception import BadRequest


def _no_control_characters(value: str) -> str:
    # Names are stored as text columns, and PostgreSQL refuses NUL in text outright.
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    return value


ServerName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255, strip_whitespace=True),
    AfterValidator(_no_control_characters),
]
MetaKey = Annotated[str, StringConstraints(min_length=1, max_length=255)]
MetaValue = Annotated[str, StringConstraints(max_length=255)]
MAX_COUNT = 1000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BlockDeviceMapping(BaseModel):
    model_config = ConfigDict(extra="allow")

    uuid: str | None = None
    source_type: str | None = None
    destination_type: str | None = None
    boot_index: int | str | None = None


class ServerCreate(_Body):
    name: ServerName
    flavorRef: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    imageRef: str = ""
    availability_zone: Annotated[str, StringConstraints(max_length=255)] | None = None
    metadata: dict[MetaKey, MetaValue] = Field(default_factory=dict, max_length=128)
    min_count: int = Field(default=1, ge=1, le=MAX_COUNT)
    max_count: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    networks: Literal["auto", "none"] | list[dict[str, Any]] | None = None
    block_device_mapping_v2: list[BlockDeviceMapping] | None = None
    # Accepted for client compatibility; the broker does not act on them yet.
    security_groups: list[dict[str, Any]] | None = None
    key_name: str | None = None
    user_data: str | None = None
    config_drive: bool | str | None = None
    description: str | None = None
    adminPass: str | None = None
    accessIPv4: str | None = None
    accessIPv6: str | None = None
    tags: list[str] | None = None
    return_reservation_id: bool | None = None
    OS_DCF_diskConfig: str | None = Field(default=None, alias="OS-DCF:diskConfig")

    @field_validator("flavorRef", mode="before")
    @classmethod
    def _flavor_ref(cls, v: Any) -> Any:
        # Nova accepts a flavor id given as a JSON number.
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    def image(self) -> str:
        """imageRef, or the image of the boot device in block_device_mapping_v2."""
        if self.imageRef:
            return self.imageRef
        for bdm in self.block_device_mapping_v2 or []:
            if bdm.source_type == "image" and str(bdm.boot_index) == "0" and bdm.uuid:
                return bdm.uuid
        return ""


class ServerCreateBody(_Body):
    server: ServerCreate
    scheduler_hints: dict[str, Any] | None = Field(default=None, alias="OS-SCH-HNT:scheduler_hints")
    os_scheduler_hints: dict[str, Any] | None = Field(default=None, alias="os:scheduler_hints")

    def group_hint(self) -> tuple[str, str] | None:
        """The server group the scheduler hints name, in canonical UUID form, with the
        field it was given in (``OS-SCH-HNT:scheduler_hints.group`` or
        ``os:scheduler_hints.group``).

        :raises BadRequest: the hint is not a UUID (Nova's schema: a string of format uuid).
        """
        for key, hints in (
            ("OS-SCH-HNT:scheduler_hints", self.scheduler_hints),
            ("os:scheduler_hints", self.os_scheduler_hints),
        ):
            if hints is None or "group" not in hints:
                continue
            value = hints["group"]
            try:
                if not isinstance(value, str):
                    raise ValueError(value)
                return str(uuidlib.UUID(value)), f"{key}.group"
            except ValueError:
                raise BadRequest(
                    f"invalid request: {key}.group: {value!r} is not a server group UUID",
                    problems=[{"field": f"{key}.group", "message": "must be a UUID"}],
                ) from None
        return None


# --- server groups (os-server-groups) -----------------------------------------------


def _positive_int(value: Any) -> Any:
    # Nova's positive_integer takes 2 or "2" (the openstack CLI sends rule values as text).
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


class GroupRules(_Body):
    """``rules``: ``max_server_per_host`` (Nova, anti-affinity only) and ``scope``, the
    broker's extension: ``host`` (the default) or ``zone`` (availability zones)."""

    max_server_per_host: (
        Annotated[int, BeforeValidator(_positive_int), Field(ge=1, strict=False)] | None
    ) = None
    scope: Literal["host", "zone"] | None = None


ServerGroupName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255, strip_whitespace=True),
    AfterValidator(_no_control_characters),
]
GroupPolicyName = Literal["affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"]


class ServerGroupCreate(_Body):
    name: ServerGroupName
    policies: list[str] | None = None
    policy: str | None = None
    rules: GroupRules | None = None


class ServerGroupCreateBody(_Body):
    server_group: ServerGroupCreate


class RebootSpec(_Body):
    type: Literal["SOFT", "HARD"] = "SOFT"


class ServerActionBody(_Body):
    os_start: None = Field(default=None, alias="os-start")
    os_stop: None = Field(default=None, alias="os-stop")
    reboot: RebootSpec | None = None
    pause: None = None
    unpause: None = None
    suspend: None = None
    resume: None = None


class VolumeExplain(_Body):
    size: int
    volume_type: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    multiattach: bool = False
    max_pools: int = Field(default=5, ge=0, le=100)


class ExplainBody(_Body):
    """A hypothetical boot (``flavor`` and ``image``) or volume create (``volume``) to
    explain; nothing is reserved."""

    flavor: Annotated[str, StringConstraints(min_length=1)] | None = None
    image: Annotated[str, StringConstraints(min_length=1)] | None = None
    volume: VolumeExplain | None = None
    project_id: str = "default"
    availability_zone: str | None = None
    max_hosts: int | None = Field(default=None, ge=0)
    group: str | None = None

    @model_validator(mode="after")
    def _one_request(self) -> ExplainBody:
        if self.volume is not None:
            if self.flavor is not None or self.image is not None or self.group is not None:
                raise ValueError("give either volume, or flavor and image (and group), not both")
        elif self.flavor is None or self.image is None:
            raise ValueError("flavor and image are required unless volume is given")
        return self


# --- identity (Keystone v3 shapes) ----------------------------------------------------


class _Keystone(BaseModel):
    # Clients add fields the broker has no use for; Keystone ignores them too.
    model_config = ConfigDict(extra="ignore")


IdentityName = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class DomainRefBody(_Keystone):
    id: IdentityName | None = None
    name: IdentityName | None = None


class PasswordUser(_Keystone):
    id: IdentityName | None = None
    name: IdentityName | None = None
    domain: DomainRefBody | None = None
    password: Annotated[str, StringConstraints(max_length=4096)]


class PasswordMethod(_Keystone):
    user: PasswordUser


class AuthIdentity(_Keystone):
    methods: list[str] = Field(min_length=1)
    password: PasswordMethod | None = None


class ProjectScope(_Keystone):
    id: IdentityName | None = None
    name: IdentityName | None = None
    domain: DomainRefBody | None = None


class AuthScope(_Keystone):
    project: ProjectScope | None = None
    domain: dict[str, Any] | None = None
    system: dict[str, Any] | None = None


class Auth(_Keystone):
    identity: AuthIdentity
    scope: AuthScope | Literal["unscoped"] | None = None


class AuthBody(_Keystone):
    auth: Auth


# --- block storage (Cinder v3) and Nova's volume attachments ---------------------------

VolumeName = Annotated[
    str, StringConstraints(max_length=255), AfterValidator(_no_control_characters)
]


class VolumeCreate(_Body):
    """``POST /volumes``. Sources other than a blank volume (snapshots, images, backups,
    clones) are refused by name until the broker serves them."""

    size: int = Field(ge=1)
    name: VolumeName | None = None
    description: Annotated[str, StringConstraints(max_length=1000)] | None = None
    volume_type: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    availability_zone: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    metadata: dict[MetaKey, MetaValue] | None = Field(default=None, max_length=128)
    multiattach: bool | None = None
    snapshot_id: str | None = None
    source_volid: str | None = None
    imageRef: str | None = None
    backup_id: str | None = None
    consistencygroup_id: str | None = None
    group_id: str | None = None

    def unsupported_source(self) -> str | None:
        for field in ("snapshot_id", "source_volid", "imageRef", "backup_id"):
            if getattr(self, field) is not None:
                return field
        return None


class VolumeCreateBody(_Body):
    volume: VolumeCreate
    scheduler_hints: dict[str, Any] | None = Field(default=None, alias="OS-SCH-HNT:scheduler_hints")


class VolumeUpdate(_Body):
    name: VolumeName | None = None
    description: Annotated[str, StringConstraints(max_length=1000)] | None = None
    display_name: VolumeName | None = None
    display_description: Annotated[str, StringConstraints(max_length=1000)] | None = None
    metadata: dict[MetaKey, MetaValue] | None = Field(default=None, max_length=128)


class VolumeUpdateBody(_Body):
    volume: VolumeUpdate


class VolumeAttachmentCreate(_Body):
    volumeId: Annotated[str, StringConstraints(min_length=1, max_length=36)]
    device: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    tag: Annotated[str, StringConstraints(min_length=1, max_length=60)] | None = None
    delete_on_termination: bool | None = None


class VolumeAttachmentCreateBody(_Body):
    volumeAttachment: VolumeAttachmentCreate
