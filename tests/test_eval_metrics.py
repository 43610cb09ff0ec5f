"""Evaluation measures on hand-computed toy collections: nDCG@10, MRR@10, recall@k, MAP, best-F1; and the
`eval retrieval | pairs | triplets` paths that feed them."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from semsearch.cli import main
from semsearch.errors import InputError
from semsearch.metrics import (at_threshold, average_precision, best_f1_threshold, ndcg_at_k, reciprocal_rank_at_k,
                               recall_at_k, retrieval_metrics, triplet_accuracy)

# q1 judges d1 (grade 2), d2 (grade 1) and d3 (0); q2 judges d4; q3 judges only d5, as not relevant.
QRELS = {"q1": {"d1": 2, "d2": 1, "d3": 0}, "q2": {"d4": 1}, "q3": {"d5": 0}}
RUN = {"q1": ["d3", "d1", "d6", "d2"], "q2": ["d7", "d8", "d4"], "q3": ["d5"]}


# ---------------------------------------------------------------------------------------------- ranking
def test_ndcg_by_hand():
    # q1: gains 0, 2, 0, 1 at ranks 1-4; ideal order 2, 1
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(RUN["q1"], QRELS["q1"], 10) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(RUN["q1"], QRELS["q1"], 10) == pytest.approx(0.6433, abs=1e-4)
    # the cut: only rank 1 (gain 0) counts at k = 1
    assert ndcg_at_k(RUN["q1"], QRELS["q1"], 1) == 0.0
    # q2: one relevant document at rank 3
    assert ndcg_at_k(RUN["q2"], QRELS["q2"], 10) == pytest.approx(1 / math.log2(4))
    assert ndcg_at_k(["d1", "d2"], QRELS["q1"], 10) == 1.0


def test_gains_are_linear_in_the_grade_as_trec_eval():
    judgements = {"a": 3, "b": 1}
    assert ndcg_at_k(["b", "a"], judgements) == pytest.approx((1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3)))


def test_reciprocal_rank_by_hand_and_its_cut():
    assert reciprocal_rank_at_k(RUN["q1"], QRELS["q1"]) == 0.5
    assert reciprocal_rank_at_k(RUN["q2"], QRELS["q2"]) == pytest.approx(1 / 3)
    ranking = [f"x{i}" for i in range(10)] + ["d4"]
    assert reciprocal_rank_at_k(ranking, QRELS["q2"], 10) == 0.0  # rank 11 is past the cut
    assert reciprocal_rank_at_k(ranking, QRELS["q2"], 11) == pytest.approx(1 / 11)


def test_recall_by_hand():
    assert recall_at_k(RUN["q1"], QRELS["q1"], 1) == 0.0
    assert recall_at_k(RUN["q1"], QRELS["q1"], 2) == 0.5
    assert recall_at_k(RUN["q1"], QRELS["q1"], 4) == 1.0
    assert recall_at_k(RUN["q2"], QRELS["q2"], 2) == 0.0
    assert recall_at_k(RUN["q2"], QRELS["q2"], 100) == 1.0


def test_average_precision_by_hand():
    # q1: relevant at ranks 2 and 4: (1/2 + 2/4) / 2
    assert average_precision(RUN["q1"], QRELS["q1"]) == pytest.approx(0.5)
    assert average_precision(RUN["q2"], QRELS["q2"]) == pytest.approx(1 / 3)
    # a relevant document never retrieved counts as precision 0: (1/1 + 0) / 2
    assert average_precision(["d1"], QRELS["q1"]) == pytest.approx(0.5)


def test_repeated_documents_count_once():
    assert recall_at_k(["d1", "d1", "d2"], QRELS["q1"], 2) == 1.0
    assert average_precision(["d1", "d1", "d2"], QRELS["q1"]) == 1.0


def test_means_over_queries_leave_out_those_without_a_relevant_document():
    metrics = retrieval_metrics(RUN, QRELS)
    assert metrics.queries == 2 and metrics.skipped == 1
    assert metrics.ndcg_at_10 == pytest.approx((0.6433 + 0.5) / 2, abs=1e-4)
    assert metrics.mrr_at_10 == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert metrics.recall == {1: 0.0, 10: 1.0, 100: 1.0}
    assert metrics.map == pytest.approx((0.5 + 1 / 3) / 2)
    # a judged query the run lacks scores 0 everywhere
    assert retrieval_metrics({"q1": RUN["q1"]}, QRELS).mrr_at_10 == pytest.approx(0.25)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0, 1, allow_nan=False)), min_size=2, max_size=30, unique_by=lambda t: t[1]))
def test_ndcg_and_ap_agree_with_scikit_learn(rows):
    from sklearn.metrics import average_precision_score, ndcg_score

    grades = np.array([g for g, _ in rows])
    scores = np.array([s for _, s in rows])
    ranking = [f"d{i}" for i in np.argsort(-scores)]
    judgements = {f"d{i}": int(g) for i, g in enumerate(grades)}
    if grades.sum() == 0:
        assert ndcg_at_k(ranking, judgements) == 0.0
        return
    assert ndcg_at_k(ranking, judgements, 10) == pytest.approx(ndcg_score([grades], [scores], k=10))
    relevant = grades > 0
    assert average_precision(ranking, judgements) == pytest.approx(average_precision_score(relevant, scores))


# ---------------------------------------------------------------------------------------------- best F1
def test_best_f1_by_hand():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    labels = [1, 0, 1, 1, 0]
    # cuts after each score: F1 = 2/4, 2/5, 4/6, 6/7, 6/8 -> keep the top four
    best = best_f1_threshold(scores, labels)
    assert best.threshold == pytest.approx(0.55)
    assert (best.true_positives, best.false_positives, best.false_negatives) == (3, 1, 0)
    assert best.precision == 0.75 and best.recall == 1.0 and best.f1 == pytest.approx(6 / 7)
    given = at_threshold(scores, labels, 0.75)
    assert (given.true_positives, given.false_positives, given.false_negatives) == (1, 1, 2)
    assert given.precision == 0.5 and given.recall == pytest.approx(1 / 3) and given.f1 == pytest.approx(0.4)


def test_tied_scores_fall_on_the_same_side():
    best = best_f1_threshold([0.9, 0.9, 0.1], [1, 0, 1])
    # the two 0.9 pairs cannot be split: keep both (F1 1/2) or all three (F1 4/5)
    assert best.threshold == pytest.approx(0.1)
    assert best.f1 == pytest.approx(0.8) and best.precision == pytest.approx(2 / 3)


def test_equal_f1_takes_the_higher_threshold():
    best = best_f1_threshold([0.8, 0.6, 0.4, 0.2], [1, 0, 0, 1])  # F1: 2/3, 2/4, 2/5, 4/6
    assert best.f1 == pytest.approx(2 / 3) and best.threshold == pytest.approx(0.7)


def test_no_predicted_duplicates_and_no_duplicates():
    nothing = at_threshold([0.2, 0.3], [1, 0], 0.9)
    assert (nothing.precision, nothing.recall, nothing.f1) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="no duplicate"):
        best_f1_threshold([0.2, 0.3], [0, 0])


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([-0.5, 0.0, 0.1, 0.25, 0.5, 0.7, 0.9, 1.0]), st.booleans()), min_size=1,
                max_size=25).filter(lambda rows: any(label for _, label in rows)))
def test_best_f1_is_the_best_of_every_possible_cut(rows):
    scores = [s for s, _ in rows]
    labels = [int(label) for _, label in rows]
    best = best_f1_threshold(scores, labels)
    brute = max(at_threshold(scores, labels, t).f1 for t in set(scores))
    assert best.f1 == pytest.approx(brute)
    again = at_threshold(scores, labels, best.threshold)  # the threshold reproduces the cut
    assert (again.true_positives, again.false_positives) == (best.true_positives, best.false_positives)


def test_triplet_accuracy_by_hand():
    anchor = np.zeros((3, 2))
    positive = np.array([[1.0, 0.0], [3.0, 0.0], [2.0, 0.0]])
    negative = np.array([[0.0, 2.0], [0.0, 1.0], [0.0, 2.0]])  # nearer, farther, tied (a tie is a miss)
    assert triplet_accuracy(anchor, positive, negative) == pytest.approx(100 / 3)


# ---------------------------------------------------------------------------------------------- with a model
@dataclass
class _Spec:
    model: str = "fake"


class FakeEncoder:
    """Vectors given by hand: the text "a" gets VECTORS["a"]."""

    spec = _Spec()

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def encode(self, texts, batch_size: int = 32, show_progress=None) -> np.ndarray:
        return np.array([self.vectors[t] for t in texts], dtype=np.float32)


def unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def beir_folder(root: Path, qrels_name: str = "qrels/test.tsv") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    docs = {"d1": ("Title", "one"), "d2": ("", "two"), "d3": ("", "three"), "d4": ("", "four"), "q2": ("", "self")}
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n"
                                               for i, (t, x) in docs.items()))
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "first"}) + "\n"
                                        + json.dumps({"_id": "q2", "text": "second"}) + "\n"
                                        + json.dumps({"_id": "q9", "text": "unjudged"}) + "\n")
    (root / qrels_name).parent.mkdir(exist_ok=True)
    (root / qrels_name).write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td3\t1\nq2\td4\t1\nq2\tq2\t1\n")
    return root


# Angles: a query 0° ranks documents by their angle from it.
VECTORS = {"first": unit(0), "second": unit(90), "unjudged": unit(45),
           "Title one": unit(10), "two": unit(20), "three": unit(30), "four": unit(80), "self": unit(90)}


def test_evaluate_retrieval_ranks_exactly_and_scores_by_hand(tmp_path):
    from semsearch.retrieval import evaluate_retrieval

    result = evaluate_retrieval(beir_folder(tmp_path / "toy"), encoder=FakeEncoder(VECTORS))
    m = result.metrics
    # q1 ranks d1, d2, d3, d4, q2: relevant d1 (2) at 1 and d3 (1) at 3 -> nDCG (2 + 1/2) / (2 + 1/log2 3)
    # q2 ranks q2 (dropped: same id as the query), d4, d3, ...: d4 at 1 -> everything 1 (q2 as a
    #   document is judged relevant but can never be returned: recall 1/2)
    q1_ndcg = (2 + 1 / math.log2(4)) / (2 + 1 / math.log2(3))
    q2_ideal = 1 + 1 / math.log2(3)
    assert m.queries == 2 and result.documents == 5
    assert m.ndcg_at_10 == pytest.approx((q1_ndcg + 1 / q2_ideal) / 2)
    assert m.mrr_at_10 == 1.0
    assert m.recall == {1: pytest.approx((0.5 + 0.5) / 2), 10: pytest.approx((1 + 0.5) / 2), 100: pytest.approx(0.75)}
    assert m.map == pytest.approx(((1 + 2 / 3) / 2 + 1 / 2) / 2)


def test_evaluate_retrieval_keeps_identical_ids_when_asked(tmp_path):
    from semsearch.retrieval import evaluate_retrieval

    result = evaluate_retrieval(beir_folder(tmp_path / "toy", "qrels.tsv"), encoder=FakeEncoder(VECTORS),
                                ignore_identical_ids=False)
    assert result.metrics.per_query["q2"]["recall@1"] == 0.5 and result.metrics.per_query["q2"]["mrr@10"] == 1.0


def test_beir_errors_name_file_and_line(tmp_path):
    from semsearch.retrieval import read_beir

    folder = beir_folder(tmp_path / "bad")
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{nope\n')
    with pytest.raises(InputError, match=r"corpus\.jsonl:2: invalid JSON"):
        read_beir(folder)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t0.5\n")
    with pytest.raises(InputError, match=r"test\.tsv:2: score '0.5' is not a whole number"):
        read_beir(folder)
    (folder / "qrels" / "test.tsv").write_text("q7\td1\t1\n")
    with pytest.raises(InputError, match=r"judged queries are missing \(first: 'q7'\)"):
        read_beir(folder)
    with pytest.raises(InputError, match="no qrels"):
        read_beir(beir_folder(tmp_path / "none", "elsewhere/x.tsv"))


def test_an_index_and_its_model_give_the_same_numbers(tmp_path, tiny_encoder, index_home):
    from semsearch.corpus import Record
    from semsearch.index import IndexWriter
    from semsearch.retrieval import evaluate_retrieval

    folder = beir_folder(tmp_path / "toy")
    records = [Record((obj["title"] + " " + obj["text"]).strip(), obj["_id"], n)
               for n, obj in enumerate(map(json.loads, (folder / "corpus.jsonl").read_text().splitlines()), 1)]
    with IndexWriter(index_home / "toy", tiny_encoder) as writer:
        writer.add(records)
    by_model = evaluate_retrieval(folder, encoder=tiny_encoder).metrics
    by_index = evaluate_retrieval(folder, index=index_home / "toy").metrics
    assert by_index.per_query.keys() == by_model.per_query.keys()
    for qid, scores in by_model.per_query.items():
        assert by_index.per_query[qid] == pytest.approx(scores)


def test_cli_eval_retrieval(tmp_path, tiny_model_dir):
    folder = beir_folder(tmp_path / "toy")
    result = CliRunner().invoke(main, ["eval", "retrieval", str(folder), "--model", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    assert f"{folder}: 2 queries, 5 documents; ranked by " in result.stdout
    assert "nDCG@10 " in result.stdout and "R@100 " in result.stdout and "MAP@1000 " in result.stdout
    result = CliRunner().invoke(main, ["eval", "retrieval", str(folder), "--model", "x", "--index", "y"])
    assert result.exit_code == 2


def test_evaluate_pairs_by_hand(tmp_path):
    from semsearch.evaluation import evaluate_pairs

    # cosines with "q": 0° -> 1.0, 60° -> 0.5, 90° -> 0.0, 180° -> -1.0
    vectors = {"q": unit(0), "same": unit(0), "near": unit(60), "off": unit(90), "opposite": unit(180)}
    path = tmp_path / "pairs.tsv"
    path.write_text("label\tsentence1\tsentence2\n1\tq\tsame\n0\tq\tnear\n1\tq\toff\n0\tq\topposite\n")
    result = evaluate_pairs(FakeEncoder(vectors), path, threshold=0.75)
    # cuts: keep 1 -> F1 2/3; keep 2 -> 2/4; keep 3 -> 4/5; keep 4 -> 4/6
    assert result.best.threshold == pytest.approx(-0.5) and result.best.f1 == pytest.approx(0.8)
    assert (result.best.precision, result.best.recall) == (pytest.approx(2 / 3), 1.0)
    assert result.at.f1 == pytest.approx(2 / 3) and result.at.precision == 1.0 and result.at.recall == 0.5
    assert (result.pairs, result.duplicates) == (4, 2)


def test_cli_eval_pairs_and_triplets(tmp_path, tiny_model_dir):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("1\ta cat\ta kitten\n0\ta cat\tthe stock market\n1\ttwo dogs\tdogs, two\nbad\tx\ty\n")
    result = CliRunner().invoke(main, ["eval", "pairs", str(pairs), "-m", str(tiny_model_dir), "-t", "0.5"])
    assert result.exit_code == 1 and f"{pairs}:4: label 'bad' is not 0/1" in result.output
    result = CliRunner().invoke(main, ["eval", "pairs", str(pairs), "-m", str(tiny_model_dir), "-t", "0.5",
                                       "--skip-invalid"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{pairs}: 3 pairs, 2 duplicates, 1 skipped")
    assert lines[1].startswith("best F1:  threshold ") and lines[2].startswith("given:    threshold 0.5000")
    triplets = tmp_path / "t.csv"
    triplets.write_text("anchor,positive,negative\na cat,a kitten,the stock market\n")
    result = CliRunner().invoke(main, ["eval", "triplets", str(triplets), "-m", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{triplets}: triplet accuracy ")


def test_evaluate_triplets_by_hand(tmp_path):
    from semsearch.evaluation import evaluate_triplets

    vectors = {"a": unit(0), "p": unit(10), "n": unit(50), "far": unit(170)}
    path = tmp_path / "t.tsv"
    path.write_text("anchor\tpositive\tnegative\na\tp\tn\na\tfar\tn\na\tn\tp\na\tp\tfar\n")
    result = evaluate_triplets(FakeEncoder(vectors), path)
    assert result.accuracy == 50.0 and result.triplets == 4

