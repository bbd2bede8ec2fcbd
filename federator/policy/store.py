"""The policy in force, and how it changes.

The daemon loads the policy file at start-up and again on SIGHUP or an admin reload.
A reload that fails validation changes nothing: the old policy stays in force and the
errors are returned (and logged). Every policy put in force is recorded in the API
database's ``policy_versions`` so each placement can be traced to the exact document.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from federator.exception import PolicyInvalid
from federator.policy.loader import LoadedPolicy, PolicyContext, load_policy
from federator.storage.db import Database
from federator.storage.models import PolicyVersion, utcnow

LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    changed: bool
    version: str
    sha256: str
    loaded_at: datetime


class PolicyStore:
    """Thread-safe holder of the current :class:`LoadedPolicy`."""

    def __init__(
        self, path: Path, context: PolicyContext, db: Database | None, node_id: str
    ) -> None:
        self.path = path
        self.context = context
        self._db = db
        self._node_id = node_id
        self._lock = threading.Lock()
        self._current: LoadedPolicy | None = None
        self._loaded_at = utcnow()

    @property
    def current(self) -> LoadedPolicy:
        cur = self._current
        if cur is None:
            raise RuntimeError("policy not loaded yet")
        return cur

    @property
    def loaded_at(self) -> datetime:
        return self._loaded_at

    def load(self) -> ReloadResult:
        """Load (or reload) the policy file.

        :raises PolicyInvalid: the file does not validate; the policy in force is unchanged.
        """
        with self._lock:
            try:
                new = load_policy(self.path, self.context)
            except PolicyInvalid as exc:
                if self._current is None:  # at start-up there is no policy to keep
                    LOG.error("policy rejected:\n%s", exc.render())
                else:
                    LOG.error(
                        "policy reload rejected, keeping the policy in force:\n%s", exc.render()
                    )
                raise
            old = self._current
            changed = old is None or old.sha256 != new.sha256
            if changed:
                self._record(new)
                self._current = new
                self._loaded_at = utcnow()
                LOG.info(
                    "policy %s (sha256 %s) from %s is in force",
                    new.policy.version,
                    new.sha256[:12],
                    new.source,
                )
            return ReloadResult(changed, new.policy.version, new.sha256, self._loaded_at)

    def _record(self, loaded: LoadedPolicy) -> None:
        if self._db is None:
            return
        with self._db.write() as s:
            s.add(
                PolicyVersion(
                    version=loaded.policy.version,
                    sha256=loaded.sha256,
                    source=loaded.source,
                    content=loaded.text,
                    node=self._node_id,
                )
            )
