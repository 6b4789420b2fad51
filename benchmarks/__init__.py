"""Reproducible speed comparisons of fcnseg against its peers (``python -m benchmarks.run``)."""
