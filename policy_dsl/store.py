"""A reloadable holder of the policy set in force.

A load that fails leaves the last good set in force and records why in
``last_error``; before any successful load the store holds a deny-all set.
Swapping the set is a single attribute assignment, so readers on other
threads or tasks always see a complete set.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable

from policy_dsl.errors import PolicyError
from policy_dsl.evaluator import PolicySet
from policy_dsl.loader import load_files, load_policy

__all__ = ["PolicyStore"]


class PolicyStore:
    """Holds the current :class:`PolicySet`; ``generation`` counts successful loads."""

    def __init__(self) -> None:
        self.current: PolicySet = PolicySet.deny_all()
        self.generation = 0
        self.last_error: PolicyError | None = None
        self._lock = threading.Lock()

    def load_text(self, text: str, filename: str = "<string>") -> bool:
        """Replace the set with ``text``; on failure keep the old one and return False."""
        return self._swap(lambda: load_policy(text, filename))

    def load_files(self, paths: Iterable[str | os.PathLike]) -> bool:
        """Replace the set with these files; on failure keep the old one and return False."""
        paths = list(paths)
        return self._swap(lambda: load_files(paths))

    def _swap(self, build) -> bool:
        with self._lock:
            try:
                new = build()
            except PolicyError as err:
                self.last_error = err
                return False
            self.current = new
            self.generation += 1
            self.last_error = None
            return True
