"""Shared fixtures: a tiny random BERT (fast), the real bundled model (slow), the shared data folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_file(*parts: str) -> Path:
    """A file of ../shared/data, or skip the test with the reason when this clone has none."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"needs {path} (the shared evaluation data beside the checkout; absent in this clone)")
    return path


def write_st_folder(folder: Path, model, tokenizer, pooling: str = "mean", max_length: int = 128,
                    normalize: bool = True) -> Path:
    """Save a transformer as a sentence-transformers model folder."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": model.config.hidden_size,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": pooling == "max",
        "pooling_mode_mean_sqrt_len_tokens": False,
    }))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_length, "do_lower_case": False}))
    return folder


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test: the tiny model is fastest so, and CI machines are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """A private cache for the ONNX exports (never the user's ~/.cache), shared by the whole test session."""
    cache = tmp_path_factory.mktemp("semsearch-cache")
    before = os.environ.get("SEMSEARCH_CACHE")
    os.environ["SEMSEARCH_CACHE"] = str(cache)
    yield cache
    if before is None:
        os.environ.pop("SEMSEARCH_CACHE", None)
    else:
        os.environ["SEMSEARCH_CACHE"] = before


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer, 32-wide BERT with the real model's tokenizer, as an ST folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from semsearch.encoder import bundled_model_path

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(bundled_model_path()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    model = BertModel(config)
    return write_st_folder(tmp_path_factory.mktemp("tiny") / "tiny-bert", model, tokenizer)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir):
    from semsearch.encoder import Encoder

    return Encoder.load(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def real_encoder():
    """The bundled all-MiniLM-L6-v2."""
    from semsearch.encoder import Encoder

    return Encoder.load(device="cpu")


@pytest.fixture
def index_home(tmp_path, monkeypatch) -> Path:
    """A private indexes/ folder for the test."""
    home = tmp_path / "indexes"
    monkeypatch.setenv("SEMSEARCH_INDEXES", str(home))
    return home


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class FakeEncoder:
    """A deterministic stand-in for a model: each text's vector is seeded by its hash. Fast and exact."""

    def __init__(self, dimension: int = 16) -> None:
        from semsearch.encoder import EncoderSpec

        self.spec = EncoderSpec(model="fake", fingerprint="fake:1", dimension=dimension, max_length=64)
        self.tokenizer = None
        self.calls = 0

    @property
    def dimension(self) -> int:
        return self.spec.dimension

    def encode(self, texts, batch_size: int = 32, show_progress=None):
        import hashlib

        import numpy as np

        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        self.calls += len(texts)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            vector = np.random.default_rng(seed).normal(size=self.dimension)
            out[i] = vector / np.linalg.norm(vector)
        return out[0] if single else out


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    return FakeEncoder()


def run_cli(*args, code: int = 0):
    """``semsearch ARGS`` through click's runner (arguments made strings); asserts the exit code."""
    from click.testing import CliRunner

    from semsearch.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def json_rows(output: str) -> list[dict]:
    """The JSON objects of a ``--json`` output, one per line."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]
