"""Helpers for tests and benchmarks; nothing here runs in production.

They live in the package (not under ``tests/``) so the test suite, the
benchmarks and other projects' tests can share them with a plain import.
"""
