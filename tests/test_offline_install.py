"""``make bench-gpu`` on the lent GPU machine without network: the pinned wheel list, which carried wheels its python
lacks, and the --no-index install of those alone (benchmarks/offline.py). The Python 3.12 rehearsal against the
machine's package list is in docs/performance.md (it downloads torch: not a test)."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from benchmarks import offline


def _wheel(folder: Path, name: str, version: str = "0.1", module: str | None = None) -> Path:
    """A minimal pure-Python wheel that pip installs."""
    module = module or name.replace("-", "_")
    dist = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{module}/__init__.py", "VALUE = 42\n")
        zf.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(
            f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def test_pins_are_the_missing_packages_and_never_torch() -> None:
    pins = offline.pins()
    assert {"webdataset", "wandb", "jsonargparse", "simplejpeg", "submitit", "lightning"} <= set(pins)
    assert all(version for version in pins.values())
    machine_has = {"torch", "torchvision", "pytorch-lightning", "transformers", "timm", "torchmetrics", "numpy"}
    assert not machine_has & set(pins) and not any(n.startswith("nvidia") for n in pins)


def test_only_missing_wheels_are_installed_offline(tmp_path: Path) -> None:
    wheels = tmp_path / "whl"
    wheels.mkdir()
    _wheel(wheels, "mmstilts-probe-pkg", module="mmstilts_probe_pkg")
    (wheels / "PyYAML-6.0.4-cp312-cp312-manylinux2014_x86_64.whl").write_bytes(b"")  # installed here: skipped
    assert [w.name for w in offline.to_install(wheels)] == ["mmstilts_probe_pkg-0.1-py3-none-any.whl"]
    target = tmp_path / "site"
    installed = offline.install(wheels, target)  # pip --no-index --no-deps --target: no network needed
    assert [w.name for w in installed] == ["mmstilts_probe_pkg-0.1-py3-none-any.whl"]
    assert (target / "mmstilts_probe_pkg" / "__init__.py").is_file() and not (target / "yaml").exists()
    sys.path.insert(0, str(target))
    try:
        assert offline.check(("mmstilts_probe_pkg",)) == []
    finally:
        sys.path.remove(str(target))
    assert offline.check(("no_such_module_here",)) == ["no_such_module_here"]


def test_two_versions_of_one_wheel_or_no_folder_stop_the_install(tmp_path: Path) -> None:
    _wheel(tmp_path, "mmstilts-probe-pkg", "0.1")
    _wheel(tmp_path, "mmstilts-probe-pkg", "0.2")
    with pytest.raises(SystemExit, match="two wheels of mmstilts-probe-pkg"):
        offline.to_install(tmp_path)
    with pytest.raises(SystemExit, match="make gpu-wheels"):
        offline.install(tmp_path / "absent", tmp_path / "site")
