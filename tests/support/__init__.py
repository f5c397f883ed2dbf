"""Shared test support code (fixtures, API server doubles, namespaces)."""
