"""Parse, check and compile policy text into a :class:`PolicySet`.

``load_policy`` is pure; ``load_files`` reads files (the only I/O of the
pipeline besides :class:`~policy_dsl.store.PolicyStore` and the CLI).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from policy_dsl.checker import CheckedPolicies, check
from policy_dsl.compiler import compile_rule
from policy_dsl.errors import Diagnostic, PolicyError, PolicySyntaxError
from policy_dsl.evaluator import PolicySet
from policy_dsl.parser import parse

__all__ = ["compile_checked", "load_files", "load_policy", "load_texts"]


def compile_checked(checked: CheckedPolicies) -> PolicySet:
    """Compile checked policies into an evaluable set."""
    rules, names = [], []
    for file in checked.files:
        for policy in file.policies:
            names.append(policy.name)
            for rule in policy.rules:
                rules.append(compile_rule(policy, rule, file.filename, len(rules)))
    return PolicySet(
        rules,
        default=checked.default,
        policies=tuple(names),
        files=tuple(f.filename for f in checked.files),
        warnings=checked.warnings,
    )


def load_texts(sources: Iterable[tuple[str, str]]) -> PolicySet:
    """Load several ``(text, filename)`` pairs as one policy set."""
    files = [parse(text, filename) for text, filename in sources]
    return compile_checked(check(files))


def load_policy(text: str, filename: str = "<string>") -> PolicySet:
    """Parse, check and compile one policy text; raise a PolicyError subclass if it is wrong."""
    return load_texts([(text, filename)])


def load_files(paths: Iterable[str | os.PathLike]) -> PolicySet:
    """Read and load policy files as one set (names must be unique across them)."""
    sources = []
    for path in paths:
        name = os.fspath(path)
        try:
            with open(name, "rb") as handle:
                raw = handle.read()
        except OSError as err:
            raise PolicyError(f"{name}: cannot read policy file: {err.strerror or err}") from err
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            line = raw.count(b"\n", 0, err.start) + 1
            column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
            raise PolicySyntaxError(Diagnostic(name, line, column, "file is not valid UTF-8")) from None
        sources.append((text, name))
    if not sources:
        raise PolicyError("no policy files given")
    return load_texts(sources)
