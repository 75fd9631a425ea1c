"""Benchmarks for Notigate: timing goals live here, not in the test suite.

`python -m bench.policy` measures the policy engine alone and the dry-run endpoint over
HTTP against a bare Litestar endpoint; see bench/README.md.
"""
