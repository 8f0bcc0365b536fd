"""Shared test setup: no network, no W&B uploads, one small demo world per test session (per worker under
pytest-xdist), and the grouping and order that let ``make test`` run the suite on every core."""

from __future__ import annotations

import os

# Set at import time, before any test imports transformers, huggingface_hub or wandb.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import signal  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo world (``build_demo(size="small", seed=0)``), built once per session; treat it as read-only.

    Layout: ``<dir>/<task>/`` shard directories for every demo task, ``<dir>/text_model/`` (tokenizer +
    tiny XLM-R config), ``<dir>/vision.json``, ``<dir>/manifest.json`` (the index).
    """
    from shards.demo import build_demo

    return build_demo(tmp_path_factory.mktemp("demo"), size="small", seed=0)


# -- small custom shard directories (uneven, corrupt, ...) for the reliability tests ------------------------


def jpeg_bytes(seed: int, size: int = 40) -> bytes:
    """A small solid-colour JPEG, different per seed."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size, size), ((37 * seed) % 256, (91 * seed) % 256, 128)).save(out, format="JPEG")
    return out.getvalue()


def task_records(task: str, split: str, lang: str, n: int, start: int = 0) -> list[dict]:
    """``n`` valid records of ``demo_ve`` (image + hypothesis) or ``demo_nli`` (text pair) for build_shards."""
    records = []
    for i in range(start, start + n):
        sample = {"task": task, "lang": lang, "id": f"{split}-{lang}-{i}", "text": f"a red circle {i}", "label": i % 3}
        images = {}
        if task == "demo_ve":
            images = {"jpg": jpeg_bytes(i)}
        else:
            sample["text_pair"] = f"a blue square {i}"
        records.append(
            {"key": f"{task}-{split}-{lang}-{i:05d}", "split": split, "lang": lang, "json": sample, "images": images}
        )
    return records


def write_task_shards(out: Path, task: str, sizes: dict[tuple[str, str], int], max_per_shard: int = 4) -> dict:
    """Shards of ``task`` with ``sizes[(split, lang)]`` samples each, ``max_per_shard`` per tar; the manifest."""
    from contracts.catalogue import NLI_LABELS
    from shards.writer import build_shards

    records = [r for (split, lang), n in sizes.items() for r in task_records(task, split, lang, n)]
    meta = {task: {"label_names": list(NLI_LABELS), "label_map": {}}}
    return build_shards(out, records, dataset=task, tasks=meta, max_per_shard=max_per_shard, progress=False)


@pytest.fixture
def demo_cwd(demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory where the demo configs' ``data/demo/...`` paths resolve to the small demo world."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "demo").symlink_to(demo_dir, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_model(demo_dir: Path) -> dict[str, str]:
    """The demo world's tiny text model directory and vision spec (paths as strings)."""
    return {"text_model": str(demo_dir / "text_model"), "vision_model": str(demo_dir / "vision.json")}


def vision_config(vision_model: str) -> dict:
    """A vision model's timm data config, as ``train.py`` links it into ``data.image_config``."""
    from train import image_config

    return image_config(vision_model, {})


# -- subprocesses (DDP launches, crash-resume runs): one session each, killed as a group on timeout ------------


def free_port() -> int:
    """A free TCP port on the loopback interface (a rendezvous for a multi-process test)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TESTS = Path(__file__).resolve().parent
DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK")


def subprocess_env() -> dict[str, str]:
    """The environment of a test's child Python (a DDP launcher, a script run of a test file): the repository and
    tests/ importable, one intra-op thread, offline, and no torch.distributed variables inherited from a launcher."""
    paths = [str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, paths)),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
    }
    for var in (*DIST_VARS, "WANDB_SERVICE"):  # an in-process W&B run of an earlier test set WANDB_SERVICE: a child
        env.pop(var, None)  # sharing that service cannot reuse a killed run's id (resume: "run ID ... is in use")
    return env


def start_process_group(cmd: list[str], cwd: Path | str, env: dict[str, str]) -> subprocess.Popen:
    """``cmd`` in a new session (its ranks and loader workers share its process group); output as text."""
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def kill_process_group(proc: subprocess.Popen) -> None:
    """SIGKILL the whole group (the launcher, every rank, every worker) if it still runs."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)


def finish_process_group(proc: subprocess.Popen, timeout: float, what: str) -> subprocess.CompletedProcess:
    """Wait for ``proc``; past ``timeout`` seconds kill its group and fail the test with the output's tail."""
    try:
        out, _ = proc.communicate(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        kill_process_group(proc)
        out, _ = proc.communicate()
        pytest.fail(f"{what} hung (> {timeout:.0f} s), process group killed; output tail:\n{out[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def run_process_group(
    cmd: list[str], cwd: Path | str, env: dict[str, str], timeout: float, what: str
) -> subprocess.CompletedProcess:
    """``start_process_group`` + ``finish_process_group``."""
    return finish_process_group(start_process_group(cmd, cwd, env), timeout, what)


def checkpoint_config(path: Path, monitor: str) -> Path:
    """A config whose only callback is base.yaml's checkpoint callback with another ``monitor``."""
    callback = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {
            "monitor": monitor,
            "mode": "max",
            "save_top_k": 1,
            "save_last": True,
            "filename": "best",
            "auto_insert_metric_name": False,
        },
    }
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": [callback]}}))
    return path


# -- parallel runs: ``make test`` is ``pytest -n <cores> --dist loadfile`` (pytest-xdist) -------------------------

HEAVY_FIRST = (
    "test_rehearsal.py",
    "test_ddp_validation.py",
    "test_demo_study.py",
    "test_benchmarks_smoke.py",
    "test_resume.py",
    "test_ddp.py",
    "test_ddp_exact.py",
    "test_metrics.py",
    "test_outcomes.py",
    "test_clear_errors.py",
    "test_remote_shards.py",
    "test_study_executors.py",
    "test_study_breaks.py",
    "test_divergence.py",
    "test_real_weights.py",
)
"""Test files queued first under pytest-xdist, longest first (``pytest --durations``): a long file that starts
last keeps one core busy while the others idle."""
SPLIT = (
    "test_ddp_validation.py",
    "test_benchmarks_smoke.py",
    "test_resume.py",
    "test_metrics.py",
    "test_outcomes.py",
    "test_clear_errors.py",
    "test_study_executors.py",
    "test_study_breaks.py",
    "test_demo_study.py",
    "test_run_protocol.py",
    "test_final_weights.py",
    "test_train_demo.py",
    "test_study.py",
    "test_iglue_start.py",
    "test_families_e2e.py",
    "test_checkpoint_size.py",
    "test_eval_integrity.py",
)
"""Files whose tests share no costly module-scoped fixture (at most a few shards, built once per worker): their
tests go to the workers one by one. Every other file goes to one worker whole, so that a module-scoped fixture
(a rehearsal, a 2-rank fit) is built once, as in a plain ``pytest``."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist: the files of ``HEAVY_FIRST`` first (the scheduler queues work in this order). A plain
    ``pytest`` keeps the file order."""
    if hasattr(config, "workerinput"):
        rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
        items.sort(key=lambda item: rank.get(Path(str(item.path)).name, len(rank)))


try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # pytest-xdist (the dev extra) not installed: plain pytest only
    LoadScopeScheduling = None
else:

    class FileScheduling(LoadScopeScheduling):
        """``--dist loadfile`` with the files of ``SPLIT`` sent test by test, in the collection order."""

        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return nodeid if Path(file).name in SPLIT else file

    @pytest.hookimpl(tryfirst=True, optionalhook=True)  # before xdist's own scheduler choice
    def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> LoadScopeScheduling | None:
        if config.getvalue("dist") != "loadfile":
            return None
        config.option.loadscopereorder = False  # keep HEAVY_FIRST's order, not "most tests first"
        return FileScheduling(config, log)
