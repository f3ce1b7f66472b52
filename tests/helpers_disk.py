"""Real small and read-only disks for tests: a script run in a private user and mount namespace where a tmpfs of a
given size is mounted (no root needed where user namespaces are allowed; the test is skipped where they are not).

The script gets the mount point as ``sys.argv[1]`` (then the extra arguments), may remount it read-only with
``mount -o remount,ro``, and reports by printing one line ``RESULT <json>``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).parent


def run_on_small_disk(script: str, tmp_path: Path, size: str = "1m", args: tuple[str, ...] = (),
                      timeout: float = 300) -> dict:
    """Run ``script`` with a fresh tmpfs of ``size`` mounted at its first argument; the dict it reported."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not available")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    path = tmp_path / "on_small_disk.py"
    path.write_text(f"import sys\nsys.path[:0] = [{str(TESTS_DIR)!r}, {str(TESTS_DIR.parent)!r}]\n" + script)
    quoted = " ".join(f"'{arg}'" for arg in (str(mount), *args))
    command = f"mount -t tmpfs -o size={size} tmpfs {mount} && {sys.executable} {path} {quoted}"
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", command],
                          capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines and ("unshare" in done.stderr or "mount" in done.stderr) and "Traceback" not in done.stderr:
        pytest.skip(f"cannot mount a private tmpfs here: {done.stderr.strip()}")
    assert lines, done.stderr
    return json.loads(lines[0][len("RESULT "):])
