"""Load generator for the gateway: `python -m bench.run`; results in docs/benchmarks.md."""
