"""Glob patterns for the ``matches`` operator, matched in linear-bounded time.

``*`` matches any run of characters other than ``/``; ``**`` stands for a whole
path segment and matches zero or more segments, so ``/reports/**`` matches
``/reports``, ``/reports/`` and ``/reports/a/b``. There is no escaping and no
other metacharacter. Matching never backtracks exponentially: segments are
compared with the classic single-star algorithm (at most pattern × input steps),
and the common shapes (exact, ``prefix/**``, ``prefix*``) compile to plain
string operations. The policy language has no regular expressions.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["compile_glob", "glob_error", "literal_prefix"]


def glob_error(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid glob, or None."""
    for segment in pattern.split("/"):
        if "**" in segment and segment != "**":
            return f'"**" must be a whole path segment (between "/"), not part of "{segment}"'
    return None


def literal_prefix(pattern: str) -> str:
    """The characters every match starts with (used to index rules)."""
    star = pattern.find("*")
    prefix = pattern if star < 0 else pattern[:star]
    if star >= 0 and pattern[star : star + 2] == "**" and prefix.endswith("/"):
        prefix = prefix[:-1]  # "/a/**" also matches "/a"
    return prefix


def compile_glob(pattern: str) -> Callable[[str], bool]:
    """A predicate telling whether a string matches ``pattern`` (already validated)."""
    if "*" not in pattern:
        return pattern.__eq__
    if pattern == "**":
        return lambda text: True
    head, sep, tail = pattern.rpartition("/")
    if sep and tail == "**" and "*" not in head:
        under = head + "/"
        return lambda text: text == head or text.startswith(under)
    if pattern.count("*") == 1 and pattern.endswith("*") and "/" not in tail:
        prefix = pattern[:-1]
        size = len(prefix)
        return lambda text: text.startswith(prefix) and "/" not in text[size:]
    segments = tuple(pattern.split("/"))
    return lambda text: _match_segments(segments, text.split("/"))


def _match_segments(pattern: tuple[str, ...], text: list[str]) -> bool:
    """Classic wildcard matching over segments, ``**`` being the only star."""
    p = t = 0
    star_p = star_t = -1
    while t < len(text):
        if p < len(pattern) and pattern[p] == "**":
            star_p, star_t = p, t
            p += 1
        elif p < len(pattern) and _match_segment(pattern[p], text[t]):
            p += 1
            t += 1
        elif star_p >= 0:
            star_t += 1
            p, t = star_p + 1, star_t
        else:
            return False
    while p < len(pattern) and pattern[p] == "**":
        p += 1
    return p == len(pattern)


def _match_segment(pattern: str, text: str) -> bool:
    """Classic wildcard matching within one segment, ``*`` being the only star."""
    if "*" not in pattern:
        return pattern == text
    p = t = 0
    star_p = star_t = -1
    while t < len(text):
        if p < len(pattern) and pattern[p] == "*":
            star_p, star_t = p, t
            p += 1
        elif p < len(pattern) and pattern[p] == text[t]:
            p += 1
            t += 1
        elif star_p >= 0:
            star_t += 1
            p, t = star_p + 1, star_t
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)
