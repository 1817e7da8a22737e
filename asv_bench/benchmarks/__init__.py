"""Airspeed-velocity benchmarks for pysketch.

Run from ``asv_bench/``: ``asv run --python=same``.
"""
