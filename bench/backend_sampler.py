"""CPU of every PostgreSQL backend serving one database, including those that close meanwhile.

``python -m bench.backend_sampler URL`` samples ``/proc/<pid>/stat`` of each backend of the
database at ``URL`` (but its own) every few milliseconds until its standard input closes; for
each line it reads, it prints the CPU seconds they used since it started, as JSON. A worker
that opens a connection of its own for a while (dispatch's recorder thread) is counted too:
the last sample before the connection closed misses at most one interval of it. Run by
:class:`bench.harness.BackendsCpu`.
"""

from __future__ import annotations

import json
import sys
import threading

import psycopg

from bench.harness import process_cpu_seconds

# /proc is read this often (cheap), pg_stat_activity asked for new backends less often: a
# backend's CPU is cumulative, so one found late is counted whole; one that closes loses at most
# the last /proc interval.
INTERVAL_SECONDS = 0.005
DISCOVERY_EVERY = 20


def main(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as sampler:
        own_pid = sampler.info.backend_pid
        first: dict[int, float] = {}
        last: dict[int, float] = {}
        lock = threading.Lock()
        finished = threading.Event()

        def discover(*, at_start: bool) -> None:
            rows = sampler.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> %s",
                [own_pid],
            ).fetchall()
            for (pid,) in rows:
                if pid not in first:
                    # A backend that started meanwhile is counted from its start.
                    first[pid] = process_cpu_seconds(pid) if at_start else 0.0

        def read_cpu() -> None:
            for pid in first:
                seconds = process_cpu_seconds(pid)
                if seconds:  # 0: the backend has exited; its last reading stands
                    last[pid] = seconds

        def answer() -> None:
            # Each line read is a request for the CPU used so far; end of input stops.
            for _line in sys.stdin:
                with lock:
                    discover(at_start=False)
                    read_cpu()
                    used = sum(last[pid] - first[pid] for pid in last)
                print(json.dumps({"seconds": used}), flush=True)
            finished.set()

        discover(at_start=True)
        read_cpu()
        threading.Thread(target=answer, daemon=True).start()
        print("ready", flush=True)
        ticks = 0
        while not finished.wait(INTERVAL_SECONDS):
            ticks += 1
            with lock:
                if ticks % DISCOVERY_EVERY == 0:
                    discover(at_start=False)
                read_cpu()


if __name__ == "__main__":
    main(sys.argv[1])
