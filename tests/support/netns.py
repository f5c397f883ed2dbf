"""Network namespaces, veth links, cgroups and processes for tests — always cleaned up.

Real kernels, no mocks: :class:`NetLab` creates namespaces (named
``tmt-<pid>-<n>-<name>`` so parallel runs never collide), connects them with
veth pairs, assigns only the addresses the test chooses, runs commands and
long-lived processes inside them as any uid/gid and, when asked, inside a
fresh cgroup v2. Leaving the ``with`` block — normally or by an exception —
kills every process it started, deletes every namespace (which removes the
veths and all rules in them) and removes every cgroup.

Example::

    from tests.support.netns import NetLab, require_root

    require_root()                        # pytest.skip when not root / no `ip`
    with NetLab() as lab:
        a, b = lab.namespace("a"), lab.namespace("b")
        lab.link(a, b, ["10.77.0.1/24", "fd77::1/64"], ["10.77.0.2/24", "fd77::2/64"])
        server = b.spawn(["python3", "-m", "http.server", "8080"], uid=1000, gid=1000)
        a.run(["curl", "-s", "http://10.77.0.2:8080/"])  # CompletedProcess; raises on failure
        cg = lab.cgroup("pod-a")          # a child cgroup v2 (Path), removed on exit
        a.spawn([...], cgroup=cg)          # the process starts inside it
        lab.on_close(lambda: ...)          # extra cleanup, run first on exit

A process that drops privileges must run ``/usr/bin/python3`` or the venv's
python (``PYTHON`` below), because other uids cannot read the pyenv install.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["PYTHON", "NetLab", "Namespace", "cgroup2_root", "require_root", "sweep_stale"]

# The interpreter running the tests: scripts/setup builds the venv from
# /usr/bin/python3 and makes the checkout traversable, so other uids can run it.
PYTHON = sys.executable
_counter = itertools.count()


def require_root() -> None:
    """Skip the calling test unless it runs as root with ``ip`` available."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2")


def cgroup2_root() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted, or ``None``."""
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return Path(parts[1])
    return None


class Namespace:
    """One network namespace of a :class:`NetLab` (loopback already up)."""

    def __init__(self, lab: NetLab, name: str) -> None:
        self.lab = lab
        self.name = name

    def command(
        self, argv: Sequence[str], *, uid: int | None = None, gid: int | None = None, cgroup: Path | None = None
    ) -> list[str]:
        """``argv`` wrapped to run in this namespace, as ``uid``/``gid``, inside ``cgroup``."""
        # nsenter, not `ip netns exec`: the latter remounts /sys, hiding /sys/fs/bpf and cgroups
        cmd = ["nsenter", f"--net=/run/netns/{self.name}", "--"]
        if uid is not None or gid is not None:
            cmd += ["setpriv", f"--reuid={uid if uid is not None else 0}"]
            cmd += [f"--regid={gid if gid is not None else 0}", "--clear-groups"]
        cmd += list(argv)
        if cgroup is not None:  # join the cgroup first; exec keeps the pid
            cmd = ["sh", "-c", f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"', "sh", *cmd]
        return cmd

    def run(
        self,
        argv: Sequence[str],
        *,
        uid: int | None = None,
        gid: int | None = None,
        cgroup: Path | None = None,
        check: bool = True,
        input: str | None = None,
        timeout: float = 30.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion; raise ``CalledProcessError`` (with stderr) on failure when ``check``."""
        done = subprocess.run(
            self.command(argv, uid=uid, gid=gid, cgroup=cgroup),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
        return done

    def spawn(
        self,
        argv: Sequence[str],
        *,
        uid: int | None = None,
        gid: int | None = None,
        cgroup: Path | None = None,
        ready_line: bool = False,
    ) -> subprocess.Popen[str]:
        """Start a long-lived process; it is killed when the lab closes.

        With ``ready_line`` the call waits (up to 10 s) for the process to
        print one line on stdout — a server saying it listens — and fails if
        it exits first.
        """
        proc = subprocess.Popen(
            self.command(argv, uid=uid, gid=gid, cgroup=cgroup),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lab._procs.append(proc)
        if ready_line:
            line = _readline(proc, timeout=10.0)
            if not line:
                proc.kill()
                raise RuntimeError(f"{argv[0]} in {self.name} exited before ready: {proc.stderr.read()}")
        return proc

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return proc.stdout.readline()


def sweep_stale(prefix: str = "tmt-") -> list[str]:
    """Remove namespaces, cgroups and bpffs pins left by labs whose process is gone (e.g. SIGKILL).

    Only names of the form ``<prefix><pid>-…`` whose ``<pid>`` no longer runs
    are touched. Returns what was removed.
    """
    removed: list[str] = []

    def dead(name: str) -> bool:
        pid = name[len(prefix) :].split("-", 1)[0]
        return name.startswith(prefix) and pid.isdigit() and not Path(f"/proc/{pid}").exists()

    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    for name in (line.split()[0] for line in listing.splitlines() if line.strip()):
        if dead(name):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
            removed.append(name)
    root = cgroup2_root()
    if root is not None:
        for path in root.iterdir():
            if path.is_dir() and dead(path.name):
                _remove_cgroup(path)
                removed.append(str(path))
    bpffs = Path("/sys/fs/bpf")
    if bpffs.is_dir():
        for path in bpffs.glob(f"trustmesh-{prefix}*"):
            if dead(path.name.removeprefix("trustmesh-")):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(str(path))
    return removed


class NetLab:
    """A set of namespaces, links, cgroups and processes that disappears on exit.

    Entering the lab first calls :func:`sweep_stale`, so a run killed without
    cleanup does not leave its namespaces behind for long.
    """

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or f"tmt-{os.getpid()}-{next(_counter)}"
        self._namespaces: list[Namespace] = []
        self._cgroups: list[Path] = []
        self._procs: list[subprocess.Popen[str]] = []
        self._callbacks: list[Callable[[], object]] = []

    def __enter__(self) -> NetLab:
        if os.geteuid() == 0:
            sweep_stale()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def namespace(self, name: str) -> Namespace:
        """Create ``<prefix>-<name>`` with loopback up."""
        ns = Namespace(self, f"{self.prefix}-{name}")
        subprocess.run(["ip", "netns", "add", ns.name], check=True, capture_output=True)
        self._namespaces.append(ns)
        ns.run(["ip", "link", "set", "lo", "up"])
        return ns

    def adopt(self, name: str, pid: int) -> Namespace:
        """Name the network namespace of process ``pid`` (e.g. a container's) ``<prefix>-<name>``.

        Only the name is the lab's: closing the lab removes the name, not the
        namespace, which lives as long as its owner (the container runtime).
        """
        ns = Namespace(self, f"{self.prefix}-{name}")
        subprocess.run(["ip", "netns", "attach", ns.name, str(pid)], check=True, capture_output=True)
        self._namespaces.append(ns)
        return ns

    def link(self, a: Namespace, b: Namespace, a_addrs: Sequence[str], b_addrs: Sequence[str]) -> tuple[str, str]:
        """A veth pair between ``a`` and ``b`` with the given CIDR addresses; returns the two names.

        IPv6 duplicate-address detection is switched off so addresses work at once.
        """
        n = len(self._namespaces) + next(_counter)
        va, vb = f"tmv{os.getpid() % 100000}a{n}", f"tmv{os.getpid() % 100000}b{n}"
        subprocess.run(
            ["ip", "link", "add", va, "netns", a.name, "type", "veth", "peer", "name", vb, "netns", b.name],
            check=True,
            capture_output=True,
        )
        for ns, dev, addrs in ((a, va, a_addrs), (b, vb, b_addrs)):
            ns.run(["sysctl", "-qw", f"net.ipv6.conf.{dev}.accept_dad=0"])
            for addr in addrs:
                flags = ["nodad"] if ":" in addr else []
                ns.run(["ip", "addr", "add", addr, "dev", dev, *flags])
            ns.run(["ip", "link", "set", dev, "up"])
        return va, vb

    def cgroup(self, name: str) -> Path:
        """A new child cgroup v2 ``<root>/<prefix>-<name>``; skips the test without cgroup v2."""
        root = cgroup2_root()
        if root is None:
            import pytest

            pytest.skip("needs a cgroup v2 hierarchy")
        path = root / f"{self.prefix}-{name}"
        path.mkdir()
        self._cgroups.append(path)
        return path

    def on_close(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` first when the lab closes (last registered, first run); errors are ignored.

        For what the lab cannot know about, e.g. bpffs pins a test's programs left behind.
        """
        self._callbacks.append(callback)

    def close(self) -> None:
        """Run ``on_close`` callbacks, kill processes, delete namespaces and cgroups; never raises."""
        while self._callbacks:
            try:
                self._callbacks.pop()()
            except Exception:  # cleanup must go on
                pass
        for proc in self._procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        self._procs.clear()
        for ns in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, check=False)
        self._namespaces.clear()
        for path in reversed(self._cgroups):
            _remove_cgroup(path)
        self._cgroups.clear()


def _remove_cgroup(path: Path) -> None:
    """Move any remaining process to the parent, then remove the (empty) cgroup."""
    for _ in range(50):
        try:
            pids = (path / "cgroup.procs").read_text().split()
        except FileNotFoundError:
            return
        for pid in pids:
            try:
                (path.parent / "cgroup.procs").write_text(pid)
            except OSError:
                pass
        try:
            path.rmdir()
            return
        except OSError:
            time.sleep(0.05)
