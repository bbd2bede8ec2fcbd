"""Stable public error codes.

These strings are part of the API contract: they appear in HTTP error bodies,
on the fault of instances buried in cell0, and in CLI error output. They never
change meaning once released; exception classes may be renamed freely.
"""

from __future__ import annotations

from typing import Final

# Placement outcomes recorded as cell0 faults.
NO_VALID_HOST: Final = "federator.placement.no_valid_host"
QUOTA_EXCEEDED: Final = "federator.placement.quota_exceeded"
POLICY_DENIED: Final = "federator.placement.policy_denied"
BUILD_FAILED: Final = "federator.placement.build_failed"
# A hard server-group rule left no zone or host for the member.
GROUP_POLICY: Final = "federator.placement.group_policy"

# Found by the monitor: a placed instance missing from its zone (fault of an ERROR record).
MONITOR_VANISHED: Final = "federator.monitor.vanished"
# Found by the monitor: a member of an ACTIVE virtual cluster has gone wrong (the cluster's
# fault while it is DEGRADED; its details name each member and what is wrong with it).
VCLUSTER_DEGRADED: Final = "federator.vcluster.degraded"

# Request and resource errors.
BAD_REQUEST: Final = "federator.request.invalid"
NOT_FOUND: Final = "federator.resource.not_found"
CONFLICT: Final = "federator.resource.conflict"
INVALID_STATE: Final = "federator.instance.invalid_state"
PAYLOAD_TOO_LARGE: Final = "federator.request.too_large"
# A project's own quota (Cinder's volumes, gigabytes) would be exceeded (413).
PROJECT_OVER_QUOTA: Final = "federator.request.over_quota"
# The compute API version asked for is outside the range served (406).
VERSION_NOT_ACCEPTABLE: Final = "federator.request.version_not_acceptable"
INTERNAL: Final = "federator.internal"

# Identity: no valid token or credentials (401), or a role that does not allow it (403).
UNAUTHORIZED: Final = "federator.auth.unauthorized"
FORBIDDEN: Final = "federator.auth.forbidden"

# Configuration, policy and plugins.
CONFIG_INVALID: Final = "federator.config.invalid"
POLICY_INVALID: Final = "federator.policy.invalid"
DRIVER_NOT_FOUND: Final = "federator.driver.not_found"
DATABASE_OUTDATED: Final = "federator.storage.outdated"
# A database could not be reached while answering a request (503).
DATABASE_UNAVAILABLE: Final = "federator.storage.unavailable"

# Driver taxonomy (see federator.driver).
DRIVER_CAPACITY: Final = "federator.driver.capacity"
DRIVER_TRANSIENT: Final = "federator.driver.transient"
DRIVER_PERMANENT: Final = "federator.driver.permanent"
DRIVER_AUTH: Final = "federator.driver.auth"
DRIVER_NOT_FOUND_INSTANCE: Final = "federator.driver.instance_not_found"
DRIVER_NOT_FOUND_VOLUME: Final = "federator.driver.volume_not_found"

# Short fault names shown on cell0 instances (the machine-readable `fault.code`
# keeps the dotted code; `fault.reason` carries the short name operators grep for).
FAULT_REASONS: Final[dict[str, str]] = {
    NO_VALID_HOST: "no_valid_host",
    QUOTA_EXCEEDED: "quota_exceeded",
    POLICY_DENIED: "policy_denied",
    BUILD_FAILED: "build_failed",
    GROUP_POLICY: "group_policy",
    MONITOR_VANISHED: "vanished",
    VCLUSTER_DEGRADED: "degraded",
}
