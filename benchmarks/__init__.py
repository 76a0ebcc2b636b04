"""Benchmarks for hyperdb. Each module is runnable: ``python -m benchmarks.<name> --help``."""
