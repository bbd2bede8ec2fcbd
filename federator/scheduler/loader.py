"""Build the host scheduler from ``[scheduler]`` through stevedore entry points.

Filters live in the namespace ``federator.scheduler.filters`` and weighers in
``federator.scheduler.weighers``, each under the short name an operator writes in
the configuration (``ram``, ``aggregate_extra_specs``). This module is the only
place those names become code: a package adds a rule by declaring an entry point,
and nothing here lists rules by name. The broker calls :func:`scheduler_from_config`
once at start-up, so a mistake stops it before anything runs.
"""

from __future__ import annotations

import logging
from typing import Any

from stevedore import ExtensionManager

from federator.config import SchedulerConfig
from federator.exception import ConfigError
from federator.scheduler.filters.base import HostFilter
from federator.scheduler.scheduler import HostScheduler
from federator.scheduler.weighers.base import HostWeigher

__all__ = [
    "FILTERS_NAMESPACE",
    "WEIGHERS_NAMESPACE",
    "filter_class",
    "installed_filters",
    "installed_weighers",
    "load_filters",
    "load_weighers",
    "scheduler_from_config",
    "weigher_class",
]

FILTERS_NAMESPACE = "federator.scheduler.filters"
WEIGHERS_NAMESPACE = "federator.scheduler.weighers"
LOG = logging.getLogger(__name__)


def _extensions(namespace: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Every plugin of ``namespace`` by name, and the import errors of those that fail."""
    errors: dict[str, str] = {}

    def on_fail(_manager: object, ep: object, exc: BaseException) -> None:
        errors[getattr(ep, "name", str(ep))] = f"{type(exc).__name__}: {exc}"

    mgr: ExtensionManager = ExtensionManager(  # type: ignore[type-arg]
        namespace, invoke_on_load=False, on_load_failure_callback=on_fail
    )
    return {ext.name: ext for ext in mgr.extensions}, errors


def _installed(namespace: str) -> dict[str, str]:
    found, errors = _extensions(namespace)
    names = {name: ext.entry_point.value for name, ext in found.items()}
    names.update({name: f"(fails to load: {err})" for name, err in errors.items()})
    return dict(sorted(names.items()))


def installed_filters() -> dict[str, str]:
    """Every filter installed, name -> ``module:Class`` (or why it fails to load)."""
    return _installed(FILTERS_NAMESPACE)


def installed_weighers() -> dict[str, str]:
    """Every weigher installed, name -> ``module:Class`` (or why it fails to load)."""
    return _installed(WEIGHERS_NAMESPACE)


def _classes(namespace: str, what: str, base: type, names: list[str]) -> list[Any]:
    """The classes registered as ``names``, in that order.

    :raises ConfigError: a name is not installed, fails to import, or is not a ``base``.
    """
    found, errors = _extensions(namespace)
    classes: list[Any] = []
    for name in names:
        ext = found.get(name)
        if ext is None:
            if name in errors:
                raise ConfigError(
                    reason=f"scheduler {what} {name!r} failed to load: {errors[name]}"
                )
            raise ConfigError(
                reason=f"scheduler.{what}s names {what} {name!r}, which is not installed "
                f"(installed: {', '.join(sorted(found)) or 'none'})"
            )
        cls = ext.plugin
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise ConfigError(
                reason=f"scheduler {what} {name!r} ({ext.entry_point.value}) is not a "
                f"{base.__module__}.{base.__qualname__}"
            )
        classes.append(cls)
    return classes


def filter_class(name: str) -> type[HostFilter]:
    """The filter class registered as ``name``.

    :raises ConfigError: not installed, fails to import, or not a :class:`HostFilter`.
    """
    cls: type[HostFilter] = _classes(FILTERS_NAMESPACE, "filter", HostFilter, [name])[0]
    return cls


def weigher_class(name: str) -> type[HostWeigher]:
    """The weigher class registered as ``name``.

    :raises ConfigError: not installed, fails to import, or not a :class:`HostWeigher`.
    """
    cls: type[HostWeigher] = _classes(WEIGHERS_NAMESPACE, "weigher", HostWeigher, [name])[0]
    return cls


def load_filters(config: SchedulerConfig) -> list[HostFilter]:
    """The filters ``config.filters`` names, built, in that order.

    :raises ConfigError: a name is unknown or a filter refuses its options.
    """
    classes: list[type[HostFilter]] = _classes(
        FILTERS_NAMESPACE, "filter", HostFilter, list(config.filters)
    )
    filters = []
    for name, cls in zip(config.filters, classes, strict=True):
        options = config.filter_options.get(name, {})
        try:
            filters.append(cls.from_config(config, options))
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                reason=f"scheduler filter {name!r} refused its options {options!r}: {exc}"
            ) from exc
    return filters


def load_weighers(config: SchedulerConfig) -> list[HostWeigher]:
    """The weighers ``config.weighers`` names, built with their multipliers, in order.

    :raises ConfigError: a name is unknown or a weigher refuses its options.
    """
    names = [w.name for w in config.weighers]
    classes: list[type[HostWeigher]] = _classes(WEIGHERS_NAMESPACE, "weigher", HostWeigher, names)
    weighers = []
    for spec, cls in zip(config.weighers, classes, strict=True):
        try:
            weighers.append(cls.from_config(config, spec.multiplier, spec.options))
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                reason=f"scheduler weigher {spec.name!r} refused its options {spec.options!r}: "
                f"{exc}"
            ) from exc
    return weighers


def scheduler_from_config(config: SchedulerConfig) -> HostScheduler:
    """The host scheduler ``[scheduler]`` describes.

    :raises ConfigError: an unknown filter or weigher (the message lists the installed
        ones), or options a rule does not take.
    """
    scheduler = HostScheduler(filters=load_filters(config), weighers=load_weighers(config))
    LOG.info(
        "host scheduler: filters %s; weighers %s",
        ", ".join(f.name for f in scheduler.filters) or "none",
        ", ".join(f"{w.name} x {w.multiplier:g}" for w in scheduler.weighers) or "none",
    )
    return scheduler
