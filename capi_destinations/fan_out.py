"""Ask Meta about many destinations at once, recording each answer in the calling thread.

The health checks and the match-quality fetch both make one slow Graph call per destination.
The calls run on a pool of threads; each answer is recorded by the calling thread as soon as
its call returns, so the database is written from one thread only, and one destination whose
recording fails never stops the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import TypeVar

from django.db import connection

__all__ = ["ask_each"]

Item = TypeVar("Item")
Answer = TypeVar("Answer")


def ask_each(
    items: Sequence[Item],
    ask: Callable[[Item], Answer],
    record: Callable[[Item, Answer], None],
    *,
    max_workers: int,
    name: str,
    what: str,
    logger: logging.Logger,
) -> None:
    """Run ``ask(item)`` on at most ``max_workers`` threads; ``record(item, answer)`` here.

    ``name`` names the threads; ``what`` starts the log line of an item that failed (with the
    item's primary key, never its repr, which could hold more than an id).
    """
    if not items:
        return
    workers = max(1, min(max_workers, len(items)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"capi-{name}") as pool:
        pending: dict[Future[Answer], Item] = {
            pool.submit(_ask_in_worker_thread, ask, item): item for item in items
        }
        for future in as_completed(pending):
            item = pending[future]
            try:
                record(item, future.result())
            except Exception:
                # One destination's bad data must not stop the others.
                logger.exception("%s of destination %s failed", what, getattr(item, "pk", "?"))


def _ask_in_worker_thread(ask: Callable[[Item], Answer], item: Item) -> Answer:
    try:
        return ask(item)
    finally:
        # Worker threads make only the Graph call; if anything touched the database, its
        # connection must not outlive the thread.
        connection.close()
