"""``make bench-gpu`` on a GPU machine without network: wheels downloaded here, installed there, its own torch.

    python -m benchmarks.offline download [--dest .whl]            # here (network): the wheels of gpu_wheels.txt
    python -m benchmarks.offline install --wheels .whl --target DIR  # there: the ones not installed, --no-index
    python -m benchmarks.offline check                              # there: import what the GPU plan imports

``benchmarks/gpu_offline.sh`` (= ``make bench-gpu``) runs ``install`` and ``check``, then the GPU plan. The wheels
are for CPython 3.12 on manylinux x86_64 (the lent machine's python3); ``install`` puts only the distributions the
machine lacks into ``DIR`` (``--no-deps``: nothing the machine has is replaced, its torch least of all), to go first
on ``PYTHONPATH``. Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

PINS = Path(__file__).with_name("gpu_wheels.txt")
PYTHON_VERSION = "3.12"
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
# What the GPU plan (benchmarks/run_all.py --only gpu loader --gpu-run) and the code it loads import, in an order
# that names the culprit: the carried packages first, then the machine's own.
IMPORTS = (
    "yaml",
    "braceexpand",
    "webdataset",
    "simplejpeg",
    "jsonargparse",
    "submitit",
    "wandb",
    "torch",
    "torchvision",
    "lightning",
    "lightning.pytorch",
    "torchmetrics",
    "transformers",
    "tokenizers",
    "safetensors",
    "timm",
    "timm.data",
    "PIL",
    "skimage.data",
    "datamodules.datamodule",
    "lightning_modules.core",
    "benchmarks.gpu",
    "benchmarks.loader",
    "benchmarks.ddp_step",
)
OPTIONAL = ("wandb",)
"""Carried but not needed by the plan: if one does not import there, it is removed again (timm imports wandb when
it finds it, and a broken one would break timm)."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path = PINS) -> dict[str, str]:
    """``{canonical name: version}`` of the pin file."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[canonical(name)] = version
    return out


def wheel_dist(path: Path) -> tuple[str, str]:
    """(canonical name, version) from a wheel's file name (``name-version-...whl``)."""
    name, version = path.name.split("-")[:2]
    return canonical(name), version


def download(dest: Path, pin_file: Path = PINS) -> list[Path]:
    """Download every pinned wheel for CPython 3.12 / manylinux x86_64 into ``dest``; drop other versions there."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted = pins(pin_file)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        "-d",
        str(dest),
    ]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run([*cmd, *(f"{n}=={v}" for n, v in wanted.items())], check=True)
    kept = []
    for wheel in sorted(dest.glob("*.whl")):
        name, version = wheel_dist(wheel)
        if wanted.get(name) != version:
            wheel.unlink()  # an older pin: two versions of one name stop the install
        else:
            kept.append(wheel)
    missing = set(wanted) - {wheel_dist(w)[0] for w in kept}
    if missing:
        raise SystemExit(f"no wheel downloaded for {sorted(missing)}")
    return kept


def installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def to_install(wheels: Path, is_installed=installed) -> list[Path]:
    """The wheels in ``wheels`` whose distribution this interpreter lacks (one version of each name)."""
    found: dict[str, Path] = {}
    for wheel in sorted(wheels.glob("*.whl")):
        name, _ = wheel_dist(wheel)
        if name in found:
            raise SystemExit(f"two wheels of {name} in {wheels}: {found[name].name}, {wheel.name}; keep one")
        found[name] = wheel
    return [wheel for name, wheel in found.items() if not is_installed(name)]


def install(wheels: Path, target: Path) -> list[Path]:
    """Install the missing distributions from ``wheels`` into ``target`` (no index, no dependencies resolved)."""
    if not wheels.is_dir():
        raise SystemExit(f"{wheels}/ not found: run `make gpu-wheels` on a machine with network and carry {wheels}")
    todo = to_install(wheels)
    print(
        f"offline install: {len(todo)} of {len(list(wheels.glob('*.whl')))} carried wheels missing here"
        + (f": {', '.join(wheel_dist(w)[0] for w in todo)}" if todo else ""),
        flush=True,
    )
    if todo:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        subprocess.run([*pip, "--no-cache-dir", "--upgrade", "--target", str(target), *map(str, todo)], check=True)
    for module in OPTIONAL:
        if (target / module).is_dir() and not _imports(module, target):
            print(f"offline install: {module} does not import here; removed (the GPU plan does not need it)")
            shutil.rmtree(target / module)
            for info in target.glob(f"{module}-*.dist-info"):
                shutil.rmtree(info)
    return todo


def _imports(module: str, target: Path) -> bool:
    code = f"import sys; sys.path.insert(0, {str(target)!r}); import {module}"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def check(modules: tuple[str, ...] = IMPORTS) -> list[str]:
    """Import each module; print where each came from; return the ones that failed."""
    failed = []
    for module in modules:
        try:
            mod = importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - report every failure, not the first
            failed.append(module)
            print(f"  FAIL {module}: {type(err).__name__}: {err}")
            continue
        version = getattr(mod, "__version__", "")
        print(f"  ok   {module} {version} ({Path(getattr(mod, '__file__', '') or '?').parent})")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    down = sub.add_parser("download", help="here, with network: the pinned wheels into --dest")
    down.add_argument("--dest", type=Path, default=Path(".whl"))
    inst = sub.add_parser("install", help="there: the carried wheels this python lacks into --target")
    inst.add_argument("--wheels", type=Path, default=Path(".whl"))
    inst.add_argument("--target", type=Path, required=True)
    sub.add_parser("check", help="import every module the GPU plan imports")
    args = parser.parse_args(argv)
    if args.command == "download":
        kept = download(args.dest)
        size = sum(w.stat().st_size for w in kept) / 2**20
        print(f"{len(kept)} wheels in {args.dest}/ ({size:.1f} MiB): carry it with the GPU call")
        return 0
    if args.command == "install":
        install(args.wheels, args.target)
        return 0
    print(f"python {sys.version.split()[0]} at {sys.executable}")
    failed = check()
    if failed:
        print(f"check: {len(failed)} module(s) do not import: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
