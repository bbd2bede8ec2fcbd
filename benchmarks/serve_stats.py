"""``federator serve`` that also answers requests for its database write counters.

Usage::

    python benchmarks/serve_stats.py serve --config FILE [serve options...]

Runs the broker exactly as ``federator serve`` does, in this process. Each line written
to its standard input names a file; the process writes there (atomically: a temporary
file, then a rename) a JSON object of :func:`federator.storage.db.write_gate_stats`,
``{"api": {"wait_s": ..., "held_s": ..., "count": ...}, "cell0": ..., ...}``, read from
the broker's own databases, so the benchmark reads figures a client cannot see.
"""

from __future__ import annotations

import json
import os
import sys
import threading

from federator.storage.db import write_gate_stats


def answer_requests() -> None:
    """Write a snapshot of the counters to each file named on standard input."""
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        snapshot = {
            name: {"wait_s": s.wait_s, "held_s": s.held_s, "count": s.count}
            for name, s in write_gate_stats().items()
        }
        with open(path + ".tmp", "w", encoding="utf-8") as out:
            json.dump(snapshot, out)
        os.replace(path + ".tmp", path)


def main() -> None:
    threading.Thread(target=answer_requests, name="write-gate-stats", daemon=True).start()
    from federator.cli.main import main as federator_main

    sys.argv = ["federator", *sys.argv[1:]]
    federator_main()


if __name__ == "__main__":
    main()
