"""The duplicate and replace rules of a batch of events, as a pure plan (no database).

Events are unique per (destination, event_name, event_id). Within one batch:

- the first event of a key is the one stored; a later copy is a duplicate of it;
- except that a copy which ``corrects`` a ``rejected`` one takes its place (the rejected one is
  then ``superseded``), as it would in a later call;
- a duplicate whose contents differ from what it duplicates ``reuses`` the event_id, which both
  are told about (the ``event_id_reused`` finding, added by ``ingest``).

The same two rules decide what happens against the rows already stored; the ``EventStore``
applies them there with conditional statements, so concurrent requests agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from capi_destinations.models import EventStatus

__all__ = ["BatchPlan", "Planned", "corrects", "plan_batch", "reuses"]


class Planned(Protocol):
    """An event made ready to store: its key and its unsaved row (``status``, ``payload_hash``)."""

    key: tuple[str, str]
    row: Any


PlannedT = TypeVar("PlannedT", bound=Planned)


def corrects(copy: Planned, original: Any) -> bool:
    """Whether ``copy`` takes the place of ``original``: a rejected row, and not the same copy.

    A rejected row never reached Meta, so a later event under its key is the caller's
    correction. A copy with the same contents that fails again would change nothing, so it
    stays a duplicate; the same contents that now pass (our checks or the destination changed)
    do not.
    """
    return original.status == EventStatus.REJECTED and (
        copy.row.status != EventStatus.REJECTED or copy.row.payload_hash != original.payload_hash
    )


def reuses(copy: Planned, original: Any) -> bool:
    """Whether the duplicate ``copy`` reuses ``original``'s event_id for other contents."""
    return bool(copy.row.payload_hash != original.payload_hash)


@dataclass
class BatchPlan(Generic[PlannedT]):
    """What to store of one batch, and what each other event of it is a duplicate of."""

    #: The event kept for each key: the first one, or the copy that corrected it.
    kept: dict[tuple[str, str], PlannedT] = field(default_factory=dict)
    #: (duplicate, the event kept for its key when it arrived), in batch order.
    later: list[tuple[PlannedT, PlannedT]] = field(default_factory=list)
    #: Rejected events replaced by a correcting copy later in the batch, in batch order.
    superseded: list[PlannedT] = field(default_factory=list)

    def to_insert(self) -> list[PlannedT]:
        """The kept events in key order.

        Every request inserts keys in the same order, so two requests carrying the same events
        in another order wait for each other instead of deadlocking on PostgreSQL.
        """
        return sorted(self.kept.values(), key=_key)


def _key(item: Planned) -> tuple[str, str]:
    return item.key


def plan_batch(items: Iterable[PlannedT]) -> BatchPlan[PlannedT]:
    """Which event of the batch is stored under each key, and what the others duplicate."""
    plan: BatchPlan[PlannedT] = BatchPlan()
    kept = plan.kept
    for item in items:
        first = kept.get(item.key)
        if first is None:
            kept[item.key] = item
        elif corrects(item, first.row):
            kept[item.key] = item
            plan.superseded.append(first)
        else:
            plan.later.append((item, first))
    return plan
