"""bench/device_bundle.py: a trimmed wheel keeps a valid RECORD, its modes and its console scripts."""

from __future__ import annotations

import csv
import io
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import device_bundle  # noqa: E402

FILES = {
    "pkg/__init__.py": b"VALUE = 1\n",
    "pkg/core/tool": b"#!/bin/sh\necho tool\n",
    "pkg/jars/big.jar": b"J" * 5000,
    "pkg/extra/tests/test_it.py": b"def test(): pass\n",
    "pkg/extra/examples/demo.py": b"print('demo')\n",
    "pkg/extra/real.py": b"X = 2\n",
    "pkg/web/app.js.map": b"{}",
    "pkg/vendor/dep-1.0.dist-info/RECORD": b"dep/__init__.py,,\n",
    "pkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n",
    "pkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    "pkg-1.0.dist-info/entry_points.txt": b"[console_scripts]\npkg-cli = pkg:main\nserve = pkg.serve:cli\n",
}


def make_wheel(path: Path) -> Path:
    rows = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in FILES.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | (0o755 if name.endswith("/tool") else 0o644)) << 16
            z.writestr(info, data)
            rows.append((name, device_bundle.record_hash(data), str(len(data))))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows + [("pkg-1.0.dist-info/RECORD", "", "")])
        z.writestr("pkg-1.0.dist-info/RECORD", buf.getvalue())
    return path


def test_trimmed_wheel_has_a_valid_record_and_installs(tmp_path):
    src = make_wheel(tmp_path / "pkg-1.0-py3-none-any.whl")
    assert device_bundle.check_record(src) == []
    dst = tmp_path / "out" / src.name
    info = device_bundle.trim_wheel(src, dst, [r"pkg/jars/", r"pkg/(.+/)?tests?/", r"pkg/(.+/)?examples/",
                                               r".*\.js\.map$"], drop_scripts=("serve",))
    assert info["dropped_files"] == 4 and info["kept_files"] == len(FILES) - 4
    assert device_bundle.check_record(dst) == []
    with zipfile.ZipFile(dst) as z:
        names = set(z.namelist())
        assert "pkg/jars/big.jar" not in names and "pkg/extra/tests/test_it.py" not in names
        assert "pkg/extra/real.py" in names and "pkg/vendor/dep-1.0.dist-info/RECORD" in names  # vendored kept
        assert (z.getinfo("pkg/core/tool").external_attr >> 16) & 0o111  # still executable
        scripts = z.read("pkg-1.0.dist-info/entry_points.txt").decode()
    assert "pkg-cli = pkg:main" in scripts and "serve" not in scripts
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--target", str(site), str(dst)], check=True)
    assert (site / "pkg" / "extra" / "real.py").read_text() == "X = 2\n"
    assert (site / "pkg" / "core" / "tool").stat().st_mode & stat.S_IXUSR
    assert not (site / "pkg" / "jars").exists()


def test_check_record_finds_a_changed_file(tmp_path):
    src = make_wheel(tmp_path / "pkg-1.0-py3-none-any.whl")
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            zout.writestr(item, b"VALUE = 2\n" if item.filename == "pkg/__init__.py" else data)
    assert device_bundle.check_record(bad) == ["pkg/__init__.py: hash or size differs from RECORD"]


@pytest.mark.parametrize("name, expected", [("Typing_Extensions", "typing-extensions"), ("ray", "ray"),
                                            ("google.crc32c", "google-crc32c")])
def test_names_compare_in_canonical_form(name, expected):
    assert device_bundle.canon(name) == expected
