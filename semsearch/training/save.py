"""Writing a trained encoder as a model folder that semsearch and sentence-transformers both load.

Layout of ``DIR/``::

    config.json, model.safetensors          the transformer (Hugging Face format)
    tokenizer.json, tokenizer_config.json   its tokenizer
    modules.json                            Transformer -> Pooling (-> Normalize), sentence-transformers' map
    1_Pooling/config.json                   the pooling mode
    2_Normalize/                            present when the encoder L2-normalises
    sentence_bert_config.json               max_seq_length, do_lower_case
    config_sentence_transformers.json       versions of the libraries that wrote it
    semsearch_training.json                 how it was trained: objective, settings, data, dev scores
    softmax_head/config.json, .safetensors  the classification objective's W, when trained with it

The head is not one of the encoder's modules: it changes no embedding, and both loaders ignore it. A folder
is written to a temporary sibling and renamed into place, so a crash never leaves a half-written model.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelError, SemsearchError

if TYPE_CHECKING:
    from ..encoder import Encoder
    from .losses import SoftmaxLoss

HEAD_DIR = "softmax_head"
TRAINING_RECORD = "semsearch_training.json"
_MODEL_MARKERS = ("config.json", "modules.json")


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour decides the saved weights and vectors."""
    from ..versions import package_versions

    return package_versions(("semsearch", "torch", "transformers", "tokenizers", "safetensors", "numpy"))


def _json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def check_output(path: str | os.PathLike) -> Path:
    """Refuse an output folder that holds something other than a model (it would be replaced)."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise SemsearchError(f"{path}: exists and is not a folder; choose another --output")
        if any(path.iterdir()) and not any((path / m).is_file() for m in _MODEL_MARKERS):
            raise SemsearchError(f"{path}: a folder that is not a model folder would be replaced; "
                                 "choose a new or empty --output")
    return path


def save_model(encoder: "Encoder", path: str | os.PathLike, *, head: "SoftmaxLoss | None" = None,
               record: dict | None = None) -> Path:
    """Write ``encoder`` (and the classification ``head``) as a model folder at ``path``, atomically.

    An existing model folder at ``path`` is replaced as a whole.
    """
    from safetensors.torch import save_file

    from ..encoder import model_fingerprint

    path = check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        spec = encoder.spec
        _save_transformer(encoder, tmp)
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if spec.normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
            (tmp / "2_Normalize").mkdir()
        _json(tmp / "modules.json", modules)
        _json(tmp / "1_Pooling" / "config.json", {
            "word_embedding_dimension": spec.dimension,
            "pooling_mode_cls_token": spec.pooling.value == "cls",
            "pooling_mode_mean_tokens": spec.pooling.value == "mean",
            "pooling_mode_max_tokens": spec.pooling.value == "max",
            "pooling_mode_mean_sqrt_len_tokens": False,
        })
        _json(tmp / "sentence_bert_config.json", {"max_seq_length": spec.max_length, "do_lower_case": spec.lower_case})
        versions = library_versions()
        _json(tmp / "config_sentence_transformers.json", {
            "__version__": {"semsearch": versions.get("semsearch", "unknown"),
                            "transformers": versions.get("transformers", "unknown"),
                            "pytorch": versions.get("torch", "unknown")},
            "model_type": "SentenceTransformer",
            "prompts": {},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        })
        fingerprint = model_fingerprint(tmp)
        if head is not None:
            head_dir = tmp / HEAD_DIR
            head_dir.mkdir()
            save_file({k: v.detach().float().cpu().contiguous() for k, v in head.state_dict().items()},
                      str(head_dir / "model.safetensors"))
            _json(head_dir / "config.json", {
                "objective": "classification",
                "features": "[u; v; |u-v|]",
                "normalized": bool(head.normalize),  # whether u and v are L2-normalised first
                "dimension": head.dimension,
                "num_labels": head.num_labels,
                "labels": list(head.labels),
                "encoder_fingerprint": fingerprint,
            })
        _json(tmp / TRAINING_RECORD, {"base_model": spec.model, "fingerprint": fingerprint,
                                      **(record or {}), "versions": versions})
        _swap(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _save_transformer(encoder: "Encoder", folder: Path) -> None:
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Writing model shards" bar is noise at every checkpoint
    try:
        encoder.model.save_pretrained(str(folder))
        encoder.tokenizer.save_pretrained(str(folder))
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()


def _swap(new: Path, path: Path) -> None:
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    if path.exists():
        os.replace(path, old)
    os.replace(new, path)
    shutil.rmtree(old, ignore_errors=True)


def load_head(model_dir: str | os.PathLike, encoder: "Encoder | None" = None) -> "SoftmaxLoss":
    """The softmax head saved beside the model in ``model_dir``; checked against ``encoder`` when given."""
    import torch
    from safetensors.torch import load_file

    from .losses import SoftmaxLoss

    folder = Path(model_dir) / HEAD_DIR
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{model_dir}: no softmax head ({HEAD_DIR}/) beside this model; "
                         "train one with: semsearch train DATA --objective classification --output DIR")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{config_file}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or not all(k in config for k in ("dimension", "num_labels", "labels")):
        raise ModelError(f"{config_file}: not a softmax head's configuration (dimension, num_labels, labels)")
    if encoder is not None:
        if config["dimension"] != encoder.dimension:
            raise ModelError(f"{folder}: head takes {config['dimension']}-d embeddings, the model gives {encoder.dimension}")
        if config.get("encoder_fingerprint") not in (None, encoder.spec.fingerprint):
            raise ModelError(f"{folder}: head was trained with other encoder weights than the model in {model_dir}")
    head = SoftmaxLoss(config["dimension"], config["num_labels"], config["labels"])
    head.normalize = bool(config.get("normalized", False))
    head.load_state_dict(load_file(str(folder / "model.safetensors")))
    head.eval()
    if encoder is not None:
        head.to(encoder.device)
    return head.to(torch.float32)
