"""The install a newcomer runs (`make demo` / `make test`) leaves an environment pip is happy with (issue 14): pip
prints its red "ERROR: pip's dependency resolver ..." exactly when an installed package's requirements are not met,
which `pip check` reports. The authors' GroundingDINO goes in with headless requirements
(requirements/install_groundingdino.sh), so it is both importable and consistent."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import distribution, version


def test_installed_requirements_are_consistent():
    run = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"pip check failed, so every pip run prints an ERROR:\n{run.stdout}{run.stderr}"


def test_groundingdino_is_the_headless_build():
    import groundingdino  # noqa: F401 - the tested backend is there

    requires = distribution("groundingdino-py").requires or []
    assert version("groundingdino-py").endswith("+headless")
    assert not any(r.split(";")[0].strip() in ("opencv-python", "supervision==0.6.0") for r in requires), requires
    assert any(r.startswith("opencv-python-headless") for r in requires)
