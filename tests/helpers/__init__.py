"""Shared test helpers: tiny data and models, brute-force references, a Label Studio server, and scripts that
tests run in subprocesses."""
