"""Issue 12's "while there" refactors: one home for similarity, formats, STS readers, typed errors, exports."""

from __future__ import annotations

import numpy as np
import pytest

from semsearch.errors import SemsearchError
from semsearch.similarity import cosine, inverse_norms, normalise_rows


# ------------------------------------------------------------------------------------------- similarity
def test_normalise_rows_gives_unit_float32_rows_and_keeps_zero_rows_zero():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]], dtype=np.float64)
    unit = normalise_rows(x)
    assert unit.dtype == np.float32
    np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]], rtol=1e-6)
    assert not np.isnan(unit).any()
    np.testing.assert_array_equal(x[0], [3.0, 4.0])  # copy=True leaves the input alone


def test_normalise_rows_in_place_when_asked():
    x = np.array([[3.0, 4.0]], dtype=np.float32)
    out = normalise_rows(x, copy=False)
    assert out is x
    np.testing.assert_allclose(x, [[0.6, 0.8]], rtol=1e-6)


def test_normalise_rows_matches_the_old_formula_bit_for_bit():
    x = np.random.default_rng(0).standard_normal((50, 17)).astype(np.float32)
    old = x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)
    np.testing.assert_array_equal(normalise_rows(x), old)
    x64 = x.astype(np.float64)
    old64 = x64 / np.linalg.norm(x64, axis=1, keepdims=True).clip(min=1e-12)
    np.testing.assert_array_equal(normalise_rows(x64, dtype=np.float64), old64)


def test_normalise_rows_slices_give_the_same_result(monkeypatch):
    import semsearch.similarity as similarity

    x = np.random.default_rng(1).standard_normal((40, 9)).astype(np.float32)
    whole = normalise_rows(x)
    monkeypatch.setattr(similarity, "_SLICE_VALUES", 20)  # slices of 2 rows
    np.testing.assert_array_equal(normalise_rows(x), whole)
    np.testing.assert_array_equal(inverse_norms(x), 1.0 / np.linalg.norm(x.astype(np.float64), axis=1))


def test_normalise_rows_refuses_a_vector():
    with pytest.raises(SemsearchError, match="2-d matrix"):
        normalise_rows(np.ones(3))


def test_cosine_of_paired_rows_and_of_rows_with_one_vector():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [-1.0, -1.0], [1.0, 0.0]])
    np.testing.assert_allclose(cosine(a, b), [1.0, -1.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(cosine(a, np.array([0.0, 3.0])), [0.0, 2 ** -0.5, 0.0], atol=1e-15)
    with pytest.raises(SemsearchError, match="one shape"):
        cosine(a, b[:2])


# --------------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize("name, expected", [
    ("a.jsonl", "jsonl"), ("A.NDJSON", "jsonl"), ("a.json", "jsonl"), ("a.csv", "csv"), ("a.TSV", "tsv"),
    ("a.tab", "tsv"), ("a.txt", "text"), ("a.md", "text"), ("noext", "text"),
])
def test_guess_format_is_the_one_suffix_table(name, expected):
    from semsearch.corpus import guess_format

    assert guess_format(name).value == expected
    assert guess_format("x.parquet", default=None) is None


@pytest.mark.parametrize("name, tabs", [("d.tsv", True), ("d.TAB", True), ("d.csv", False), ("d.txt", False),
                                        ("d", False)])
def test_training_reader_takes_its_format_from_guess_format(tmp_path, name, tabs):
    from semsearch.errors import InputError
    from semsearch.training.data import DataKind, read_dataset

    path = tmp_path / name
    path.write_text("a\tb\tc\n")  # three fields in a TSV; one field in a CSV (.txt and no suffix read as CSV)
    if tabs:
        assert [e.texts for e in read_dataset(path, DataKind.TRIPLETS).examples] == [("a", "b", "c")]
    else:
        with pytest.raises(InputError, match="expected 3 fields .*got 1"):
            read_dataset(path, DataKind.TRIPLETS)


@pytest.mark.parametrize("name, ok", [("o.jsonl", True), ("o.CSV", True), ("o.ndjson", True), ("o.tsv", False),
                                      ("o.txt", False), ("o", False)])
def test_dedupe_out_format(tmp_path, name, ok):
    from semsearch.dedupe import out_format, write_rows
    from semsearch.errors import InputError

    if ok:
        written = write_rows(tmp_path / name, [{"id": "a", "score": 1.0}])
        assert written == out_format(name).value
    else:
        with pytest.raises(InputError, match="use a .jsonl or .csv file"):
            write_rows(tmp_path / name, [])
        assert not (tmp_path / name).exists()


# ------------------------------------------------------------------------------------------ STS reader
STS_ROWS = [("A cat sits.", "A cat is sitting.", 4.5), ("A dog runs.", "The sky is blue.", 0.2),
            ("Kids play.", "Children are playing.", 4.0), ("He cooks.", "A man sings.", 1.0)]


def _sts_file(path, header: str) -> str:
    order = [c.strip() for c in header.split(",")]
    lines = [header] + [",".join(str(dict(zip(("sentence1", "sentence2", "score"), row))[c]) for c in order)
                        for row in STS_ROWS]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("header", ["score,sentence1,sentence2", "sentence1,sentence2,score",
                                    "sentence2,score,sentence1"])
def test_sts_reader_takes_a_header_in_any_order(tmp_path, header):
    from semsearch.evaluation import read_sts

    pairs = read_sts(_sts_file(tmp_path / "sts.csv", header))
    assert [(p.sentence1, p.sentence2, p.score) for p in pairs] == STS_ROWS  # scores as given, not scaled


def test_sts_reader_without_header_and_scores_outside_0_5(tmp_path):
    from semsearch.evaluation import read_sts

    path = tmp_path / "sts.tsv"
    path.write_text("a\tb\t-3\nc\td\t12.5\n")
    assert [(p.sentence1, p.sentence2, p.score) for p in read_sts(path)] == [("a", "b", -3.0), ("c", "d", 12.5)]


def test_sts_reader_names_file_and_line(tmp_path):
    from semsearch.errors import InputError
    from semsearch.evaluation import read_sts

    path = tmp_path / "sts.csv"
    path.write_text("score,sentence1,sentence2\n1,a,b\nhigh,c,d\n")
    with pytest.raises(InputError, match=r"sts\.csv:3: score 'high' is not a number"):
        read_sts(path)


def test_eval_sts_and_train_dev_accept_the_header_train_accepts(tmp_path, fake_encoder, monkeypatch):
    """The issue's case: ``score,sentence1,sentence2`` loads for train; eval sts and --dev must load it too."""
    from click.testing import CliRunner

    from semsearch.cli import main
    from semsearch.evaluation import evaluate_sts
    from semsearch.training.data import DataKind, read_dataset

    path = _sts_file(tmp_path / "sts.csv", "score,sentence1,sentence2")
    assert len(read_dataset(path, DataKind.SCORED_PAIRS)) == 4  # train
    assert evaluate_sts(fake_encoder, path).pairs == 4  # eval sts, and --dev (fit reads it with read_sts)
    monkeypatch.setattr("semsearch.encoder.Encoder.load", lambda *a, **k: fake_encoder)
    result = CliRunner().invoke(main, ["eval", "sts", path])
    assert result.exit_code == 0, result.output
    assert "(4 pairs; fake" in result.output


# ---------------------------------------------------------------------------------------- typed errors
@pytest.fixture
def weighted_mean_model(tiny_model_dir, tmp_path):
    """The tiny model folder, its pooling switched to sentence-transformers' weighted mean."""
    import json
    import shutil

    folder = tmp_path / "weighted"
    shutil.copytree(tiny_model_dir, folder)
    config = folder / "1_Pooling" / "config.json"
    settings_ = json.loads(config.read_text())
    settings_.update(pooling_mode_mean_tokens=False, pooling_mode_weightedmean_tokens=True)
    config.write_text(json.dumps(settings_))
    return folder


@pytest.mark.parametrize("command", [["eval", "sts", "{sts}"], ["dedupe", "{corpus}"]])
def test_weighted_mean_pooling_is_one_line_exit_1(weighted_mean_model, tmp_path, command):
    from click.testing import CliRunner

    from semsearch.cli import main

    sts = _sts_file(tmp_path / "sts.csv", "sentence1,sentence2,score")
    corpus = tmp_path / "c.txt"
    corpus.write_text("one\ntwo\n")
    args = [a.format(sts=sts, corpus=corpus) for a in command] + ["--model", str(weighted_mean_model)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, ValueError)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0] == (f"Error: {weighted_mean_model / '1_Pooling' / 'config.json'}: weighted-mean pooling is not "
                        "supported (semsearch pools with mean, max or cls; --pooling overrides the folder's)")


def test_pooling_override_loads_a_weighted_mean_folder(weighted_mean_model):
    from semsearch.encoder import Encoder

    assert Encoder.load(weighted_mean_model, pooling="max", device="cpu").spec.pooling.value == "max"


@pytest.mark.parametrize("config, message", [
    ({"pooling_mode_mean_tokens": True, "pooling_mode_mean_sqrt_len_tokens": True}, "mean-sqrt-len pooling"),
    ({"pooling_mode_lasttoken": True, "pooling_mode_mean_tokens": False}, "last-token pooling"),
    ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}, r"cls \+ mean pooling \(concatenated\)"),
    ({"pooling_mode_mean_tokens": False}, "no pooling mode is switched on"),
    ([], "expected a JSON object"),
])
def test_unsupported_pooling_configurations(config, message):
    from semsearch.errors import ModelError, UnsupportedModel
    from semsearch.pooling import pooling_from_st_config

    with pytest.raises(UnsupportedModel, match=message) as info:
        pooling_from_st_config(config, "m/1_Pooling/config.json")
    assert isinstance(info.value, ModelError) and str(info.value).startswith("m/1_Pooling/config.json: ")


@pytest.mark.parametrize("config, expected", [({}, "mean"), ({"pooling_mode_max_tokens": True,
                                              "pooling_mode_mean_tokens": False}, "max"),
                                              ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False,
                                                "pooling_mode_weightedmean_tokens": False}, "cls")])
def test_supported_pooling_configurations(config, expected):
    from semsearch.pooling import pooling_from_st_config

    assert pooling_from_st_config(config).value == expected


def test_a_broken_model_json_is_a_model_error(tiny_model_dir, tmp_path):
    import shutil

    from semsearch.encoder import Encoder
    from semsearch.errors import ModelError

    folder = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "modules.json").write_text("[{")
    with pytest.raises(ModelError, match=r"modules\.json: not valid JSON"):
        Encoder.load(folder, device="cpu")
    (folder / "modules.json").write_text('{"a": 1}')
    with pytest.raises(ModelError, match=r"modules\.json: expected a JSON list of modules"):
        Encoder.load(folder, device="cpu")


@pytest.mark.parametrize("call, message", [
    (lambda: __import__("semsearch.corpus", fromlist=["x"]).read_records("x.txt", format="xml").__next__(),
     "unknown format 'xml': use one of jsonl, csv, tsv, text"),
    (lambda: __import__("semsearch.pooling", fromlist=["x"]).pool("median", None, None),
     "unknown pooling 'median': use one of mean, max, cls"),
    (lambda: __import__("semsearch.training.data", fromlist=["x"]).read_dataset("x.csv", "quads"),
     "unknown data kind 'quads'"),
    (lambda: __import__("semsearch.mining", fromlist=["x"]).plan_keep(
        __import__("semsearch.mining", fromlist=["x"]).mine_pairs(np.eye(2), 0.5), np.eye(2), keep="shortest"),
     "unknown keep rule 'shortest': use one of first, longest"),
    (lambda: __import__("semsearch.metrics", fromlist=["x"]).best_f1_threshold([0.1, 0.2], [0]),
     "2 scores for 1 labels"),
])
def test_bad_arguments_are_typed_and_still_value_errors(call, message):
    from semsearch.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match=message) as info:
        call()
    assert isinstance(info.value, SemsearchError) and isinstance(info.value, ValueError)


def test_lean_bert_refuses_to_train_with_a_typed_error(tiny_model_dir):
    from semsearch.bert import LeanBert
    from semsearch.errors import InferenceOnly, ModelError

    with pytest.raises(InferenceOnly) as info:
        LeanBert(tiny_model_dir).train()
    assert isinstance(info.value, ModelError) and isinstance(info.value, RuntimeError)




def test_no_bare_builtin_error_is_raised_by_the_library():
    import re
    from pathlib import Path

    import semsearch

    root = Path(semsearch.__file__).parent
    bare = re.compile(r"raise (ValueError|RuntimeError|KeyError|TypeError|AssertionError|IndexError|OSError)\b")
    found = [f"{path.relative_to(root)}:{number}: {line.strip()}"
             for path in sorted(root.rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), start=1) if bare.search(line)]
    assert found == []


# ------------------------------------------------------------------------------------------- exports
def _type_checking_imports() -> dict[str, str]:
    import ast
    from pathlib import Path

    import semsearch

    tree = ast.parse(Path(semsearch.__file__).read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING")
    return {alias.asname or alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom)
            for alias in node.names}


def test_type_checking_block_lists_every_export_from_its_module():
    import semsearch

    assert _type_checking_imports() == dict(semsearch._EXPORTS)
    assert len(semsearch._EXPORTS) >= 41


def test_every_export_resolves_and_errors_derive_from_one_base():
    import semsearch

    for name in semsearch._EXPORTS:
        value = getattr(semsearch, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, semsearch.SemsearchError), name
