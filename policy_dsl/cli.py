"""`trustmesh policy check|eval|test|fmt`: the policy language's command line.

File reading lives here (and in ``load_files``); everything else is the pure
pipeline. Exit codes: 0 success, 1 invalid policy / failed case / bad input,
2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``trustmesh policy`` and its subcommands."""
    policy = subparsers.add_parser(
        "policy", help="check, evaluate and test ABAC policy files",
        description="Work with trustmesh policy files (see docs/policy.md).",
    )
    sub = policy.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    sub.required = True

    check = sub.add_parser("check", help="parse and check policy files; print errors and warnings")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("--strict", action="store_true", help="treat warnings as errors (exit 1)")
    check.set_defaults(func=_check)

    evaluate = sub.add_parser("eval", help="evaluate one request's attributes against policy files")
    evaluate.add_argument("files", nargs="+", metavar="FILE")
    evaluate.add_argument("--request", required=True, metavar="REQ.json",
                          help="JSON object of attributes (same shape as a case's 'request')")
    evaluate.add_argument("--explain", action="store_true", help="print how every rule evaluated")
    evaluate.set_defaults(func=_eval)

    test = sub.add_parser("test", help="run request/decision cases against policy files (for CI)")
    test.add_argument("files", nargs="+", metavar="FILE")
    test.add_argument("--cases", required=True, action="append", metavar="CASES.yaml",
                      help="case file (YAML or JSON); may be repeated")
    test.add_argument("-q", "--quiet", action="store_true", help="print failures only")
    test.set_defaults(func=_test)

    fmt = sub.add_parser("fmt", help="print policy files in canonical layout (comments kept)")
    fmt.add_argument("files", nargs="+", metavar="FILE")
    mode = fmt.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if any file is not formatted")
    mode.add_argument("--write", action="store_true", help="rewrite the files in place")
    fmt.set_defaults(func=_fmt)


def _load(files):
    from policy_dsl.errors import PolicyError
    from policy_dsl.loader import load_files

    try:
        policy_set = load_files(files)
    except PolicyError as err:
        print(err, file=sys.stderr)
        return None
    for warning in policy_set.warnings:
        print(warning, file=sys.stderr)
    return policy_set


def _check(args: argparse.Namespace) -> int:
    policy_set = _load(args.files)
    if policy_set is None:
        return 1
    print(
        f"ok: {len(policy_set.files)} file(s), {len(policy_set.policies)} policies, "
        f"{len(policy_set.rules)} rules, default {policy_set.default}, "
        f"{len(policy_set.warnings)} warning(s)"
    )
    return 1 if args.strict and policy_set.warnings else 0


def _read_document(path: str):
    from policy_dsl.errors import PolicyError

    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise PolicyError(f"{path}: cannot read: {err}") from err
    if path.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise PolicyError(f"{path}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PolicyError(f"{path}: invalid YAML: {err}") from None


def _eval(args: argparse.Namespace) -> int:
    from policy_dsl.cases import request_attrs
    from policy_dsl.errors import PolicyError

    policy_set = _load(args.files)
    if policy_set is None:
        return 1
    document = _read_document(args.request)
    if not isinstance(document, dict):
        raise PolicyError(f"{args.request}: expected a JSON object of attributes")
    decision = policy_set.evaluate(request_attrs(document), trace=args.explain)
    print(decision.explain())
    return 0


def _test(args: argparse.Namespace) -> int:
    from policy_dsl.cases import parse_cases, run_cases

    policy_set = _load(args.files)
    if policy_set is None:
        return 1
    failed = total = 0
    for path in args.cases:
        cases = parse_cases(_read_document(path), path)
        for result in run_cases(policy_set, cases):
            total += 1
            if result.passed:
                if not args.quiet:
                    print(f"PASS  {path}: {result.name}")
                continue
            failed += 1
            print(f"FAIL  {path}: {result.name}")
            for problem in result.problems:
                print(f"      {problem}")
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


def _fmt(args: argparse.Namespace) -> int:
    from policy_dsl.errors import PolicyError
    from policy_dsl.fmt import format_text

    status = 0
    for path in args.files:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as err:
            raise PolicyError(f"{path}: cannot read: {err}") from err
        try:
            formatted = format_text(text, path)
        except PolicyError as err:
            print(err, file=sys.stderr)
            status = 1
            continue
        if args.check:
            if formatted != text:
                print(f"{path}: not formatted", file=sys.stderr)
                status = 1
        elif args.write:
            if formatted != text:
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(formatted)
                print(f"formatted {path}")
        else:
            sys.stdout.write(formatted)
    return status
