"""CPU of every PostgreSQL backend serving one database, including those that close meanwhile.

``python -m bench.backend_sampler URL`` samples ``/proc/<pid>/stat`` of each backend of the
database at ``URL`` (but its own) every few milliseconds until its standard input closes, then
prints the CPU seconds they used in between as JSON. A worker that opens a connection of its own
for a while (dispatch's recorder thread) is counted too: the last sample before the connection
closed misses at most one interval of it. Run by :class:`bench.harness.BackendsCpu`.
"""

from __future__ import annotations

import json
import sys
import threading

import psycopg

from bench.harness import process_cpu_seconds

INTERVAL_SECONDS = 0.005


def main(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as sampler:
        own_pid = sampler.info.backend_pid
        first: dict[int, float] = {}
        last: dict[int, float] = {}
        finished = threading.Event()

        def sample(*, at_start: bool) -> None:
            rows = sampler.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> %s",
                [own_pid],
            ).fetchall()
            for (pid,) in rows:
                seconds = process_cpu_seconds(pid)
                # A backend that started meanwhile used next to nothing before its first sample.
                first.setdefault(pid, seconds if at_start else 0.0)
                last[pid] = seconds

        sample(at_start=True)
        threading.Thread(target=lambda: (sys.stdin.read(), finished.set()), daemon=True).start()
        print("ready", flush=True)
        while not finished.wait(INTERVAL_SECONDS):
            sample(at_start=False)
        sample(at_start=False)
    print(json.dumps({"seconds": sum(last[pid] - first[pid] for pid in last)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
