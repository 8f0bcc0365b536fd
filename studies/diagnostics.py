"""Representation diagnostics of one checkpoint, computed once and stored in its run folder (``diagnostics.json``),
so the analysis never needs a checkpoint that retention has deleted.

For a start or intermediate run (the weights it hands on) and a target run (its tested checkpoint), on a probe
set of parallel items (the same ids in English and in every other language; ``analysis.probe``):

- en<->L sentence retrieval accuracy (Tatoeba-style, both directions) at the pooled representation: the text
  tower's last layer, mean-pooled over the tokens;
- linear CKA between the English and the L representations at every layer (embeddings = layer 0);
- image->text R@1 per language where the core has a retrieval path: its own aligned embeddings
  (``text_embedding``), or a retrieval head's projections in the checkpoint; among the probe's images and
  that language's captions.

For start and intermediate runs also the LogME score (studies.measures.logme) of the pooled features of each
target's English training items (its first training task with class labels; a forward pass, no training).

Everything here runs on the study runner's machine after a run finishes (``ensure``), on CPU by default.
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
import time
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from studies import measures
from studies.plan import Run, target_tasks
from studies.runs import finished
from studies.spec import Study

DIAGNOSTICS_FILE = "diagnostics.json"
VERSION = 1
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "img.jpg", "img0.jpg")
BATCH = 32


# ----------------------------------------------------------------------------------------------- which runs


def diagnosed_runs(runs: Sequence[Run]) -> list[Run]:
    """The runs whose checkpoints the analysis describes: start, intermediate and zero-shot target runs."""
    return [r for r in runs if r.phase in ("start", "intermediate", "target")]


def checkpoint_of(run: Run, runs: Sequence[Run]) -> str | None:
    """The checkpoint a run hands on (start/intermediate: what its children start from) or tests (target: its
    best, else its final); None when the run has not finished or the file is gone."""
    info = finished(run)
    if info is None:
        return None
    if run.phase == "target":
        keys = ["best_ckpt", "final_ckpt", "last_ckpt"]
    else:
        child = next((r for r in runs if r.parent is not None and r.parent.name == run.name), None)
        keys = [child.init_key if child else "final_ckpt", "final_ckpt", "last_ckpt"]
    for key in keys:
        ckpt = info.get(key)
        if ckpt:
            for path in (Path(ckpt), run.run_dir / ckpt):
                if path.is_file():
                    return str(path)
            return None  # named but deleted (retention): nothing to fall back on
    return None


def read(run: Run) -> dict[str, Any] | None:
    path = run.run_dir / DIAGNOSTICS_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data if data.get("version") == VERSION else None


def ensure(
    study: Study,
    runs: Sequence[Run],
    log: Any = print,
    force: bool = False,
    phases: Sequence[str] = ("start", "intermediate", "target"),
    only: Sequence[str] | None = None,
) -> list[str]:
    """Compute and store the diagnostics of every finished run that lacks them while its checkpoint exists
    (called before retention deletes checkpoints when ``analysis.enabled``, and by ``study.py analyze``
    (``force``)); ``only``: these run names (a SLURM job: its own run). Returns the runs done."""
    if not (study.analysis.enabled or force):
        return []
    done = []
    for run in diagnosed_runs(runs):
        if run.phase not in phases or (only is not None and run.name not in only):
            continue
        path = run.run_dir / DIAGNOSTICS_FILE
        if path.is_file() and (not force or read(run) is not None):  # after each run: no parsing of every file
            continue
        ckpt = checkpoint_of(run, runs)
        if ckpt is None:
            continue
        t0 = time.monotonic()
        data = compute(study, run, ckpt)
        tmp = run.run_dir / f".{DIAGNOSTICS_FILE}.tmp"
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(run.run_dir / DIAGNOSTICS_FILE)  # whole or absent: a reader never sees half a file
        done.append(run.name)
        log(f"    diagnostics of {run.name} ({time.monotonic() - t0:.1f}s): {run.run_dir / DIAGNOSTICS_FILE}")
    return done


# ----------------------------------------------------------------------------------------------- probe data


def _samples(shards: Path, split: str, lang: str | None = None) -> Iterator[dict[str, Any]]:
    """The samples of a split (optionally one language) of a shard directory: the json fields plus ``image``
    (the first image's bytes) and ``images`` (every image, by extension), in shard order."""
    manifest = json.loads((shards / "manifest.json").read_text())
    for entry in manifest["shards"]:
        if entry["split"] != split or (lang is not None and entry.get("lang") != lang):
            continue
        with tarfile.open(shards / entry["file"]) as tar:
            groups: dict[str, dict[str, bytes]] = {}
            order: list[str] = []
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")
                if key not in groups:
                    groups[key], order = {}, [*order, key]
                groups[key][ext] = tar.extractfile(member).read()
            for key in order:
                parts = groups[key]
                if "json" not in parts:
                    continue
                sample = json.loads(parts["json"])
                images = {e: b for e, b in parts.items() if e != "json"}
                sample["images"] = images
                sample["image"] = next((images[e] for e in IMAGE_KEYS if e in images), None)
                yield sample


def _text(sample: Mapping[str, Any]) -> str | None:
    if isinstance(sample.get("text"), str):
        return sample["text"]
    texts = sample.get("texts") or sample.get("captions")
    return texts[0] if texts else None


@cache
def probe_items(shards: str, split: str, limit: int) -> tuple[list[str], dict[str, list[str]], list[bytes | None]]:
    """(languages, texts per language, images) of up to ``limit`` items present in English and in every other
    language of the split, matched by id; languages with no item shared with English are left out."""
    root = Path(shards)
    manifest = json.loads((root / "manifest.json").read_text())
    langs = sorted(
        {e.get("lang") for e in manifest["shards"] if e["split"] == split and e.get("lang")},
        key=lambda lg: (lg != "en", lg),
    )
    by_lang: dict[str, dict[str, tuple[str, bytes | None]]] = {}
    for lang in langs:
        items = {}
        for s in _samples(root, split, lang):
            text, key = _text(s), str(s.get("id", s.get("image_id", "")))
            if text and key not in items:  # pictures are the same in every language: English's are kept
                items[key] = (text, s["image"] if lang == "en" else None)
        by_lang[lang] = items
    if "en" not in by_lang:
        return [], {}, []
    english = by_lang["en"]
    others = [lg for lg in langs if lg != "en" and set(by_lang[lg]) & set(english)]
    common = sorted(set(english).intersection(*(set(by_lang[lg]) for lg in others)))[:limit]
    kept = ["en", *others]
    return kept, {lg: [by_lang[lg][k][0] for k in common] for lg in kept}, [english[k][1] for k in common]


# ----------------------------------------------------------------------------------------------- the model


class Encoder:
    """A checkpoint's core (and retrieval projections, where it has them) in eval mode, with its tokenizer and
    image transform."""

    def __init__(self, ckpt: str) -> None:
        import timm
        import torch
        from transformers import AutoTokenizer

        from datamodules.pipeline import EvalImageTransform
        from lightning_modules.checkpoints import read_checkpoint
        from lightning_modules.core import EncoderCore

        self.torch = torch
        data = read_checkpoint(ckpt)
        core_args = dict(data["hyper_parameters"]["core"])
        self.text_model = core_args["text_model"]
        # every tensor comes from the checkpoint: the towers are built from their configs, no weights loaded
        # (module.CoreConfig.build's arguments; not imported: it would load Lightning into the study runner)
        with contextlib.redirect_stderr(io.StringIO()):  # its load report ("random towers"): not news here
            self.core = EncoderCore(
                core_args["text_model"],
                core_args.get("vision_model"),
                pretrained=False,
                fusion=core_args.get("fusion", "single_stream"),
                text_tower=core_args.get("text_tower"),
                text_drop=core_args.get("text_drop") or (),
                text_kwargs=core_args.get("text_kwargs"),
                vision_kwargs=core_args.get("vision_kwargs"),
                attn_implementation=core_args.get("attn_implementation", "sdpa"),
                text_embedding=core_args.get("text_embedding"),
            )
        state = data["state_dict"]
        self.core.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("core.")})
        # a GPU where the process has one (a SLURM job after its training); untested on GPU in this repository's
        # CI, which has none: CPU is what the tests and the demo run
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.core.to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(core_args["text_model"])
        self.max_length = 64
        self.transform = None
        if self.core.vision is not None:
            self.transform = EvalImageTransform(timm.data.resolve_model_data_config(self.core.vision))
        self.projections = None  # (text W, b, image W, b) of a retrieval head
        for key in state:
            if key.startswith("heads.") and key.endswith(".text_proj.weight"):
                head = key[: -len("text_proj.weight")]
                if f"{head}image_proj.weight" in state:
                    self.projections = tuple(
                        state[f"{head}{name}"].float().to(self.device)
                        for name in ("text_proj.weight", "text_proj.bias", "image_proj.weight", "image_proj.bias")
                    )
                    break

    @property
    def has_retrieval(self) -> bool:
        return self.core.vision is not None and (self.core.own_embeddings or self.projections is not None)

    def _tokens(self, texts: Sequence[str]) -> dict[str, Any]:
        tok = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: tok[k].to(self.device) for k in ("input_ids", "attention_mask")}

    def _pixels(self, images: Sequence[bytes]) -> Any:
        return self.torch.stack([self.transform.from_bytes(b) for b in images]).to(self.device)  # (B, 3, H, W) uint8

    def text_layers(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Mean-pooled text-tower states of every layer (0 = embeddings): a list of (n, D)."""
        out: list[list[np.ndarray]] = []
        with self.torch.no_grad():
            for i in range(0, len(texts), BATCH):
                tok = self._tokens(texts[i : i + BATCH])
                hidden = self.core.text(
                    input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], output_hidden_states=True
                ).hidden_states
                mask = tok["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
                pooled = [((h * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy() for h in hidden]
                out = [[p] for p in pooled] if not out else [o + [p] for o, p in zip(out, pooled)]
        return [np.concatenate(o) for o in out]

    def _project(self, x: Any, weight: Any, bias: Any) -> Any:
        return x @ weight.T + bias

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """Text embeddings in the retrieval space."""
        out = []
        with self.torch.no_grad():
            for i in range(0, len(texts), BATCH):
                tok = self._tokens(texts[i : i + BATCH])
                t = self.core.embed_text(tok["input_ids"], tok["attention_mask"])
                if not self.core.own_embeddings:
                    t = self._project(t, self.projections[0], self.projections[1])
                out.append(t.float().cpu().numpy())
        return np.concatenate(out)

    def image_embeddings(self, images: Sequence[bytes]) -> np.ndarray:
        """Image embeddings in the retrieval space."""
        out = []
        with self.torch.no_grad():
            for i in range(0, len(images), BATCH):
                im = self.core.embed_image(self._pixels(images[i : i + BATCH]))
                if not self.core.own_embeddings:
                    im = self._project(im, self.projections[2], self.projections[3])
                out.append(im.float().cpu().numpy())
        return np.concatenate(out)

    def features(self, samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The pooled core vector of each sample as its task family feeds it (text, text + image, text + two
        images: the two pooled vectors concatenated)."""
        out = []
        with self.torch.no_grad():
            for i in range(0, len(samples), BATCH):
                batch = samples[i : i + BATCH]
                tok = self._tokens([_text(s) or "" for s in batch])
                pairs = [s["images"] for s in batch]
                if self.core.vision is not None and all("img0.jpg" in p and "img1.jpg" in p for p in pairs):
                    px = self.torch.stack([self._pixels([p["img0.jpg"], p["img1.jpg"]]) for p in pairs])
                    vec = self.core.encode_pair(tok["input_ids"], tok["attention_mask"], px).flatten(1)
                elif self.core.vision is not None and all(s["image"] is not None for s in batch):
                    vec = self.core.encode(
                        tok["input_ids"], tok["attention_mask"], self._pixels([s["image"] for s in batch])
                    ).pooled
                else:
                    vec = self.core.encode(tok["input_ids"], tok["attention_mask"]).pooled
                out.append(vec.float().cpu().numpy())
        return np.concatenate(out)


# ----------------------------------------------------------------------------------------------- measures


def alignment(
    encoder: Encoder, langs: Sequence[str], texts: Mapping[str, list[str]], images: Sequence[bytes | None]
) -> dict[str, dict[str, Any]]:
    """Per language: retrieval accuracy both ways, CKA per layer, image->text R@1 (None without a path)."""
    layers = {lang: encoder.text_layers(texts[lang]) for lang in langs}
    with_images = encoder.has_retrieval and all(b is not None for b in images) and len(images) > 0
    image_emb = encoder.image_embeddings(images) if with_images else None  # type: ignore[arg-type]
    out: dict[str, dict[str, Any]] = {}
    for lang in langs:
        en, other = layers["en"], layers[lang]
        row: dict[str, Any] = {"items": len(texts[lang])}
        if lang != "en":
            row["retrieval_en_to_l"] = measures.retrieval_accuracy(en[-1], other[-1])
            row["retrieval_l_to_en"] = measures.retrieval_accuracy(other[-1], en[-1])
            row["cka"] = [measures.linear_cka(a, b) for a, b in zip(en, other)]
        row["image_text_r1"] = None
        if image_emb is not None:
            row["image_text_r1"] = measures.retrieval_accuracy(image_emb, encoder.text_embeddings(texts[lang]))
        out[lang] = row
    return out


def _labels(samples: Sequence[Mapping[str, Any]]) -> list[Any] | None:
    """Class labels of training samples: ``label`` (int, bool or string) or a VQA sample's best answer."""
    out = []
    for s in samples:
        if s.get("label") is not None and not isinstance(s.get("label"), list):
            out.append(str(s["label"]))
        elif s.get("labels"):
            scores = s.get("scores") or [1.0] * len(s["labels"])
            out.append(str(s["labels"][int(np.argmax(scores))]))
        else:
            return None
    return out


def logme_scores(study: Study, encoder: Encoder, limit: int) -> dict[str, dict[str, Any]]:
    """LogME of the checkpoint's pooled features on each target's English training items."""
    from studies.plan import plan

    out: dict[str, dict[str, Any]] = {}
    target_runs = {r.target: r for r in plan(study) if r.phase == "target"}
    for name, target in study.targets.items():
        run = target_runs.get(name)
        entry = _training_task(study, run, target.train_tasks) if run else None
        if entry is None:
            out[name] = {"skipped": "no English training task with shards in its config"}
            continue
        samples = _training_samples(entry["shards"], entry["train_split"], limit)
        labels = _labels(samples)
        if not samples or labels is None or len(set(labels)) < 2:
            out[name] = {"task": entry["name"], "skipped": "its training items have no class labels (retrieval?)"}
            continue
        feats = encoder.features(samples)
        codes = {c: i for i, c in enumerate(sorted(set(labels)))}
        out[name] = {
            "task": entry["name"],
            "items": len(samples),
            "classes": len(codes),
            "logme": measures.logme(feats, [codes[c] for c in labels]),
        }
    return out


@cache
def _training_samples(shards: str, split: str, limit: int) -> list[dict[str, Any]]:
    samples = []
    for s in _samples(Path(shards), split, "en"):
        samples.append(s)
        if len(samples) >= limit:
            break
    return samples


def _training_task(study: Study, run: Run, train_tasks: Sequence[str]) -> dict[str, Any] | None:
    for entry in target_tasks(study, run):
        if entry.get("name") in train_tasks and entry.get("train_split") and entry.get("shards"):
            if (Path(entry["shards"]) / "manifest.json").is_file():
                return entry
    return None


def probe_set(study: Study) -> tuple[str, str] | None:
    """(shard directory, split) of the diagnostics' parallel items: ``analysis.probe``, else the first target's
    test task; None when neither exists on disk."""
    from studies.plan import plan

    if study.analysis.probe:
        candidates = [(study.analysis.probe, study.analysis.probe_split)]
    else:
        candidates = []
        for run in plan(study):
            if run.phase == "target":
                candidates += [
                    (e["shards"], e.get("test_split") or "test")
                    for e in target_tasks(study, run)
                    if e.get("shards") and e.get("test_split")
                ]
    return next(((s, split) for s, split in candidates if (Path(s) / "manifest.json").is_file()), None)


def compute(study: Study, run: Run, ckpt: str) -> dict[str, Any]:
    """The diagnostics of one checkpoint (see the module docstring)."""
    spec = study.analysis
    encoder = Encoder(ckpt)
    data: dict[str, Any] = {
        "version": VERSION,
        "run": run.name,
        "phase": run.phase,
        "condition": run.condition,
        "seed": run.seed,
        "checkpoint": ckpt,
        "text_model": encoder.text_model,
    }
    probe = probe_set(study)
    if probe is None:
        data["alignment"], data["probe"] = {}, None
    else:
        langs, texts, images = probe_items(probe[0], probe[1], spec.probe_items)
        data["probe"] = {"shards": probe[0], "split": probe[1], "items": len(images), "langs": langs}
        data["alignment"] = alignment(encoder, langs, texts, images) if len(images) >= 2 else {}
    if run.phase in ("start", "intermediate"):
        data["logme"] = logme_scores(study, encoder, spec.logme_items)
    return data
