"""Benchmarks of django-capi-destinations: ``python -m bench --help`` (or ``make bench``).

Benchmarks are not tests: they measure, side by side, in one process run, and check that the
fast side is also right. ``docs/BENCHMARKS.md`` holds the latest table and how to rerun it.
"""

from __future__ import annotations
