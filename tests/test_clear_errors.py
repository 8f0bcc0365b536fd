"""Errors a user causes end in a few lines naming the path, the key and the fix, not a traceback (``train.main``):
range errors, truncated checkpoints, a read-only run folder, a full disk, no W&B login; ``--optimizer`` is refused;
``MMSTILTS_DEBUG=1`` shows the traceback. Result files are written whole or not at all (``contracts.files``).
"""

from __future__ import annotations

import errno
import os
import pathlib
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_process_group, subprocess_env

import train
from contracts.files import atomic_open, atomic_write_text
from lightning_modules.weights import CheckpointFileError, check_checkpoint_file

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DEMO = [
    "--config",
    str(CONFIGS / "base.yaml"),
    "--config",
    str(CONFIGS / "demo/base.yaml"),
    "--config",
    str(CONFIGS / "demo/target_ve.yaml"),
    "--data.num_workers",
    "0",
]
NO_LOGGER = ["--trainer.logger", "false"]


@pytest.fixture(autouse=True)
def no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(train.DEBUG_ENV, raising=False)


def run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """``train.main(args)`` in this process: its exit code and stderr."""
    code = train.main(args)
    return code, capsys.readouterr().err


def assert_short(err: str, *parts: str) -> None:
    assert "Traceback" not in err, err[-3000:]
    message = err[err.index("train.py: ") :]
    assert len(message.splitlines()) <= 3, message
    for part in parts:
        assert part in message, f"{part!r} not in: {message}"


# -- settings out of range ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("--model.optimizer.lr", "-1", "model.optimizer.lr=-1.0: out of range, must be > 0"),
        ("--model.optimizer.head_lr", "-1", "model.optimizer.head_lr=-1.0: out of range"),
        ("--model.schedule.warmup_steps", "-5", "model.schedule.warmup_steps=-5: out of range"),
        ("--model.optimizer.weight_decay", "-0.1", "model.optimizer.weight_decay=-0.1: out of range"),
        ("--data.batch_size", "-2", "data.batch_size=-2: out of range"),
        ("--data.eval_batch_size", "0", "data.eval_batch_size=0: out of range"),
        ("--data.temperature", "0", "data.temperature=0.0: out of range"),
        ("--data.max_length", "60", "data.max_length=60: must be a positive multiple of 8"),
    ],
)
def test_range_error_is_a_few_lines(
    demo_cwd: Path, capsys: pytest.CaptureFixture, key: str, value: str, message: str
) -> None:
    """Each arrived as the last line of a 50-65-line traceback."""
    code, err = run(["fit", *DEMO, *NO_LOGGER, key, value], capsys)
    assert code == 2
    assert_short(err, f"train.py: {message}")


def test_range_error_from_the_command_line(demo_cwd: Path) -> None:
    """The same through ``python train.py``: exit code 2 and no traceback."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "fit", *DEMO, *NO_LOGGER, "--model.optimizer.lr", "-1"],
        cwd=demo_cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert_short(proc.stderr, "train.py: model.optimizer.lr=-1.0: out of range, must be > 0", "MMSTILTS_DEBUG=1")


def test_debug_shows_the_traceback(demo_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(train.DEBUG_ENV, "1")
    with pytest.raises(ValueError, match="model.optimizer.lr"):
        train.main(["fit", *DEMO, *NO_LOGGER, "--model.optimizer.lr", "-1"])


def test_optimizer_flag_is_refused_naming_model_optimizer(demo_cwd: Path, capsys: pytest.CaptureFixture) -> None:
    """``--optimizer torch.optim.SGD`` replaced AdamW and the schedule without a word."""
    with pytest.raises(SystemExit) as info:
        train.main(["fit", *DEMO, *NO_LOGGER, "--optimizer", "torch.optim.SGD"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "--optimizer" in err and "model.optimizer.{lr, head_lr, weight_decay}" in err and "model.schedule" in err


# -- checkpoints ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def truncated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint (torch.save's zip format) cut to half its size, as an interrupted copy leaves it."""
    out = tmp_path_factory.mktemp("ckpt")
    torch.save({"state_dict": {"core.w": torch.zeros(4096)}, "hyper_parameters": {}}, out / "whole.ckpt")
    data = (out / "whole.ckpt").read_bytes()
    (out / "cut.ckpt").write_bytes(data[: len(data) // 2])
    return out / "cut.ckpt"


@pytest.mark.parametrize("flag", ["--model.init_from", "--ckpt_path"])
def test_truncated_checkpoint_names_key_and_path(
    demo_cwd: Path, truncated: Path, capsys: pytest.CaptureFixture, flag: str
) -> None:
    """Before: torch's zip-reader error (`failed finding central directory`), the path nowhere for init_from."""
    code, err = run(["fit", *DEMO, *NO_LOGGER, flag, str(truncated)], capsys)
    assert code == 1
    assert_short(err, f"train.py: {flag.lstrip('-')}={truncated}: truncated checkpoint", "copy it again")


def test_checkpoint_file_check(tmp_path: Path) -> None:
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}}, whole)
    check_checkpoint_file(whole, "model.init_from")  # a whole checkpoint passes
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    for name, part in [("empty.ckpt", "empty file"), ("text.ckpt", "not a checkpoint"), ("absent.ckpt", "no such")]:
        with pytest.raises(CheckpointFileError, match=part):
            check_checkpoint_file(tmp_path / name, "model.init_from")


# -- the run folder: read-only, full --------------------------------------------------------------------------------
def test_read_only_run_folder_names_the_file_and_the_fix(
    demo_cwd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Before: ``OSError ... wandb_id.txt`` at the end of a traceback. chmod does not bind root: there the OS error
    a read-only folder gives is raised by the write itself."""
    root = tmp_path / "ro_run"
    root.mkdir()
    if os.geteuid() == 0:
        write_text = pathlib.Path.write_text

        def refuse(self: Path, *args: object, **kwargs: object) -> int:
            if self.is_relative_to(root):
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return write_text(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "write_text", refuse)
    else:
        root.chmod(0o555)
    try:
        code, err = run(["fit", *DEMO, "--trainer.default_root_dir", str(root), "--trainer.max_steps", "1"], capsys)
    finally:
        root.chmod(0o755)
    assert code == 1
    assert_short(err, f"train.py: {root / 'wandb_id.txt'}: Permission denied", "--trainer.default_root_dir")


def _file_size_limit(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_full_disk_names_the_file(demo_cwd: Path) -> None:
    """A file-size limit stands in for a full disk: ``OSError: [Errno 27] File too large`` named no path."""
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "fit",
        *DEMO,
        *NO_LOGGER,
        "--trainer.max_steps",
        "2",
        "--name",
        "full",
    ]
    proc = subprocess.run(
        cmd,
        cwd=demo_cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: _file_size_limit(100_000),
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    checkpoint = demo_cwd / "runs" / "full" / "checkpoints" / "last.ckpt"
    assert_short(proc.stderr, f"train.py: {checkpoint}: File too large (errno 27)", "ulimit -f", "df -h")


# -- W&B without a login ----------------------------------------------------------------------------------------
def test_no_wandb_login_says_how_to_log(demo_cwd: Path, tmp_path: Path) -> None:
    """No WANDB_MODE, no API key, an empty HOME, no network: before, 62 lines ending in ``UsageError``."""
    env = {k: v for k, v in subprocess_env().items() if not k.startswith("WANDB_")}
    env["HOME"] = str(tmp_path / "home")
    cmd = [sys.executable, str(ROOT / "train.py"), "fit", *DEMO, "--trainer.max_steps", "1", "--name", "wb"]
    proc = run_process_group(cmd, demo_cwd, env, timeout=240, what="train.py without a W&B login")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert_short(proc.stdout, "train.py: W&B:", "WANDB_MODE=offline", "wandb login", "--trainer.logger false")


# -- result files whole or not at all -------------------------------------------------------------------------------
def test_atomic_write_killed_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "outcomes.jsonl"
    atomic_write_text(target, "old\n")
    script = (
        "import os, sys; from contracts.files import atomic_open\nwith atomic_open(sys.argv[1]) as f:\n"
        "    f.write('new\\n' * 1000); f.flush(); os._exit(9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(target)], env=subprocess_env(), timeout=60)
    assert proc.returncode == 9
    assert target.read_text() == "old\n"
    with pytest.raises(RuntimeError), atomic_open(tmp_path / "results.json") as f:
        f.write("{")
        raise RuntimeError("died mid-write")
    assert not (tmp_path / "results.json").exists() and not list(tmp_path.glob(".results.json.tmp-*"))


def test_test_run_dying_mid_outcomes_leaves_no_results_json(
    demo_cwd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from contracts import outcomes

    lines = outcomes.outcome_lines

    def dying(*args: object, **kwargs: object):  # noqa: ANN202
        yield next(iter(lines(*args, **kwargs)))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outcomes, "outcome_lines", dying)
    root = tmp_path / "run"
    train.main(["test", *DEMO, *NO_LOGGER, "--trainer.default_root_dir", str(root)])
    assert not (root / "results.json").exists(), "results.json written beside an outcomes.jsonl cut short"
    assert not (root / "outcomes.jsonl").exists()
