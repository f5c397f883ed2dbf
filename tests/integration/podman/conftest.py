"""The podman tests run last, and their image builds while the rest of the suite runs.

Once collection is done (after ``-k``/``-m`` deselection), if any test of this
directory is still selected and podman can run here, ``scripts/image sidecar``
starts in the background (niced) and these tests move to the end of the run:
by the time they start, the build (a few minutes on a fresh machine, a few
seconds when the image is up to date) has usually finished, and they wait for
its exit otherwise. A build still running when the session ends is stopped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import podman

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if HERE in Path(item.path).resolve().parents]
    if not ours:
        return
    items[:] = [item for item in items if item not in ours] + ours
    if not config.option.collectonly and podman.unavailable() is None:
        podman.start_image_build()


def pytest_sessionfinish(session: pytest.Session) -> None:
    podman.stop_image_build()
