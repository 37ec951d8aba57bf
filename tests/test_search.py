"""experiments/search.py: the hybrid's weight, chosen on pairs no model trains on; the --quick
run's figure and numbers; redrawing."""
import os
import sys

import numpy as np
import pytest

import bert
from conftest import ROOT, quick_run

sys.path.append(os.path.join(ROOT, "experiments"))  # after the scripts: nothing shadows them
import search  # noqa: E402


def test_hybrid_weight_is_read_off_the_mrr_of_each_mix():
    cos = np.eye(4)[[1, 0, 2, 3]]  # the model gets queries 2 and 3 right, 0 and 1 wrong
    tfidf = np.eye(4) * 0.5  # tf-idf all right, at a lower scale
    mrr = search.mrr_by_weight(cos, tfidf)
    assert mrr[0.0] == pytest.approx((0.5 + 0.5 + 1 + 1) / 4)
    # query 0: (1 - a) 0 + a 0.5 for its document, (1 - a) 1 for the other: right once a > 2/3
    assert mrr[0.65] == mrr[0.0] and mrr[0.7] == mrr[1.0] == 1.0
    assert max(search.WEIGHTS, key=mrr.get) == 0.7  # the first of the best mixes


def test_tune_files_are_training_files_no_model_trains_on():
    """The hybrid's weight is chosen on whole files of the training split, apart from the
    files every model trains on and from bert.py's held-out files."""
    pairs = [("q", "d", f"pkg/mod{i // 3}.py:{i}", "") for i in range(600)]  # 3 pairs a file
    train = [p for p in pairs if bert.zlib.crc32(p[2].split(":")[0].encode()) % bert.HELD_OUT]
    tune, rest = search.split_tune(train)
    assert 5 < len(tune) < len(rest) and sorted(tune + rest) == sorted(train)
    file = lambda p: p[2].split(":")[0]  # noqa: E731
    assert not {file(p) for p in tune} & {file(p) for p in rest}
    assert all(search.is_tune(p) for p in tune) and not any(search.is_tune(p) for p in rest)


def test_quick_run_draws_every_model_on_the_same_queries(tmp_path, monkeypatch):
    r, data = quick_run("search", tmp_path)
    rows = search.rows(data)
    expected = ["tfidf_whole", "tfidf", "mlm", "contrastive", "hybrid"]
    if "skipped" not in data["minilm"]:
        expected += ["minilm", "minilm_hybrid", "minilm_tuned", "minilm_tuned_hybrid"]
    assert list(rows) == expected
    for key, runs in rows.items():
        for m in runs:
            assert 0 <= m["R@1"] <= m["R@10"] <= 1 and m["R@1"] <= m["MRR"] <= 1, key
    run = data["scratch"][0]
    assert run["hybrid"]["weight"] in search.WEIGHTS and data["queries"] == 30
    best = max(run["mrr_by_weight"]["tune"].values())
    assert run["mrr_by_weight"]["tune"][str(run["hybrid"]["weight"])] == best
    assert run["hybrid"]["MRR"] == pytest.approx(
        run["mrr_by_weight"]["held_out"][str(run["hybrid"]["weight"])])
    assert "| bert.py, + contrastive | 1 |" in r.stdout
    png = open(tmp_path / "search.png", "rb").read()
    os.remove(tmp_path / "search.png")
    monkeypatch.setattr(search, "measure", lambda args: pytest.fail("--plot-only measured"))
    search.main(["--plot-only", "--out", str(tmp_path)])
    assert open(tmp_path / "search.png", "rb").read() == png
