"""Export a model's transformer to ONNX, check it against torch, and put it in the cache (needs torch).

Runs once per model fingerprint: on the first use of the onnx backend, or by ``semsearch model export``.
The graph is traced with ``torch.onnx.export`` from transformers' model (eager attention, dynamic batch and
length); then, on a probe batch, our tokenizer must give transformers' tokens and the graph with numpy
pooling the torch encoder's vectors, for every pooling, batched and one by one, within :data:`TOLERANCE`. Otherwise the export is refused with a
:class:`~semsearch.errors.ModelError`, and a ``refused.json`` tells ``backend="auto"`` to run torch.

Everything is written in a temporary sibling folder and renamed into place, so a reader sees a whole export
or none; two processes exporting at once both succeed and one of the two copies is kept.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .atomic import fsync_dir, fsync_file, write_json_atomic
from .errors import ModelError
from .onnx_backend import EXPORT_FILE, MODEL_FILE, OUTPUT_NAME, REFUSED_FILE, export_dir, open_session, read_export
from .tokenizer import FastTokenizer, pad_batch

TOLERANCE = 1e-5
OPSET = 17
PROBE = [
    "A man is playing a guitar.",
    "Dogs run.",
    "",
    "a",
    "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun.",
    "Ein Mann spielt Gitarre; der Hund schläft. 東京は雨です。 ¿Dónde está la biblioteca?",
    "UPPER case, digits 12345 and punctuation !?;:()[]{}",
]


@dataclass
class ExportReport:
    path: Path
    fingerprint: str
    max_diff: float | None  # None when an earlier export was reused
    seconds: float
    reused: bool


def export_model(name_or_path: str | os.PathLike | None = None, *, force: bool = False) -> ExportReport:
    """Export (or find in the cache) the ONNX graph of a model folder, the bundled default, or a hub id."""
    from .encoder import model_fingerprint, read_st_config, resolve_model

    folder = read_st_config(resolve_model(name_or_path)).transformer_dir
    fingerprint = model_fingerprint(folder)
    if not force and read_export(fingerprint) is not None:
        return ExportReport(export_dir(fingerprint) / MODEL_FILE, fingerprint, None, 0.0, True)
    return export_transformer(folder, fingerprint, force=force)


def export_transformer(folder: Path, fingerprint: str, *, force: bool = False) -> ExportReport:
    """Export the transformer in ``folder`` (whose weights have ``fingerprint``), verify it, cache it."""
    started = time.perf_counter()
    target = export_dir(fingerprint)
    work = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(target)
        work.mkdir()
    except OSError as exc:
        raise ModelError(f"{target.parent}: cannot write the ONNX cache ({exc.strerror or exc}); "
                         "set $SEMSEARCH_CACHE to a writable folder") from None
    try:
        try:
            record = _export_and_verify(folder, fingerprint, work)
        except ModelError as exc:
            _refuse(target, fingerprint, str(exc))
            raise
        except Exception as exc:  # the tracer's and onnxruntime's own errors, for architectures they cannot take
            message = f"{folder}: cannot export the transformer to ONNX ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
            _refuse(target, fingerprint, message)
            raise ModelError(message) from None
        record["seconds"] = round(time.perf_counter() - started, 2)
        try:
            write_json_atomic(work / EXPORT_FILE, record, unique_tmp=True)
            _install(work, target, force=force)
        except OSError as exc:
            raise ModelError(f"{target}: cannot write the export ({exc.strerror or exc})") from None
    finally:
        if work.exists():  # ours: made above under a unique name
            shutil.rmtree(work)
    return ExportReport(target / MODEL_FILE, fingerprint, record["max_diff"], time.perf_counter() - started, False)


def _export_and_verify(folder: Path, fingerprint: str, work: Path) -> dict:
    import warnings

    import torch

    from .encoder import Encoder

    reference = Encoder.load(folder, backend="transformers", device="cpu")  # the torch encoder it must match
    limit = min(reference.model.config.max_position_embeddings or 512, reference.tokenizer.model_max_length)
    model = _eager_model(folder)
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in _forward_parameters(model):
        names.append("token_type_ids")

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            return self.inner(**dict(zip(names, inputs))).last_hidden_state

    tokenizer = FastTokenizer(folder)
    ids, types = tokenizer.token_ids(PROBE[:2], limit)  # two lengths: the example has padding
    example = pad_batch(ids, types, range(len(ids)), tokenizer.pad_token_id)
    axes = {name: {0: "batch", 1: "length"} for name in names + [OUTPUT_NAME]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow it froze: the probe checks them
        torch.onnx.export(TokenEmbeddings(model).eval(), tuple(torch.from_numpy(example[n]) for n in names),
                          str(work / MODEL_FILE), input_names=names, output_names=[OUTPUT_NAME], dynamic_axes=axes,
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    fsync_file(work / MODEL_FILE)
    worst = _probe_difference(open_session(work / MODEL_FILE), tokenizer, reference, names, limit)
    if not worst <= TOLERANCE:
        raise ModelError(f"{folder}: the ONNX export differs from the torch encoder by {worst:.1e} on the probe "
                         f"batch (more than {TOLERANCE:.0e}); refused, this model runs on torch")
    return {
        "fingerprint": fingerprint,
        "source": str(folder),
        "model_type": model.config.model_type,
        "dimension": int(reference.model.config.hidden_size),
        "inputs": names,
        "output": OUTPUT_NAME,
        "opset": OPSET,
        "max_length": limit,
        "max_diff": worst,
        "bytes": (work / MODEL_FILE).stat().st_size,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }


def _probe_difference(session, tokenizer: FastTokenizer, reference, names: list[str], limit: int) -> float:
    """Largest difference between onnxruntime's and torch's sentence vectors on the probe, over all poolings.

    Both sides get the same padded batches: the probe sentences together (padding), the longest alone (it
    reaches the last position embedding) and two one by one; our tokens must equal transformers' tokenizer's.
    """
    import torch
    import torch.nn.functional as F

    from .pooling import Pooling, pool, pool_numpy
    from .similarity import normalise_rows

    probe = PROBE + [" ".join(["word"] * (limit + 8))]
    ids, types = tokenizer.token_ids(probe, limit)
    expected = reference.tokenizer(probe, truncation=True, max_length=limit)
    if ids != expected["input_ids"]:
        first = next(i for i, (a, b) in enumerate(zip(ids, expected["input_ids"])) if a != b)
        raise ModelError(f"tokenizer.json gives other tokens than transformers' tokenizer for {probe[first][:40]!r}")
    worst = 0.0
    for rows in (list(range(len(PROBE))), [len(probe) - 1], [0], [2]):
        batch = pad_batch(ids, types, rows, tokenizer.pad_token_id)
        ours = session.run([OUTPUT_NAME], {name: batch[name] for name in names})[0]
        with torch.inference_mode():
            theirs = reference.model(**{name: torch.from_numpy(batch[name]) for name in names}).last_hidden_state
        mask = torch.from_numpy(batch["attention_mask"])
        for mode in Pooling:
            a = normalise_rows(pool_numpy(mode, ours, batch["attention_mask"]))
            b = F.normalize(pool(mode, theirs, mask), p=2, dim=1).numpy()
            worst = max(worst, float(np.abs(a - b).max()))
    return worst


def _eager_model(folder: Path):
    """transformers' model with plain (eager) attention: the form the tracer and onnxruntime handle best."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        try:
            return AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()
        except (TypeError, ValueError):  # an architecture without the choice
            return AutoModel.from_pretrained(str(folder)).eval()
    finally:
        hf_logging.enable_progress_bar()


def _forward_parameters(model) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)


def _versions() -> dict[str, str]:
    from .versions import package_versions

    return package_versions(("semsearch", "torch", "transformers", "onnx", "onnxruntime", "tokenizers"))


# ---------------------------------------------------------------------------------------------- files
def _install(work: Path, target: Path, *, force: bool) -> None:
    """Rename the finished folder into place; an existing export is kept unless ``force`` replaces it."""
    fsync_dir(work)
    try:
        os.rename(work, target)
    except OSError:
        if read_export(_fingerprint_of(work)) is not None and not force:
            return  # another process finished the same export first: keep its copy (ours is removed)
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
        os.rename(target, old)  # a refused marker, a damaged copy, or a forced re-export
        os.rename(work, target)
        shutil.rmtree(old)
    fsync_dir(target.parent)


def _remove_abandoned(target: Path) -> None:
    """Remove the ``.<hex>.<pid>.<random>.tmp`` folders (named so by this module) of killed exports of the same
    fingerprint: those whose process is gone."""
    for leftover in target.parent.glob(f".{target.name}.*"):
        parts = leftover.name.split(".")
        if leftover.name.endswith(".tmp") and len(parts) == 5 and parts[2].isdigit() and not _alive(int(parts[2])):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fingerprint_of(work: Path) -> str:
    return json.loads((work / EXPORT_FILE).read_text())["fingerprint"]


def _refuse(target: Path, fingerprint: str, reason: str) -> None:
    """Leave ``refused.json`` so that ``backend="auto"`` stops trying (``semsearch model export`` tries again)."""
    if read_export(fingerprint) is not None:
        return  # a good export exists (another process): nothing to refuse
    try:
        target.mkdir(parents=True, exist_ok=True)
        write_json_atomic(target / REFUSED_FILE, {"fingerprint": fingerprint, "reason": reason,
                                            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                            "versions": _versions()}, unique_tmp=True)
    except OSError:
        pass  # best effort: without the note, the next run tries again
