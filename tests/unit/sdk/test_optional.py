"""Without the Kubernetes client (the sidecar image), the sidecar works and the CA says what is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# Run Python as if the `kubernetes` package were not installed.
_WITHOUT_KUBERNETES = "import sys; sys.modules['kubernetes'] = None\n"


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _WITHOUT_KUBERNETES + code], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_the_sidecar_and_redirect_commands_need_no_kubernetes_client():
    result = _python(
        "from trustmesh.cli import main\n"
        "for argv in (['sidecar', 'run', '--help'], ['redirect', 'apply', '--help'], ['--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as done:\n"
        "        assert done.code == 0, argv\n"
        "import sidecar.run_cli, sidecar.redirect.cli, sdk.workloadapi\n"
        "print('kubernetes' in sys.modules and sys.modules['kubernetes'] is not None)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("False")


def test_the_ca_kubernetes_authentication_says_which_extra_to_install():
    result = _python(
        "from ca.service.kube import api_client_for\n"
        "from sdk.errors import MissingDependencyError\n"
        "try:\n"
        "    api_client_for('https://127.0.0.1:1')\n"
        "except MissingDependencyError as err:\n"
        "    print(err)\n")
    assert result.returncode == 0, result.stderr
    assert "the CA's Kubernetes authentication needs the Kubernetes client" in result.stdout
    assert "pip install 'trustmesh[kubernetes]'" in result.stdout
