"""Benchmarks (not tests): keras_s2s training and decoding throughput against peers.

`make bench` runs `python -m bench.run`; see bench/README.md for what is measured
and how.
"""
