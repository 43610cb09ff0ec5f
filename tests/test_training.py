"""Training: readers, the three objectives, the fit loop, the saved model folder, `semsearch train`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from semsearch.cli import main
from semsearch.errors import InputError, ModelError, SemsearchError
from semsearch.training.data import DataKind, read_dataset

from .conftest import shared_file

SENTENCES = ["A man is playing a guitar.", "A woman is slicing an onion.", "Two dogs run on the beach.",
             "The stock market fell sharply today.", "A child rides a red bicycle.", "Rain is falling on the city.",
             "A chef cooks pasta in a kitchen.", "The cat sleeps on the sofa."]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def fresh_encoder(tiny_model_dir):
    """A tiny encoder of its own: training changes weights in place, the session one must stay as it is."""
    from semsearch.encoder import Encoder

    return Encoder.load(tiny_model_dir, device="cpu")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def scored_csv(path: Path, rows: int = 32) -> Path:
    lines = []
    for i in range(rows):
        a, b = SENTENCES[i % 8], SENTENCES[(i * 3 + 1) % 8]
        score = 5.0 if i % 4 == 0 else (i * 7) % 5
        lines.append(f'"{a}","{b if i % 4 else a}",{score}')
    return write(path, "\n".join(lines) + "\n")


def labelled_tsv(path: Path, rows: int = 48) -> Path:
    lines = ["premise\thypothesis\tlabel"]
    for i in range(rows):
        label = i % 3
        a = SENTENCES[i % 8]
        b = a if label == 0 else SENTENCES[(i + 1) % 8] if label == 1 else SENTENCES[(i + 4) % 8]
        lines.append(f"{a}\t{b}\t{label}")
    return write(path, "\n".join(lines) + "\n")


def triplets_tsv(path: Path, rows: int = 32) -> Path:
    lines = ["anchor\tpositive\tnegative"]
    for i in range(rows):
        lines.append(f"{SENTENCES[i % 8]}\t{SENTENCES[i % 8].upper()}\t{SENTENCES[(i + 3) % 8]}")
    return write(path, "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------- readers
def test_scored_pairs_without_header_are_scaled_to_unit_range(tmp_path):
    data = read_dataset(write(tmp_path / "sts.csv", 'a b,"c, d",5.0\ne,f,0\ng,h,2.5\n'), DataKind.SCORED_PAIRS)
    assert [e.texts for e in data.examples] == [("a b", "c, d"), ("e", "f"), ("g", "h")]
    assert [e.label for e in data.examples] == [1.0, 0.0, 0.5]
    assert [e.line for e in data.examples] == [1, 2, 3]


def test_score_range_is_configurable(tmp_path):
    data = read_dataset(write(tmp_path / "s.csv", "a,b,1\nc,d,-1\n"), DataKind.SCORED_PAIRS, score_range=(-1, 1))
    assert [e.label for e in data.examples] == [1.0, 0.0]


@pytest.mark.parametrize("row, reason", [
    ("a,b,high", "score 'high' is not a number"),
    ("a,b,7", "score 7 is outside 0..5"),
    ("a,,3", "sentence2 is empty"),
    ("a,b", "expected 3 fields"),
    ("a,b,nan", "is not a number"),
])
def test_bad_scored_row_names_file_and_line(tmp_path, row, reason):
    path = write(tmp_path / "sts.csv", f"x,y,1\n{row}\nz,w,2\n")
    with pytest.raises(InputError) as info:
        read_dataset(path, DataKind.SCORED_PAIRS)
    assert str(info.value).startswith(f"{path}:2: ")
    assert reason in str(info.value)


def test_skip_invalid_counts_and_keeps_the_first_problems(tmp_path):
    path = write(tmp_path / "sts.csv", "a,b,1\nc,d,x\ne,f,9\ng,h,4\n")
    data = read_dataset(path, DataKind.SCORED_PAIRS, skip_invalid=True)
    assert len(data) == 2 and data.skipped == 2
    assert data.problems[0].startswith(f"{path}:2: ") and data.problems[1].startswith(f"{path}:3: ")


def test_header_selects_columns_by_name_in_any_order(tmp_path):
    path = write(tmp_path / "nli.tsv", "label\tpremise\thypothesis\n2\tp1\th1\n0\tp2\th2\n1\tp3\th3\n")
    data = read_dataset(path, DataKind.LABELLED_PAIRS, columns="premise,hypothesis,label")
    assert [(e.texts, e.label) for e in data.examples] == [(("p1", "h1"), 2), (("p2", "h2"), 0), (("p3", "h3"), 1)]
    assert data.labels == ("0", "1", "2")


def test_header_with_other_names_gets_a_hint(tmp_path):
    path = write(tmp_path / "nli.tsv", "premise\thypothesis\tlabel\np\th\t0\n")
    with pytest.raises(InputError, match=r"nli\.tsv:1: .*lacks the columns sentence1, sentence2, score.*--columns"):
        read_dataset(path, DataKind.SCORED_PAIRS, columns=None)


def test_string_labels_are_sorted_into_classes(tmp_path):
    path = write(tmp_path / "nli.jsonl", "\n".join(json.dumps(r) for r in [
        {"sentence1": "a", "sentence2": "b", "label": "neutral"},
        {"sentence1": "c", "sentence2": "d", "label": "entailment"},
        {"sentence1": "e", "sentence2": "f", "label": "contradiction"}]) + "\n")
    data = read_dataset(path, DataKind.LABELLED_PAIRS)
    assert data.labels == ("contradiction", "entailment", "neutral")
    assert [e.label for e in data.examples] == [2, 1, 0]


def test_known_labels_reject_others(tmp_path):
    path = write(tmp_path / "nli.csv", "sentence1,sentence2,label\na,b,0\nc,d,7\n")
    with pytest.raises(InputError, match=r"nli\.csv:3: label '7' is not one of the known labels"):
        read_dataset(path, DataKind.LABELLED_PAIRS, labels=("0", "1", "2"))


def test_jsonl_errors_name_the_line(tmp_path):
    path = write(tmp_path / "t.jsonl", '{"anchor": "a", "positive": "b", "negative": "c"}\n\n{"anchor": "a"}\n{oops\n')
    with pytest.raises(InputError, match=r"t\.jsonl:3: no field positive, negative"):
        read_dataset(path, DataKind.TRIPLETS)
    data = read_dataset(path, DataKind.TRIPLETS, skip_invalid=True)
    assert len(data) == 1 and data.skipped == 2
    assert "t.jsonl:4: invalid JSON" in data.problems[1]


def test_jsonl_text_must_be_a_string(tmp_path):
    path = write(tmp_path / "p.jsonl", '{"sentence1": 5, "sentence2": "b", "score": 1}\n')
    with pytest.raises(InputError, match=r"p\.jsonl:1: sentence1 is not text"):
        read_dataset(path, DataKind.SCORED_PAIRS)


def test_duplicate_pair_labels(tmp_path):
    path = write(tmp_path / "dups.tsv", "1\ta\tb\nfalse\tc\td\nTrue\te\tf\n0\tg\th\n")
    data = read_dataset(path, DataKind.DUPLICATE_PAIRS)
    assert [e.label for e in data.examples] == [1, 0, 1, 0]
    with pytest.raises(InputError, match="dups.tsv:1: label 'maybe' is not 0/1"):
        read_dataset(write(tmp_path / "dups.tsv", "maybe\ta\tb\n"), DataKind.DUPLICATE_PAIRS)


def test_no_valid_rows_and_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"no valid rows \(1 skipped\)"):
        read_dataset(write(tmp_path / "s.csv", "a,b,x\n"), DataKind.SCORED_PAIRS, skip_invalid=True)
    with pytest.raises(InputError, match="nope.csv: no such file"):
        read_dataset(tmp_path / "nope.csv", DataKind.SCORED_PAIRS)
    with pytest.raises(InputError, match="one label"):
        read_dataset(write(tmp_path / "n.csv", "a,b,1\nc,d,1\n"), DataKind.LABELLED_PAIRS)


def test_reads_the_shared_files_as_documented():
    nli = read_dataset(shared_file("nli", "snli-test.tsv"), DataKind.LABELLED_PAIRS, columns="premise,hypothesis,label")
    assert len(nli) == 9824 and nli.labels == ("0", "1", "2") and nli.skipped == 0
    sts = read_dataset(shared_file("stsb", "stsb-en-dev.csv"), DataKind.SCORED_PAIRS)
    assert len(sts) == 1500 and all(0 <= e.label <= 1 for e in sts.examples)
    triplets = read_dataset(shared_file("nli", "snli-triplets-test.tsv"), DataKind.TRIPLETS)
    assert len(triplets) == 2921


# ---------------------------------------------------------------------------------------------- losses
def test_triplet_loss_by_hand():
    import torch

    from semsearch.training.losses import TripletLoss

    anchor = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    positive = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # distances 5 and 1
    negative = torch.tensor([[0.0, 1.0], [0.0, 3.0]])  # distances 1 and 3
    # max(5 - 1 + 1, 0) = 5 and max(1 - 3 + 1, 0) = 0
    assert TripletLoss()([anchor, positive, negative]).item() == pytest.approx(2.5, abs=1e-5)
    # with the margin 5 of sentence-transformers: (9 + 3) / 2
    assert TripletLoss(margin=5.0)([anchor, positive, negative]).item() == pytest.approx(6.0, abs=1e-5)


def test_cosine_similarity_loss_by_hand():
    import torch

    from semsearch.training.losses import CosineSimilarityLoss

    u = torch.tensor([[1.0, 0.0], [2.0, 2.0], [1.0, 0.0]])
    v = torch.tensor([[0.0, 3.0], [1.0, 1.0], [-1.0, 0.0]])  # cosines 0, 1, -1
    gold = torch.tensor([0.5, 1.0, 0.0])
    assert CosineSimilarityLoss()([u, v], gold).item() == pytest.approx((0.25 + 0 + 1) / 3, abs=1e-6)


def test_softmax_loss_uses_u_v_and_their_absolute_difference():
    import torch

    from semsearch.training.losses import SoftmaxLoss

    loss = SoftmaxLoss(dimension=2, num_labels=3, labels=("e", "n", "c"))
    u = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    v = torch.tensor([[3.0, 1.0], [0.5, 1.0]])
    assert loss.features(u, v).tolist() == [[1, 2, 3, 1, 2, 1], [0.5, -1, 0.5, 1, 0, 2]]
    weight = torch.arange(18, dtype=torch.float32).reshape(3, 6) / 10
    with torch.no_grad():
        loss.classifier.weight.copy_(weight)
        loss.classifier.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    labels = torch.tensor([2, 0])
    features = np.array([[1, 2, 3, 1, 2, 1], [0.5, -1, 0.5, 1, 0, 2]])
    logits = features @ weight.numpy().T + np.array([0.1, -0.2, 0.3])
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -(log_softmax[0, 2] + log_softmax[1, 0]) / 2
    assert loss([u, v], labels).item() == pytest.approx(expected, rel=1e-5)


def test_learning_rate_warms_up_then_decays_linearly():
    from semsearch.training.trainer import linear_warmup

    factor = linear_warmup(10, 100)
    assert [factor(s) for s in (0, 5, 10, 55, 100, 120)] == [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    assert linear_warmup(0, 10)(0) == 1.0


# ---------------------------------------------------------------------------------------------- fit
def _mean_loss(encoder, loss, data) -> float:
    import torch

    encoder.model.eval()
    loss.eval()
    if loss.normalize is not None:
        encoder = encoder.with_options(normalize=loss.normalize)
    with torch.no_grad():
        columns = [encoder.forward(encoder.tokenize([e.texts[c] for e in data.examples]))
                   for c in range(len(data.examples[0].texts))]
        labels = None
        if data.examples[0].label is not None:
            labels = torch.tensor([e.label for e in data.examples])
        return float(loss(columns, labels))


@pytest.mark.parametrize("objective, make_file, columns", [
    ("regression", scored_csv, None),
    ("classification", labelled_tsv, "premise,hypothesis,label"),
    ("triplet", triplets_tsv, None),
])
def test_each_objective_lowers_its_loss_on_a_toy_set(tmp_path, fresh_encoder, objective, make_file, columns):
    from semsearch.training import TrainConfig, fit, make_loss
    from semsearch.training.losses import DATA_KIND

    data = read_dataset(make_file(tmp_path / "toy.txt"), DATA_KIND[objective], columns=columns,
                        format="csv" if objective == "regression" else "tsv")
    loss = make_loss(objective, fresh_encoder.dimension, labels=data.labels)
    before = _mean_loss(fresh_encoder, loss, data)
    report = fit(fresh_encoder, data, loss, tmp_path / "out", objective=objective, progress=False,
                 config=TrainConfig(epochs=10, learning_rate=2e-3, warmup_ratio=0.1, seed=1))
    after = _mean_loss(fresh_encoder, loss, data)
    assert report.steps == 10 * math.ceil(len(data) / 16)
    assert after < 0.8 * before, (before, after)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, tiny_model_dir):
    from safetensors.numpy import load_file

    from semsearch.training import TrainConfig, train_model

    data = scored_csv(tmp_path / "sts.csv")
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        train_model(data, tmp_path / name, objective="regression", model=tiny_model_dir, device="cpu",
                    config=TrainConfig(epochs=1, seed=seed, learning_rate=1e-3), progress=False)
    a, b, c = (load_file(str(tmp_path / n / "model.safetensors")) for n in "abc")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_keeps_the_best_dev_checkpoint(tmp_path, fresh_encoder, monkeypatch):
    from semsearch.encoder import Encoder
    from semsearch.training import TrainConfig, fit, make_loss
    from semsearch.training import trainer

    scores = iter([10.0, 50.0, 70.0, 60.0, 65.0])  # before training, then at steps 1, 2, 3, 4
    monkeypatch.setattr(trainer, "_dev_score", lambda encoder, pairs: next(scores))
    data = read_dataset(scored_csv(tmp_path / "sts.csv", rows=64), DataKind.SCORED_PAIRS)
    dev = scored_csv(tmp_path / "dev.csv", rows=8)
    report = fit(fresh_encoder, data, make_loss("regression", fresh_encoder.dimension), tmp_path / "out",
                 dev=dev, progress=False, config=TrainConfig(epochs=1, eval_steps=1, learning_rate=1e-3))
    assert report.initial.dev_spearman == 10.0
    assert [p.dev_spearman for p in report.history] == [50.0, 70.0, 60.0, 65.0]
    assert report.best.step == 2 and report.best.dev_spearman == 70.0
    record = json.loads((tmp_path / "out" / "semsearch_training.json").read_text())
    assert record["step"] == 2
    # the encoder ends with the saved (best) weights, not the last ones
    saved = Encoder.load(tmp_path / "out", device="cpu")
    np.testing.assert_array_equal(saved.encode(SENTENCES), fresh_encoder.encode(SENTENCES))


def test_keep_last_saves_the_final_weights(tmp_path, fresh_encoder, monkeypatch):
    from semsearch.training import TrainConfig, fit, make_loss
    from semsearch.training import trainer

    scores = iter([10.0, 90.0, 20.0])
    monkeypatch.setattr(trainer, "_dev_score", lambda encoder, pairs: next(scores))
    data = read_dataset(scored_csv(tmp_path / "sts.csv", rows=32), DataKind.SCORED_PAIRS)
    report = fit(fresh_encoder, data, make_loss("regression", fresh_encoder.dimension), tmp_path / "out",
                 dev=scored_csv(tmp_path / "dev.csv", rows=8), progress=False,
                 config=TrainConfig(epochs=1, eval_steps=1, keep_best=False))
    assert report.best is None and report.steps == 2
    assert json.loads((tmp_path / "out" / "semsearch_training.json").read_text())["step"] == 2


def test_ctrl_c_says_which_checkpoint_was_kept(tmp_path, tiny_model_dir, monkeypatch):
    from semsearch.training import trainer

    calls = iter([10.0, 50.0])  # before training and step 1; step 2 is interrupted

    def score(encoder, pairs):
        try:
            return next(calls)
        except StopIteration:
            raise KeyboardInterrupt from None

    monkeypatch.setattr(trainer, "_dev_score", score)
    out = tmp_path / "m"
    result = CliRunner().invoke(main, ["train", str(scored_csv(tmp_path / "s.csv")), "-o", "regression", "-O", str(out),
                                       "-m", str(tiny_model_dir), "--dev", str(scored_csv(tmp_path / "d.csv", 8)),
                                       "--eval-steps", "1", "-q"])
    assert result.exit_code == 130
    assert f"interrupted: {out} holds the best checkpoint so far (step 1, dev Spearman 50.00)" in result.output
    assert json.loads((out / "semsearch_training.json").read_text())["step"] == 1


# ---------------------------------------------------------------------------------------------- saving
def test_saved_model_reloads_with_identical_embeddings(tmp_path, tiny_encoder):
    from semsearch.encoder import Encoder
    from semsearch.training import save_model

    save_model(tiny_encoder, tmp_path / "copy")
    again = Encoder.load(tmp_path / "copy", device="cpu")
    np.testing.assert_array_equal(again.encode(SENTENCES), tiny_encoder.encode(SENTENCES))
    # Same pooling, dimension, length and casing; the fingerprint hashes file bytes, and a re-saved config
    # differs in its bytes, so a saved model counts as a new model (its vectors are checked equal above).
    assert [d for d in again.spec.differences(tiny_encoder.spec) if d != "fingerprint"] == []
    for name in ("config.json", "model.safetensors", "tokenizer.json", "modules.json", "1_Pooling/config.json",
                 "sentence_bert_config.json", "config_sentence_transformers.json", "semsearch_training.json"):
        assert (tmp_path / "copy" / name).is_file(), name
    versions = json.loads((tmp_path / "copy" / "config_sentence_transformers.json").read_text())["__version__"]
    assert set(versions) == {"semsearch", "transformers", "pytorch"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_the_lean_backend_reads_the_saved_folder_too(tmp_path, fresh_encoder):
    """`semsearch index --model DIR` may run a saved model without transformers: same vectors."""
    pytest.importorskip("semsearch.bert")
    from semsearch.encoder import Encoder
    from semsearch.training import TrainConfig, train_model

    train_model(scored_csv(tmp_path / "sts.csv"), tmp_path / "out", objective="regression", encoder=fresh_encoder,
                config=TrainConfig(epochs=1, learning_rate=1e-3), progress=False)
    lean = Encoder.load(tmp_path / "out", device="cpu", backend="torch")
    assert type(lean.model).__name__ == "LeanBert"
    assert np.abs(lean.encode(SENTENCES) - fresh_encoder.encode(SENTENCES)).max() <= 1e-5
    with pytest.raises(SemsearchError, match="inference-only backend"):
        train_model(scored_csv(tmp_path / "sts.csv"), tmp_path / "again", objective="regression", encoder=lean,
                    progress=False)


def test_sentence_transformers_loads_the_saved_folder(tmp_path, fresh_encoder):
    from sentence_transformers import SentenceTransformer

    from semsearch.training import TrainConfig, train_model

    train_model(scored_csv(tmp_path / "sts.csv"), tmp_path / "out", objective="regression", encoder=fresh_encoder,
                config=TrainConfig(epochs=1, learning_rate=1e-3), progress=False)
    reference = SentenceTransformer(str(tmp_path / "out"), device="cpu")
    ours = fresh_encoder.encode(SENTENCES)
    assert np.abs(reference.encode(SENTENCES) - ours).max() <= 1e-5


@pytest.mark.slow
def test_sentence_transformers_loads_a_saved_real_model(tmp_path, real_encoder):
    from sentence_transformers import SentenceTransformer

    from semsearch.encoder import Encoder
    from semsearch.training import save_model

    save_model(real_encoder, tmp_path / "minilm")
    texts = SENTENCES + ["Ünïcödé and a much longer sentence " * 30]  # past max_seq_length: truncation must agree
    reference = SentenceTransformer(str(tmp_path / "minilm"), device="cpu")
    assert reference.max_seq_length == real_encoder.spec.max_length
    assert np.abs(reference.encode(texts) - real_encoder.encode(texts)).max() <= 1e-5
    assert np.abs(Encoder.load(tmp_path / "minilm", device="cpu").encode(texts) - real_encoder.encode(texts)).max() == 0


def test_softmax_head_is_saved_beside_not_inside_the_encoder(tmp_path, fresh_encoder):
    import torch

    from semsearch.training import TrainConfig, load_head, train_model

    data = labelled_tsv(tmp_path / "nli.tsv")
    train_model(data, tmp_path / "out", objective="classification", encoder=fresh_encoder,
                columns="premise,hypothesis,label", config=TrainConfig(learning_rate=1e-3), progress=False)
    modules = json.loads((tmp_path / "out" / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"]
    head = load_head(tmp_path / "out", fresh_encoder)
    assert head.labels == ("0", "1", "2")
    vectors = torch.from_numpy(fresh_encoder.encode(SENTENCES[:4]))
    logits = head.logits(vectors[:2], vectors[2:])
    assert logits.shape == (2, 3)

    with pytest.raises(ModelError, match="other encoder weights"):
        load_head(tmp_path / "out", _other_encoder(tmp_path))


def _other_encoder(tmp_path):
    """An encoder with the same shape as the tiny one but other weights."""
    import torch

    from semsearch.encoder import Encoder
    from semsearch.training import save_model

    encoder = Encoder.load(tmp_path / "out", device="cpu")
    with torch.no_grad():
        next(encoder.model.parameters()).add_(1.0)
    save_model(encoder, tmp_path / "other")
    return Encoder.load(tmp_path / "other", device="cpu")


def test_refuses_to_replace_a_folder_that_is_not_a_model(tmp_path, tiny_encoder):
    from semsearch.training import save_model

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("precious")
    with pytest.raises(SemsearchError, match="not a model folder"):
        save_model(tiny_encoder, tmp_path / "docs")
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "precious"
    save_model(tiny_encoder, tmp_path / "m")
    (tmp_path / "m" / "stale.txt").write_text("from an older run")
    save_model(tiny_encoder, tmp_path / "m")  # a model folder is replaced as a whole
    assert not (tmp_path / "m" / "stale.txt").exists()


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_train_then_index_and_query_with_the_trained_model(tmp_path, tiny_model_dir, index_home):
    runner = CliRunner()
    data, dev = scored_csv(tmp_path / "train.csv"), scored_csv(tmp_path / "dev.csv", rows=8)
    out = tmp_path / "model"
    result = runner.invoke(main, ["train", str(data), "--objective", "regression", "--output", str(out), "--model",
                                  str(tiny_model_dir), "--dev", str(dev), "--epochs", "2", "--lr", "1e-3", "-q",
                                  "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"{out}: regression, 32 examples, 2 epochs, 4 steps in" in result.stdout
    assert "dev Spearman " in result.stdout and "(best, step " in result.stdout
    corpus = write(tmp_path / "corpus.jsonl", "\n".join(json.dumps({"id": str(i), "text": s})
                                                       for i, s in enumerate(SENTENCES)) + "\n")
    result = runner.invoke(main, ["index", str(corpus), "--index", "trained", "--model", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["query", SENTENCES[2], "--index", "trained", "-k", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["id"] == "2"


def test_cli_train_bad_row_is_an_error_with_file_and_line(tmp_path, tiny_model_dir):
    data = write(tmp_path / "nli.tsv", "premise\thypothesis\tlabel\na\tb\t0\nc\t\t1\ne\tf\t2\n")
    args = ["train", str(data), "-o", "classification", "-O", str(tmp_path / "m"), "-m", str(tiny_model_dir),
            "--columns", "premise,hypothesis,label", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert f"Error: {data}:3: hypothesis is empty" in result.output
    assert not (tmp_path / "m").exists()
    result = CliRunner().invoke(main, args + ["--skip-invalid"])
    assert result.exit_code == 0, result.output
    assert "2 labelled pairs, 1 invalid rows skipped" in result.output


@pytest.mark.parametrize("args, message", [
    (["--columns", "a,b"], "expected three comma-separated names"),
    (["--score-range", "5", "0"], "MIN must be below MAX"),
    (["--objective", "ranking"], "'ranking' is not one of"),
])
def test_cli_train_usage_errors_exit_2(tmp_path, args, message):
    base = ["train", str(scored_csv(tmp_path / "s.csv")), "-O", str(tmp_path / "m")]
    if "--objective" not in args:
        base += ["--objective", "regression"]
    result = CliRunner().invoke(main, base + args)
    assert result.exit_code == 2
    assert message in result.output


def test_cli_eval_nli_reports_accuracy_of_the_saved_head(tmp_path, tiny_model_dir):
    from semsearch.evaluation import evaluate_nli

    data = labelled_tsv(tmp_path / "nli.tsv")
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(data), "-o", "classification", "-O", str(tmp_path / "m"), "-m",
                                  str(tiny_model_dir), "--columns", "premise,hypothesis,label", "-q", "--lr", "1e-3"])
    assert result.exit_code == 0, result.output
    expected = evaluate_nli(tmp_path / "m", data, columns="premise,hypothesis,label")
    assert sum(map(sum, expected.confusion)) == 48
    assert expected.accuracy == pytest.approx(100 * sum(expected.confusion[i][i] for i in range(3)) / 48)
    assert expected.majority == pytest.approx(100 / 3)
    result = runner.invoke(main, ["eval", "nli", str(data), "-m", str(tmp_path / "m"), "--columns",
                                  "premise,hypothesis,label"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{data}: accuracy {expected.accuracy:.2f}  (majority class 33.33; 48 pairs)")
    result = runner.invoke(main, ["eval", "nli", str(data), "-m", str(tiny_model_dir), "--columns",
                                  "premise,hypothesis,label"])
    assert result.exit_code == 1 and "no softmax head" in result.output


def test_cli_does_not_import_torch():
    code = "import sys, semsearch.cli; sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
