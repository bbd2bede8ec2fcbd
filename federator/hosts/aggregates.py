"""Host aggregates as the API asks for them (Nova's os-aggregates).

Each call is one API-database transaction that checks the rules of
:mod:`federator.hosts.membership` before changing anything, then refreshes the
scheduler's host table, so a host joining or leaving an aggregate or an availability
zone counts for the very next placement made by this process (others see it at their
next periodic refresh).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from federator.compute.context import ComputeContext
from federator.exception import BadRequest, Conflict
from federator.hosts import membership
from federator.hosts.membership import AggregateView
from federator.storage.models import Aggregate

__all__ = ["AggregateService", "AggregateView"]

# ``update`` leaves the availability zone alone unless given this or a value.
_KEEP = object()


class AggregateService:
    def __init__(self, ctx: ComputeContext) -> None:
        self.ctx = ctx

    def list_aggregates(self) -> list[AggregateView]:
        with self.ctx.api.read() as s:
            rows = s.scalars(select(Aggregate).order_by(Aggregate.id)).all()
            return [membership.view(s, a) for a in rows]

    def get(self, ref: str) -> AggregateView:
        """:raises NotFound: unknown id, or not an id at all."""
        with self.ctx.api.read() as s:
            return membership.view(s, membership.get_aggregate(s, ref))

    def create(self, name: str, availability_zone: str | None) -> AggregateView:
        """:raises Conflict: the name is taken. :raises BadRequest: a bad availability zone."""
        with self._write() as s:
            agg = membership.create(s, name, availability_zone)
            s.flush()
            return membership.view(s, agg)

    def update(
        self, ref: str, *, name: str | None = None, availability_zone: object = _KEEP
    ) -> AggregateView:
        """Rename and/or change the availability zone (None removes it).

        :raises NotFound, Conflict, BadRequest:
        """
        if name is None and availability_zone is _KEEP:
            raise BadRequest(
                "give name or availability_zone to change",
                problems=[{"field": "aggregate", "message": "name or availability_zone"}],
            )
        with self._write() as s:
            agg = membership.get_aggregate(s, ref)
            if name is not None:
                membership.rename(s, agg, name)
            if availability_zone is not _KEEP:
                az = availability_zone if isinstance(availability_zone, str) else None
                membership.set_availability_zone(s, agg, az)
            s.flush()
            return membership.view(s, agg)

    def delete(self, ref: str) -> None:
        """:raises NotFound: unknown aggregate. :raises Conflict: it still has hosts."""
        with self._write() as s:
            membership.delete_aggregate(s, membership.get_aggregate(s, ref))

    def add_host(self, ref: str, host: str) -> AggregateView:
        """:raises NotFound: unknown aggregate or host. :raises Conflict: a rule forbids it."""
        with self._write() as s:
            agg = membership.get_aggregate(s, ref)
            membership.add_host(s, agg, membership.find_host(s, host))
            return membership.view(s, agg)

    def remove_host(self, ref: str, host: str) -> AggregateView:
        """:raises NotFound: unknown aggregate or host, or the host is not in it.
        :raises Conflict: the host runs instances and would change availability zone."""
        with self._write() as s:
            agg = membership.get_aggregate(s, ref)
            membership.remove_host(s, agg, membership.find_host(s, host))
            return membership.view(s, agg)

    def set_metadata(self, ref: str, metadata: Mapping[str, str | None]) -> AggregateView:
        """Set keys, remove those given as None; ``availability_zone`` follows every rule.

        :raises NotFound, Conflict, BadRequest:
        """
        with self._write() as s:
            agg = membership.get_aggregate(s, ref)
            membership.set_metadata(s, agg, metadata)
            s.flush()
            return membership.view(s, agg)

    # --- internals ---------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One transaction, taken in turn with other changes of aggregates; a race lost on
        a unique name answers 409; the host table is refreshed once it is committed."""
        try:
            with self.ctx.api.write() as s:
                membership.serialize(s)
                yield s
        except IntegrityError as err:
            raise Conflict("another aggregate of that name was created meanwhile") from err
        self.ctx.hosts.reload()
