"""GPU benchmark: training samples/s and model-FLOPs utilisation (MFU) of the real base and large configs
(``configs/models/xlmr_{base,large}_vit_b16.yaml``) in bf16-mixed, with and without ``torch.compile``.

Real shapes, random init, nothing downloads: the text tower is an ``XLMRobertaConfig`` with the published
dimensions of the model the YAML names (vocabulary 250002; base 768 × 12 layers, large 1024 × 24), the
vision tower the YAML's timm model built with ``pretrained=False`` (ViT-B/16, 224 px: 197 image tokens).
Batches are ``data.batch_size`` (32) samples of ``data.max_length`` (128) text tokens + one image, run
through the Lightning Trainer as in real runs (fused AdamW on CUDA, gradient clipping, logging).

Model FLOPs per step are counted once with ``torch.utils.flop_counter.FlopCounterMode`` over a forward and
backward pass (matmuls and attention; no recomputation counted). MFU = FLOPs/step × steps/s ÷ peak, with
the dense bf16 peak of the card: H100 SXM and H200 both 989 TFLOP/s (NVIDIA datasheets; the 1979 figure
assumes 2:4 sparsity). Other cards: set ``MMSTILTS_PEAK_TFLOPS`` or MFU is not reported. Without CUDA the
benchmark prints "no CUDA device: skipped".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode
from transformers import XLMRobertaConfig

from benchmarks.common import table
from benchmarks.step import _median, build_module, lightning_steps, make_batches

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"base": "configs/models/xlmr_base_vit_b16.yaml", "large": "configs/models/xlmr_large_vit_b16.yaml"}
# Published dimensions of the text models the YAMLs name (their config.json on the Hugging Face hub).
TEXT_SHAPES = {
    "xlm-roberta-base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    "xlm-roberta-large": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
    },
}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense bf16, SXM
BATCH, TOKENS, IMAGE = 32, 128, 224


def real_config(name: str) -> tuple[str, str]:
    """(text model name, timm vision model name) of ``configs/models/<...>.yaml``."""
    core = yaml.safe_load((REPO / CONFIGS[name]).read_text())["model"]["core"]
    return core["text_model"], core["vision_model"]


def write_text_config(root: Path, text_model: str, **overrides: int) -> str:
    if text_model not in TEXT_SHAPES:
        raise ValueError(f"benchmarks.gpu knows the shapes of {sorted(TEXT_SHAPES)}, not {text_model!r}")
    out = root / text_model
    shape = {**TEXT_SHAPES[text_model], **overrides}
    XLMRobertaConfig(
        vocab_size=250002,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        **shape,
    ).save_pretrained(out)
    return str(out)


def peak_tflops(device_name: str) -> float | None:
    if os.environ.get("MMSTILTS_PEAK_TFLOPS"):
        return float(os.environ["MMSTILTS_PEAK_TFLOPS"])
    return next((v for k, v in PEAK_TFLOPS.items() if k in device_name), None)


def step_flops(module: torch.nn.Module, batch: dict[str, Any], device: torch.device, dtype: torch.dtype) -> int:
    """Model FLOPs of one forward + backward pass (counted on the eager module, before any compile)."""
    moved = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    module.to(device)
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(device.type, dtype=dtype):
        module(moved).loss.backward()
    module.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def measure(
    text_dir: str,
    vision_model: str,
    root: Path,
    *,
    compile: bool,
    accelerator: str = "gpu",
    precision: str = "bf16-mixed",
    batch: int = BATCH,
    tokens: int = TOKENS,
    image: int = IMAGE,
    warmup: int = 3,
    timed: int = 10,
    compile_backend: str | None = None,
) -> dict[str, Any]:
    """``compile_backend``: compile the core with this torch.compile backend instead of ``model.core.compile``'s
    default (inductor); the dry run uses ``eager`` (dynamo tracing without code generation)."""
    batches = make_batches({"batch": batch, "tokens": tokens, "image": image}, warmup + timed + 1)
    module = build_module(text_dir, vision_model, len(batches), compile=compile and compile_backend is None)
    if compile and compile_backend is not None:
        module.core.compile(backend=compile_backend)
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    flops = step_flops(module, batches[0], device, torch.bfloat16)
    steps = lightning_steps(module, batches, warmup, root, accelerator=accelerator, precision=precision)
    step_s = _median([wall for wall, _ in steps])
    params = sum(p.numel() for p in module.parameters())
    return {
        "params_m": params / 1e6,
        "step_ms": step_s * 1e3,
        "samples_s": batch / step_s,
        "tflops": flops / step_s / 1e12,
        "flops_per_step": flops,
    }


def run(quick: bool = False) -> dict[str, Any]:
    if not torch.cuda.is_available():
        print("\nGPU: no CUDA device: skipped")
        return {"skipped": "no CUDA device"}
    card = torch.cuda.get_device_name()
    peak = peak_tflops(card)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("base",) if quick else ("base", "large"):
            text_model, vision_model = real_config(name)
            text_dir = write_text_config(Path(tmp), text_model)
            for compile in (False, True):
                fig = measure(
                    text_dir, vision_model, Path(tmp) / f"{name}-{compile}", compile=compile, timed=5 if quick else 10
                )
                fig.update(config=name, compile=compile, mfu=fig["tflops"] / peak if peak else None)
                rows.append(fig)
                torch.cuda.empty_cache()
    print(
        table(
            f"GPU: {card}, bf16-mixed, batch {BATCH} x ({TOKENS} text + 197 image tokens), Lightning Trainer; "
            f"MFU against {peak or '?'} TFLOP/s dense bf16",
            ["config", "params (M)", "torch.compile", "ms / step", "samples/s", "model TFLOP/s", "MFU"],
            [
                [
                    r["config"],
                    r["params_m"],
                    r["compile"],
                    r["step_ms"],
                    r["samples_s"],
                    r["tflops"],
                    f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a",
                ]
                for r in rows
            ],
        )
    )
    return {"card": card, "peak_tflops": peak, "rows": rows}


# -- the prepared GPU run (``make bench-gpu``) ----------------------------------------------------------------
TINY_TEXT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
TINY_VISION = {
    "model_name": "vit_tiny_patch16_224",
    "kwargs": {"img_size": 32, "embed_dim": 32, "depth": 1, "num_heads": 2},
}
TINY = {"batch": 2, "tokens": 8, "image": 32}


# Order of the plan: the costliest (compiling the large core) last, so a slow compile cannot crowd out the rest.
PLAN = (("base", False), ("base", True), ("large", False), ("ddp", None), ("large", True))


def gpu_run(dry_run: bool = False, budget_s: float = 330) -> dict[str, Any]:
    """bf16 samples/s and MFU of base and large ± compile, and a 2-process DDP step on the one device.

    A step of the plan that would start after ``budget_s`` seconds is skipped and recorded as such (the
    loader scaling after it must fit in the 8 minutes too). ``dry_run``: the same plan on the CPU with tiny
    shapes (compile with the ``eager`` backend, DDP over gloo), to rehearse it where there is no GPU; its
    figures mean nothing.
    """
    if not dry_run and not torch.cuda.is_available():
        raise SystemExit("--gpu-run needs a CUDA device; add --dry-run to rehearse the plan on the CPU")
    card = torch.cuda.get_device_name() if not dry_run else "cpu (dry run)"
    peak = peak_tflops(card) if not dry_run else None
    rows: list[dict[str, Any]] = []
    ddp: dict[str, Any] = {"skipped": "time budget"}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        vision = {name: _tiny_vision(root) if dry_run else real_config(name)[1] for name in CONFIGS}
        text = {
            name: write_text_config(root / name, real_config(name)[0], **(TINY_TEXT if dry_run else {}))
            for name in CONFIGS
        }
        for name, compile in PLAN:
            if time.perf_counter() - start > budget_s:
                print(f"gpu-run: {name} compile={compile} skipped: past the {budget_s:.0f} s budget", flush=True)
                rows += [] if compile is None else [{"config": name, "compile": compile, "skipped": "time budget"}]
                continue
            if compile is None:
                ddp = ddp_step(text["base"], vision["base"], root, dry_run)
                continue
            kwargs: dict[str, Any] = (
                dict(accelerator="cpu", compile_backend="eager", warmup=1, timed=2, **TINY) if dry_run else {}
            )
            fig = measure(text[name], vision[name], root / f"{name}-{compile}", compile=compile, **kwargs)
            fig.update(config=name, compile=compile, mfu=fig["tflops"] / peak if peak else None)
            rows.append(fig)
            print(f"gpu-run: {name}, compile={compile}: {fig['samples_s']:.1f} samples/s", flush=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    done = [r for r in rows if "skipped" not in r]
    print(
        table(
            f"GPU run: {card}, bf16, batch {TINY['batch'] if dry_run else BATCH}; MFU against {peak or '?'} TFLOP/s",
            ["config", "params (M)", "torch.compile", "ms / step", "samples/s", "model TFLOP/s", "MFU"],
            [
                [
                    r["config"],
                    r["params_m"],
                    r["compile"],
                    r["step_ms"],
                    r["samples_s"],
                    r["tflops"],
                    f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a",
                ]
                for r in done
            ],
        )
    )
    print(
        f"DDP step, 2 processes on one device: backend {ddp.get('backend')}, {ddp.get('samples_s', 0):.1f} "
        f"samples/s, weights equal on both ranks: {ddp.get('weights_equal')}; attempts {ddp.get('attempts')}"
    )
    return {"card": card, "peak_tflops": peak, "dry_run": dry_run, "rows": rows, "ddp": ddp}


def _tiny_vision(root: Path) -> str:
    path = root / "vision.json"
    path.write_text(json.dumps(TINY_VISION))
    return str(path)


def run_group(cmd: list[str], env: dict[str, str], timeout_s: float) -> tuple[bool, str]:
    """Run ``cmd`` in its own process group; on timeout kill the whole group (torchrun and its ranks).
    Returns (exit status 0, the last 2000 characters of its output)."""
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return False, f"timed out after {timeout_s:.0f} s: {output[-1800:]}"
    return proc.returncode == 0, output[-2000:]


def ddp_step(text_dir: str, vision: str, root: Path, dry_run: bool, timeout_s: float = 120) -> dict[str, Any]:
    """torchrun 2 processes of ``benchmarks.ddp_step`` on the one device: NCCL first (it may refuse two ranks
    on one card), gloo when NCCL fails; every attempt's outcome is kept in the result."""
    attempts = []
    for backend in ("gloo",) if dry_run else ("nccl", "gloo"):
        out = root / f"ddp-{backend}.json"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "benchmarks.ddp_step",
            "--backend",
            backend,
            "--text",
            text_dir,
            "--vision",
            vision,
            "--out",
            str(out),
        ]
        if dry_run:
            cmd += ["--device", "cpu", "--warmup", "1", "--timed", "2", *(f"--{k}={v}" for k, v in TINY.items())]
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        ok, tail = run_group(cmd, env, timeout_s)
        ok = ok and out.exists()
        attempts.append({"backend": backend, "ok": ok, **({} if ok else {"error_tail": tail})})
        if ok:
            return {**json.loads(out.read_text()), "attempts": attempts}
    return {"attempts": attempts}


if __name__ == "__main__":
    run()
