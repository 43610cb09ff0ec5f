"""The onnxruntime backend: parity with torch, the export cache, refusal, threads, and a torch-free query."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from semsearch.encoder import BackendFallbackWarning, Encoder, set_default_backend
from semsearch.errors import ModelError, SemsearchError
from semsearch.onnx_backend import OnnxEncoder, export_dir, export_refused, read_export
from semsearch.pooling import Pooling, pool, pool_numpy
from semsearch.similarity import normalise_rows

from .conftest import shared_file, write_st_folder

SENTENCES = ["A man is playing a guitar.", "Dogs run.", "", "The quick brown fox jumps over the lazy dog " * 3,
             "Ein Mann spielt Gitarre.", "a", "word " * 200]


@pytest.fixture
def private_cache(tmp_path, monkeypatch) -> Path:
    """An empty export cache for one test (the session's shared one is left alone)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SEMSEARCH_CACHE", str(cache))
    return cache


@pytest.fixture
def tiny_onnx(tiny_model_dir) -> OnnxEncoder:
    return Encoder.load(tiny_model_dir, backend="onnx")


def leftovers(cache: Path) -> list[str]:
    """Temporary files or folders an export left behind (there must be none)."""
    return [p.name for p in (cache / "onnx").iterdir() if p.name.startswith(".")] if (cache / "onnx").exists() else []


# ---------------------------------------------------------------------------------------------- parity
@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4), mode=st.sampled_from(list(Pooling)),
       seed=st.integers(0, 2**16))
def test_numpy_pooling_equals_torch_pooling(lengths, mode, seed):
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    width = max(lengths) + 2
    tokens = (rng.standard_normal((len(lengths), width, 5)) * 3).astype(np.float32)
    mask = np.array([[1] * n + [0] * (width - n) for n in lengths], dtype=np.int64)
    ours = normalise_rows(pool_numpy(mode, tokens, mask))
    theirs = F.normalize(pool(mode, torch.from_numpy(tokens), torch.from_numpy(mask)), p=2, dim=1).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert np.array_equal(normalise_rows(np.zeros((1, 3), np.float32)), np.zeros((1, 3)))  # zero stays zero


@pytest.mark.parametrize("pooling", ["mean", "max", "cls"])
def test_onnx_encoder_equals_torch_on_the_tiny_bert(tmp_path, tiny_encoder, pooling):
    folder = write_st_folder(tmp_path / pooling, tiny_encoder.model, tiny_encoder.tokenizer, pooling=pooling,
                             max_length=16)
    ours = Encoder.load(folder, backend="onnx")
    reference = Encoder.load(folder, backend="transformers", device="cpu")
    assert isinstance(ours, OnnxEncoder) and ours.backend == "onnx"
    assert ours.spec == reference.spec  # one index serves both backends
    assert ours.tokenizer.token_ids(SENTENCES, 16)[0] == reference._token_ids(SENTENCES)["input_ids"]
    for batch_size in (1, 3, 32):
        np.testing.assert_allclose(ours.encode(SENTENCES, batch_size=batch_size),
                                   reference.encode(SENTENCES, batch_size=batch_size), atol=1e-5)
    single = ours.encode("Dogs run.")
    assert single.shape == (ours.dimension,) and single.dtype == np.float32
    np.testing.assert_allclose(single, reference.encode("Dogs run."), atol=1e-5)
    assert ours.encode([]).shape == (0, ours.dimension)


def test_options_and_casing_follow_the_spec(tmp_path, tiny_encoder, tiny_onnx):
    reference = tiny_encoder
    for options in ({"pooling": "cls"}, {"max_length": 5}, {"normalize": False}):
        np.testing.assert_allclose(tiny_onnx.with_options(**options).encode(SENTENCES),
                                   reference.with_options(**options).encode(SENTENCES), atol=1e-5)
    assert isinstance(tiny_onnx.with_options(pooling="max"), OnnxEncoder)
    folder = write_st_folder(tmp_path / "lower", tiny_encoder.model, tiny_encoder.tokenizer)
    config = json.loads((folder / "sentence_bert_config.json").read_text())
    (folder / "sentence_bert_config.json").write_text(json.dumps({**config, "do_lower_case": True}))
    lower = Encoder.load(folder, backend="onnx")
    assert lower.spec.lower_case
    np.testing.assert_array_equal(lower.encode(["MiXeD Case"]), lower.encode(["mixed case"]))


def test_onnx_encoder_cannot_train(tiny_onnx, tmp_path):
    from semsearch.training import TrainConfig, train_model

    with pytest.raises(ModelError, match="the onnx backend is for inference"):
        tiny_onnx.forward(tiny_onnx.tokenize(["a"]))
    scores = tmp_path / "sts.csv"
    scores.write_text("a cat,a dog,0.5\nrain,sun,0.1\n")
    with pytest.raises(SemsearchError, match="inference-only backend"):
        train_model(scores, tmp_path / "out", objective="regression", encoder=tiny_onnx,
                    config=TrainConfig(epochs=1), progress=False)


# ---------------------------------------------------------------------------------------------- choosing
def test_auto_picks_onnx_for_fp32_and_torch_otherwise(tiny_model_dir, monkeypatch):
    monkeypatch.delenv("SEMSEARCH_BACKEND", raising=False)
    assert Encoder.load(tiny_model_dir, backend="auto", device="cpu").backend == "onnx"
    assert Encoder.load(tiny_model_dir, backend="auto", device="cpu", precision="bf16").backend == "lean"
    assert Encoder.load(tiny_model_dir, backend="torch", device="cpu").backend == "lean"
    assert Encoder.load(tiny_model_dir).backend == "transformers"  # the default: trainable
    with pytest.raises(ModelError, match="the onnx backend computes in fp32 only, not bf16"):
        Encoder.load(tiny_model_dir, backend="onnx", precision="bf16")
    with pytest.raises(ModelError, match="runs on the CPU, not cuda"):
        Encoder.load(tiny_model_dir, backend="onnx", device="cuda")
    with pytest.raises(ModelError, match="unknown backend 'tpu'"):
        Encoder.load(tiny_model_dir, backend="tpu")

    previous = set_default_backend("torch")
    try:
        assert Encoder.load(tiny_model_dir, backend="auto", device="cpu").backend == "lean"
        spec = Encoder.load(tiny_model_dir, backend="onnx").spec
        assert Encoder.from_spec(spec, device="cpu").backend == "lean"  # what the index code calls
    finally:
        set_default_backend(previous)
    monkeypatch.setenv("SEMSEARCH_BACKEND", "torch")
    assert Encoder.load(tiny_model_dir, backend="auto", device="cpu").backend == "lean"
    monkeypatch.setenv("SEMSEARCH_BACKEND", "gpu")
    with pytest.raises(ModelError, match=r"\$SEMSEARCH_BACKEND='gpu'"):
        Encoder.load(tiny_model_dir, backend="auto", device="cpu")


# ---------------------------------------------------------------------------------------------- the cache
def test_export_is_cached_keyed_by_fingerprint_and_reused(tiny_model_dir, private_cache, monkeypatch):
    from semsearch import onnx_export

    first = Encoder.load(tiny_model_dir, backend="onnx")
    folder = export_dir(first.spec.fingerprint)
    assert folder.parent == private_cache / "onnx" and folder.name == first.spec.fingerprint.split(":")[1]
    assert sorted(p.name for p in folder.iterdir()) == ["export.json", "model.onnx"]
    record = read_export(first.spec.fingerprint)
    assert record["fingerprint"] == first.spec.fingerprint and record["max_diff"] <= 1e-5
    assert record["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert leftovers(private_cache) == []

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds the graph")

    monkeypatch.setattr(onnx_export, "export_transformer", no_export)
    again = Encoder.load(tiny_model_dir, backend="onnx")
    np.testing.assert_array_equal(again.encode(SENTENCES), first.encode(SENTENCES))


def test_a_second_export_keeps_the_first_and_leaves_nothing_behind(tiny_model_dir, private_cache):
    from semsearch.onnx_export import export_model, export_transformer

    report = export_model(tiny_model_dir)
    assert not report.reused and report.max_diff <= 1e-5
    created = read_export(report.fingerprint)["created"]
    before = report.path.stat().st_mtime_ns
    export_transformer(tiny_model_dir, report.fingerprint)  # as a second process racing the first would
    assert report.path.stat().st_mtime_ns == before and read_export(report.fingerprint)["created"] == created
    assert export_model(tiny_model_dir).reused
    assert leftovers(private_cache) == []


def test_a_killed_exports_leftover_is_removed_by_the_next(tiny_model_dir, private_cache):
    from semsearch.onnx_export import export_model

    fingerprint = Encoder.load(tiny_model_dir).spec.fingerprint
    folder = export_dir(fingerprint)
    folder.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = folder.parent / f".{folder.name}.{dead.stdout.strip()}.0123abcd.tmp"
    alive = folder.parent / f".{folder.name}.{os.getpid()}.4567cdef.tmp"  # a live process's: not touched
    for path in (abandoned, alive):
        path.mkdir()
        (path / "model.onnx").write_bytes(b"half")
    export_model(tiny_model_dir)
    assert not abandoned.exists() and (alive / "model.onnx").read_bytes() == b"half"


def test_damaged_graph_is_a_clear_error(tiny_model_dir, private_cache):
    spec = Encoder.load(tiny_model_dir, backend="onnx").spec
    model = export_dir(spec.fingerprint) / "model.onnx"
    model.write_bytes(b"\0" * model.stat().st_size)  # same size: the record still matches
    with pytest.raises(ModelError, match=r"model.onnx: onnxruntime cannot load it .*semsearch model export --force"):
        Encoder.load(tiny_model_dir, backend="onnx")
    result = CliRunner().invoke(_main(), ["model", "export", "--model", str(tiny_model_dir), "--force"])
    assert result.exit_code == 0, result.output
    assert "exported in" in result.output
    Encoder.load(tiny_model_dir, backend="onnx").encode(["works again"])
    assert leftovers(private_cache) == []


def test_export_refused_when_the_probe_differs(tiny_model_dir, private_cache, monkeypatch):
    """An export whose vectors differ from torch is refused: explicit onnx fails, auto falls back to torch."""
    from semsearch import onnx_export

    real_open = onnx_export.open_session

    class Skewed:  # a graph that computes something slightly different
        def __init__(self, session):
            self.session = session

        def run(self, outputs, feed):
            return [self.session.run(outputs, feed)[0] + 1e-3]

    monkeypatch.setattr(onnx_export, "open_session", lambda path: Skewed(real_open(path)))
    with pytest.raises(ModelError, match=r"the ONNX export differs from the torch encoder by \d\.\de-0[34] .* refused"):
        Encoder.load(tiny_model_dir, backend="onnx")
    fingerprint = Encoder.load(tiny_model_dir).spec.fingerprint
    assert export_refused(fingerprint) and read_export(fingerprint) is None
    assert sorted(p.name for p in export_dir(fingerprint).iterdir()) == ["refused.json"]
    assert "differs from the torch encoder" in json.loads((export_dir(fingerprint) / "refused.json").read_text())["reason"]
    assert leftovers(private_cache) == []

    fallback = Encoder.load(tiny_model_dir, backend="auto", device="cpu")  # refused: straight to torch
    assert fallback.backend == "lean"
    monkeypatch.setattr(onnx_export, "open_session", real_open)
    result = CliRunner().invoke(_main(), ["model", "export", "--model", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output  # the command tries again, and replaces the refusal
    assert not export_refused(fingerprint)
    assert Encoder.load(tiny_model_dir, backend="auto", device="cpu").backend == "onnx"


def test_auto_warns_and_runs_torch_when_the_export_fails(tiny_model_dir, private_cache, monkeypatch):
    from semsearch import onnx_export

    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported: some operator")

    monkeypatch.setattr(onnx_export, "_eager_model", broken)
    with pytest.warns(BackendFallbackWarning, match=r"cannot export the transformer to ONNX \(RuntimeError: Unsupported"):
        encoder = Encoder.load(tiny_model_dir, backend="auto", device="cpu")
    assert encoder.backend == "lean"
    result = CliRunner().invoke(_main(), ["model", "export", "--model", str(tiny_model_dir)])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "Traceback" not in result.output


def test_an_unwritable_cache_is_a_clear_error_and_auto_runs_torch(tiny_model_dir, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("SEMSEARCH_CACHE", str(blocker))
    with pytest.raises(ModelError, match=r"not-a-folder/onnx: cannot write the ONNX cache .*set \$SEMSEARCH_CACHE"):
        Encoder.load(tiny_model_dir, backend="onnx")
    with pytest.warns(BackendFallbackWarning, match="cannot write the ONNX cache"):
        assert Encoder.load(tiny_model_dir, backend="auto", device="cpu").backend == "lean"
    assert blocker.read_text() == "a file where the cache folder would go"


# ---------------------------------------------------------------------------------------------- threads
def test_one_query_runs_on_the_callers_thread_and_batches_spread(tiny_onnx, monkeypatch):
    seen: list[str] = []
    real = OnnxEncoder.embed_batch

    def spy(self, batch):
        seen.append(threading.current_thread().name)
        return real(self, batch)

    monkeypatch.setattr(OnnxEncoder, "embed_batch", spy)
    two = tiny_onnx.with_options()
    two.threads, two._pool = 2, None
    two.encode("one query")
    assert seen == [threading.current_thread().name]
    seen.clear()
    texts = [f"sentence number {i} " + "word " * (i % 7) for i in range(40)]
    parallel = two.encode(texts, batch_size=8)
    assert len(seen) == 5 and all(name.startswith("semsearch-onnx") for name in seen)
    seen.clear()
    one = tiny_onnx.with_options()
    one.threads, one._pool = 1, None
    np.testing.assert_allclose(one.encode(texts, batch_size=8), parallel, atol=1e-6)
    assert set(seen) == {threading.current_thread().name}
    seen.clear()
    two.encode(texts[:10], batch_size=32)  # one batch's worth, split so that both threads work
    assert len(seen) == 2


def test_threads_from_the_environment(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SEMSEARCH_THREADS", "3")
    assert Encoder.load(tiny_model_dir, backend="onnx").threads == 3
    monkeypatch.setenv("SEMSEARCH_THREADS", "many")
    with pytest.raises(ModelError, match=r"\$SEMSEARCH_THREADS='many': expected a whole number"):
        Encoder.load(tiny_model_dir, backend="onnx")
    monkeypatch.delenv("SEMSEARCH_THREADS")
    assert Encoder.load(tiny_model_dir, backend="onnx").threads == len(os.sched_getaffinity(0))


# ---------------------------------------------------------------------------------------------- commands
def _main():
    from semsearch.cli import main

    return main


def test_backend_option_on_index_query_and_dedupe(tmp_path, tiny_model_dir, index_home, monkeypatch):
    from semsearch import encoder as encoder_module

    monkeypatch.delenv("SEMSEARCH_BACKEND", raising=False)
    runner = CliRunner()
    for command in ("index", "query", "dedupe"):
        assert "--backend [onnx|torch]" in runner.invoke(_main(), [command, "--help"]).output
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(t for t in SENTENCES if t)))
    built = runner.invoke(_main(), ["index", str(corpus), "--index", "ix", "--model", str(tiny_model_dir), "-q"])
    assert built.exit_code == 0, built.output
    answers = {}
    for backend in ("onnx", "torch"):
        result = runner.invoke(_main(), ["query", "guitar", "--index", "ix", "--json", "--backend", backend])
        assert result.exit_code == 0, result.output
        answers[backend] = [json.loads(line) for line in result.output.splitlines()]
        assert encoder_module._default_backend is None  # set for the command only
    assert [h["id"] for h in answers["onnx"]] == [h["id"] for h in answers["torch"]]
    np.testing.assert_allclose([h["score"] for h in answers["onnx"]], [h["score"] for h in answers["torch"]], atol=1e-5)
    bad = runner.invoke(_main(), ["query", "guitar", "--index", "ix", "--backend", "gpu"])
    assert bad.exit_code == 2


def test_query_command_imports_neither_torch_nor_transformers(tmp_path, tiny_model_dir, index_home):
    """Cold path: with the graph in the cache, `semsearch query` runs on onnxruntime alone."""
    from semsearch.api import index_corpus

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(t for t in SENTENCES if t)))
    index_corpus(corpus, "cold", model=str(tiny_model_dir))  # exports the graph (torch) in this process
    code = (
        "import sys\n"
        "from semsearch.cli import main\n"
        "try:\n"
        "    main(['query', 'a guitar', '--index', 'cold', '-k', '2'])\n"
        "except SystemExit as stop:\n"
        "    assert not stop.code, stop.code\n"
        "print('loaded:', sorted(m for m in ('torch', 'transformers', 'onnxruntime') if m in sys.modules))\n"
    )
    env = {**os.environ, "SEMSEARCH_INDEXES": str(index_home), "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "A man is playing a guitar." in done.stdout
    assert done.stdout.strip().endswith("loaded: ['onnxruntime']")


# ---------------------------------------------------------------------------------------------- the real model
@pytest.mark.slow
def test_onnx_matches_sentence_transformers_on_all_stsb_test_sentences():
    """Issue 13, Must show 1: every STSb test sentence within 1e-5 of sentence-transformers; Spearman 82.03."""
    from sentence_transformers import SentenceTransformer

    from semsearch.encoder import bundled_model_path
    from semsearch.evaluation import evaluate_sts

    path = shared_file("stsb", "stsb-en-test.csv")
    with path.open(newline="", encoding="utf-8") as fh:
        sentences = sorted({s for row in csv.reader(fh) for s in row[:2]})
    assert len(sentences) > 2500
    ours = Encoder.load(backend="onnx")
    assert isinstance(ours, OnnxEncoder)
    reference = SentenceTransformer(str(bundled_model_path()), device="cpu").encode(sentences, batch_size=32)
    assert np.abs(ours.encode(sentences) - reference).max() <= 1e-5
    assert round(evaluate_sts(ours, path).spearman, 2) == 82.03
