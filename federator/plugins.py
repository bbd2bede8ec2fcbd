"""Driver discovery through stevedore entry points (namespace ``federator.drivers``).

This is the only place the core turns a driver name into code. A package adds a cloud by
declaring an entry point in that namespace; nothing here lists drivers by name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from pydantic import ValidationError
from stevedore import ExtensionManager

from federator.config import ZoneConfig
from federator.driver import Driver, ZoneContext
from federator.exception import ConfigError, DriverNotFound

NAMESPACE = "federator.drivers"
LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PluginInfo:
    name: str
    target: str
    distribution: str
    version: str
    error: str = ""


def _manager() -> ExtensionManager:  # type: ignore[type-arg]
    errors: dict[str, str] = {}

    def on_fail(_manager: object, ep: object, exc: BaseException) -> None:
        errors[getattr(ep, "name", str(ep))] = f"{type(exc).__name__}: {exc}"

    mgr: ExtensionManager = ExtensionManager(  # type: ignore[type-arg]
        NAMESPACE, invoke_on_load=False, on_load_failure_callback=on_fail
    )
    mgr.load_errors = errors  # type: ignore[attr-defined]
    return mgr


def installed() -> list[PluginInfo]:
    """Every driver plugin installed, including ones that fail to import."""
    mgr = _manager()
    # stevedore's cached entry points do not carry their distribution; importlib does.
    owners: dict[str, tuple[str, str]] = {}
    for ep in entry_points(group=NAMESPACE):
        dist = ep.dist
        if dist is not None:
            owners[ep.name] = (dist.name, dist.version)
    found: list[PluginInfo] = []
    for ext in mgr.extensions:
        dist_name, version = owners.get(ext.name, ("", ""))
        found.append(
            PluginInfo(
                name=ext.name,
                target=ext.entry_point.value,
                distribution=dist_name,
                version=version,
            )
        )
    for name, err in getattr(mgr, "load_errors", {}).items():
        found.append(PluginInfo(name=name, target="", distribution="", version="", error=err))
    return sorted(found, key=lambda p: p.name)


def driver_class(name: str, zone: str = "?") -> type[Driver]:
    """Return the driver class registered as ``name``.

    :raises DriverNotFound: no such entry point, or it failed to import.
    """
    mgr = _manager()
    for ext in mgr.extensions:
        if ext.name == name:
            cls = ext.plugin
            if not (isinstance(cls, type) and issubclass(cls, Driver)):
                raise ConfigError(
                    reason=f"driver {name!r} ({ext.entry_point.value}) "
                    "is not a federator.driver.Driver"
                )
            return cls
    load_errors: dict[str, str] = getattr(mgr, "load_errors", {})
    if name in load_errors:
        raise ConfigError(reason=f"driver {name!r} failed to load: {load_errors[name]}")
    raise DriverNotFound(
        zone=zone,
        driver=name,
        installed=", ".join(sorted(e.name for e in mgr.extensions)) or "none",
    )


def load_driver(zone: ZoneConfig, broker_id: str, data_dir: Path) -> Driver:
    """Instantiate the driver for ``zone`` with its validated options.

    :raises DriverNotFound: the zone names a driver that is not installed.
    :raises ConfigError: the zone's options do not match the driver's options model.
    """
    cls = driver_class(zone.driver, zone.name)
    try:
        options = cls.options_model.model_validate(zone.options)
    except ValidationError as exc:
        problems = [
            f"zones.{zone.name}.options.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise ConfigError(
            reason=f"zone {zone.name!r} (driver {zone.driver!r}) has invalid options:\n  "
            + "\n  ".join(problems)
        ) from exc
    zone_dir = data_dir / "zones" / zone.name
    zone_dir.mkdir(parents=True, exist_ok=True)
    ctx = ZoneContext(zone=zone.name, broker_id=broker_id, options=options, data_dir=zone_dir)
    LOG.info("zone %s: loaded driver %s (%s)", zone.name, zone.driver, cls.__module__)
    return cls(ctx)
