"""`trustmesh policy check|eval|test|replay|suggest|fmt`: the policy language's command line.

File reading lives here (and in ``load_files``); everything else is the pure
pipeline. Exit codes: 0 success, 1 invalid policy / failed case / bad input,
2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["register"]


_FILES_HELP = "policy files (.policy); their policies are read together"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``trustmesh policy`` and its subcommands."""
    policy = subparsers.add_parser(
        "policy", help="check, evaluate and test ABAC policy files",
        description="Work with trustmesh policy files (see docs/policy.md).",
    )
    sub = policy.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    sub.required = True

    check = sub.add_parser("check", help="parse and check policy files; print errors and warnings")
    check.add_argument("files", nargs="+", metavar="FILE", help=_FILES_HELP)
    check.add_argument("--strict", action="store_true", help="treat warnings as errors (exit 1, verdict FAIL)")
    check.add_argument("--together", action="store_true",
                       help="also check the files as one policy set, as a sidecar loads them")
    check.set_defaults(func=_check)

    evaluate = sub.add_parser("eval", help="evaluate one request's attributes against policy files")
    evaluate.add_argument("files", nargs="+", metavar="FILE", help=_FILES_HELP)
    evaluate.add_argument("--request", required=True, metavar="REQ",
                          help="JSON object of attributes (same shape as a case's 'request'): "
                               "a file, inline JSON ('{...}') or - for stdin")
    evaluate.add_argument("--explain", action="store_true",
                          help="print how every rule evaluated and, for a denial, why each allow rule did not match")
    evaluate.set_defaults(func=_eval)

    test = sub.add_parser("test", help="run request/decision cases against policy files (for CI)")
    test.add_argument("files", nargs="+", metavar="FILE", help=_FILES_HELP)
    test.add_argument("--cases", action="append", metavar="CASES.yaml",
                      help="case file (YAML or JSON); may be repeated; default: X.cases.yaml beside each X.policy")
    test.add_argument("-q", "--quiet", action="store_true", help="print failures only")
    test.set_defaults(func=_test)

    replay = sub.add_parser(
        "replay", help="re-evaluate recorded requests (access logs) under a new policy and report what changes",
        description="Exit 1 when a request the log shows allowed would now be denied (or, with --strict, when "
                    "any record is undetermined or any line is bad).",
    )
    replay.add_argument("policy", metavar="NEW.policy", help="the policy file to replay the records against")
    replay.add_argument("logs", nargs="+", metavar="LOG", help="access-log files; - reads standard input")
    replay.add_argument("--also", action="append", default=[], metavar="FILE",
                        help="another policy file loaded with NEW.policy as one set; may be repeated")
    replay.add_argument("--json", action="store_true", help="print the report as one JSON object")
    replay.add_argument("--strict", action="store_true", help="also fail on undetermined records and bad lines")
    replay.set_defaults(func=_replay)

    suggest = sub.add_parser("suggest", help="write a least-privilege policy from the allowed flows in access logs")
    suggest.add_argument("logs", nargs="+", metavar="LOG", help="access-log files; - reads standard input")
    suggest.add_argument("-o", "--output", metavar="FILE", help="write the policy here instead of standard output")
    suggest.set_defaults(func=_suggest)

    fmt = sub.add_parser("fmt", help="print policy files in canonical layout (comments kept)")
    fmt.add_argument("files", nargs="+", metavar="FILE", help=_FILES_HELP)
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
    """Each file on its own, with its own default; with ``--together`` also all of them as one
    set, as a sidecar loads them (unique names, one default). The last line is the verdict the
    exit status gives."""
    from policy_dsl.errors import PolicyError
    from policy_dsl.loader import load_files

    failed = warned = 0
    for path in args.files:
        policy_set = _load([path])
        if policy_set is None:
            failed += 1
            continue
        warned += bool(policy_set.warnings)
        print(
            f"{path}: {len(policy_set.policies)} policies, {len(policy_set.rules)} rules, "
            f"default {policy_set.default}, {len(policy_set.warnings)} warning(s)"
        )
    if not failed and args.together and len(args.files) > 1:
        try:
            load_files(args.files)
        except PolicyError as err:
            print(err, file=sys.stderr)
            failed += 1
    if failed:
        print(f"FAIL: {failed} error(s) in {len(args.files)} file(s)")
        return 1
    if args.strict and warned:
        print(f"FAIL (--strict): warnings in {warned} of {len(args.files)} file(s)")
        return 1
    print(f"ok: {len(args.files)} file(s)" + (f", warnings in {warned}" if warned else ""))
    return 0


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


def _request_document(text: str):
    """``--request``: inline JSON (it starts with ``{``), ``-`` for stdin, or a file."""
    from policy_dsl.errors import PolicyError

    if text == "-":
        where, raw = "<stdin>", sys.stdin.read()
    elif text.lstrip().startswith("{"):
        where, raw = "--request", text
    else:
        return text, _read_document(text)
    try:
        return where, json.loads(raw)
    except json.JSONDecodeError as err:
        raise PolicyError(f"{where}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from None


def _eval(args: argparse.Namespace) -> int:
    from policy_dsl.cases import request_attrs
    from policy_dsl.errors import PolicyError

    policy_set = _load(args.files)
    if policy_set is None:
        return 1
    where, document = _request_document(args.request)
    if not isinstance(document, dict):
        raise PolicyError(f"{where}: expected a JSON object of attributes")
    attrs = request_attrs(document)
    decision = policy_set.evaluate(attrs, trace=args.explain)
    print(decision.explain())
    if args.explain and not decision.allowed:
        print("why:")
        print("\n".join(str(policy_set.explain(attrs, decision)).splitlines()[1:]))
    return 0


def _case_files(args: argparse.Namespace) -> list[str]:
    """``--cases`` as given, else ``X.cases.yaml`` (or ``.yml``, ``.json``) beside each ``X.policy``."""
    from policy_dsl.errors import PolicyError

    if args.cases:
        return list(args.cases)
    found = []
    for path in args.files:
        stem = path[: -len(".policy")] if path.endswith(".policy") else path
        candidates = [f"{stem}.cases.{ext}" for ext in ("yaml", "yml", "json")]
        existing = [c for c in candidates if os.path.exists(c)]
        if not existing:
            raise PolicyError(f"{path}: no case file given (--cases) and none beside it ({candidates[0]})")
        found.append(existing[0])
    return found


def _test(args: argparse.Namespace) -> int:
    from policy_dsl.cases import parse_cases, request_attrs, run_cases

    policy_set = _load(args.files)
    if policy_set is None:
        return 1
    failed = total = 0
    for path in _case_files(args):
        cases = parse_cases(_read_document(path), path)
        for case, result in zip(cases, run_cases(policy_set, cases)):
            total += 1
            if result.passed:
                if not args.quiet:
                    print(f"PASS  {path}: {result.name}")
                continue
            failed += 1
            print(f"FAIL  {path}: {result.name}")
            for problem in result.problems:
                print(f"      {problem}")
            if result.attrs is not None:  # how the policy read this request
                decision = policy_set.evaluate(result.attrs, trace=True)
                for line in decision.explain().splitlines():
                    print(f"      {line}")
                if not decision.allowed:
                    for line in str(policy_set.explain(result.attrs, decision)).splitlines()[1:]:
                        print(f"      why: {line.strip()}")
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


def _log_lines(paths: list[str]):
    """(file, line number, line) for every line of the logs; a line over the record size limit
    is yielded as its first bytes, which the reader refuses by size, and the rest is skipped."""
    from policy_dsl.errors import PolicyError
    from policy_dsl.loglines import LinePosition, read_lines

    for path in paths:
        try:
            handle = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as err:
            raise PolicyError(f"{path}: cannot read log: {err.strerror or err}") from err
        name = "<stdin>" if path == "-" else path
        try:
            for number, line in read_lines(handle, LinePosition()):
                yield name, number, line
        finally:
            if handle is not sys.stdin.buffer:
                handle.close()


def _replay(args: argparse.Namespace) -> int:
    from policy_dsl.replay import Replay

    policy_set = _load([args.policy, *args.also])
    if policy_set is None:
        return 1
    replay = Replay(policy_set)
    for name, number, line in _log_lines(args.logs):
        replay.add_line(line, name, number)
    if args.json:
        print(json.dumps(replay.to_json(), default=str))
    else:
        print(replay.report())
    failed = replay.breaks_traffic or (args.strict and (replay.count("undetermined") or replay.error_count))
    return 1 if failed else 0


def _suggest(args: argparse.Namespace) -> int:
    from policy_dsl.record import RecordError, read_record
    from policy_dsl.suggest import Suggester

    suggester = Suggester()
    bad = 0
    for name, number, line in _log_lines(args.logs):
        if not line.strip():
            continue
        try:
            suggester.add(read_record(line))
        except RecordError as err:
            bad += 1
            print(f"{name}:{number}: {err}", file=sys.stderr)
    text = suggester.text()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    print(f"suggested from {suggester.requests} allowed requests ({suggester.ignored} other records, {bad} bad lines)",
          file=sys.stderr)
    return 0


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
