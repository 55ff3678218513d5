"""Bounded soak runs: the whole product under load and faults, with the books checked after.

``make soak`` (``python -m soak``) starts PostgreSQL-backed gunicorn, two ``qcluster`` processes
on the Redis broker and the Graph API sandbox on loopback, ingests at a steady rate while the
sandbox misbehaves, kills a worker mid-batch and terminates database connections, and then
checks that every event is accounted for. See ``docs/RELIABILITY.md``.
"""
