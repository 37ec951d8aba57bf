"""experiments/bottleneck.py: the reversal task's definition, the scores, the --quick run's figure
and numbers (with Multi30k, and without it), redrawing, and refusals."""
import json
import os
import string
import sys

import pytest

from conftest import ROOT, SHARED_DATA, quick_run

sys.path.append(os.path.join(ROOT, "experiments"))  # after the scripts: nothing shadows them
import bottleneck  # noqa: E402

MULTI30K = os.path.join(SHARED_DATA, "multi30k")


def test_reversal_pairs_are_strings_and_their_reverses_of_every_length_in_range():
    pairs = bottleneck.reversal_pairs(2000, seed=3)
    lengths = [len(s) for s, _ in pairs]
    assert len(pairs) == 2000 and min(lengths) == 5 and max(lengths) == 60
    assert len(set(lengths)) == 56  # every length from 5 to 60 drawn
    for source, target in pairs:
        assert target == source[::-1] and len(target) == len(source)
        assert set(source) <= set(string.ascii_lowercase)
    assert bottleneck.reversal_pairs(2000, seed=3) == pairs  # the seed fixes them
    assert bottleneck.reversal_pairs(50, seed=4) != pairs[:50]
    short = bottleneck.reversal_pairs(100, seed=0, lengths=(2, 3), alphabet="xy")
    assert {len(s) for s, _ in short} == {2, 3} and set("".join(s for s, _ in short)) == {"x", "y"}


def test_character_accuracy_and_buckets():
    assert bottleneck.char_accuracy(list("abcd"), list("abcd")) == 1.0
    assert bottleneck.char_accuracy(list("abxd"), list("abcd")) == 0.75
    assert bottleneck.char_accuracy(list("ab"), list("abcd")) == 0.5  # too short
    assert bottleneck.char_accuracy(list("abcdefgh"), list("abcd")) == 0.5  # too long
    assert bottleneck.char_accuracy(list("bcd"), list("abcd")) == 0.0  # shifted: all wrong
    buckets = bottleneck.REVERSAL_BUCKETS
    assert [bottleneck.bucket_of(n, buckets) for n in (5, 10, 11, 50, 51, 60)] == [0, 0, 1, 4, 5, 5]
    covered = [n for lo, hi in buckets for n in range(lo, hi + 1)]
    assert covered == list(range(5, 61))  # each length in exactly one bucket
    covered = [n for lo, hi in bottleneck.MULTI30K_BUCKETS for n in range(lo, hi + 1)]
    assert covered == list(range(1, 100))


def check_reversal(data):
    r, quick = data["reversal"], bottleneck.SIZES["quick"]["reversal"]
    assert r["buckets"] == [list(b) for b in bottleneck.REVERSAL_BUCKETS]
    assert sum(r["counts"]) == r["test_pairs"] > 0 and r["train_pairs"] == quick["train"]
    assert set(r["models"]) == {"bahdanau", "none"}
    for attention, m in r["models"].items():
        assert m["steps"] == quick["max_steps"] and m["train_seconds"] > 0
        assert len(m["exact"]) == len(m["char_accuracy"]) == len(r["counts"])
        assert all(0 <= v <= 1 for v in m["exact"] + m["char_accuracy"])
    # the two models differ by the attention's parameters only: W (H,H), U (2H->H), v (H)
    H = quick["n_hidden"]
    extra = H * H + (2 * H * H + H) + H
    assert r["models"]["bahdanau"]["params"] - r["models"]["none"]["params"] == extra


def test_quick_run_writes_every_number_and_redraws(tmp_path, capsys):
    r, data = quick_run("bottleneck", tmp_path, "--threads", 1, "--multi30k-steps", 2)
    assert data["quick"] and data["machine"]["threads"] == 1
    assert data["settings"]["decoding"] == "greedy"
    check_reversal(data)
    assert "| reversal: source length |" in r.stdout and "| 51-60 |" in r.stdout
    m30 = data["multi30k"]
    if os.path.isdir(MULTI30K):
        quick = bottleneck.SIZES["quick"]["multi30k"]
        assert m30["pairs"] == {"train": quick["limit"], "val": quick["limit"],
                                "test": quick["limit"]}
        assert sum(m30["counts"]) == quick["limit"] and m30["decoding"] == "greedy"
        for m in m30["models"].values():
            assert len(m["bleu"]) == len(m30["counts"]) and 0 <= m["bleu_overall"] <= 1
            assert m["steps"] == 2 != quick["max_steps"]  # --multi30k-steps, not the size's
        assert "| Multi30k: source tokens |" in r.stdout and "| all | 300 |" in r.stdout
    else:
        assert "skipped" in m30
    (tmp_path / "bottleneck.png").unlink()
    capsys.readouterr()
    bottleneck.main(["--plot-only", "--out", str(tmp_path)])
    assert (tmp_path / "bottleneck.png").exists()
    assert json.loads((tmp_path / "bottleneck.json").read_text()) == data  # not re-measured
    assert "| reversal: source length |" in capsys.readouterr().out


def test_without_multi30k_task_b_is_skipped_with_a_message(tmp_path, capsys):
    bottleneck.main(["--quick", "--out", str(tmp_path), "--multi30k", str(tmp_path / "nope")])
    data = json.loads((tmp_path / "bottleneck.json").read_text())
    assert set(data["multi30k"]) == {"skipped"} and "task B skipped" in data["multi30k"]["skipped"]
    check_reversal(data)
    assert "task B skipped" in capsys.readouterr().out
    assert (tmp_path / "bottleneck.png").read_bytes().startswith(b"\x89PNG")


def test_the_title_states_the_numbers_drawn():
    models = {"bahdanau": {"exact": [1.0, 0.9, 0.8], "char_accuracy": [1.0, 0.95, 0.9]},
              "none": {"exact": [0.5, 0.02, 0.0], "char_accuracy": [0.9, 0.5, 0.3]}}
    data = {"reversal": {"buckets": [[5, 10], [11, 20], [51, 60]], "counts": [3, 4, 5],
                         "models": models},
            "multi30k": {"buckets": [[1, 8], [18, 99]], "counts": [7, 2], "models": {
                "bahdanau": {"bleu": [0.3, 0.25], "bleu_overall": 0.28, "steps": 9, "epochs": 0.5},
                "none": {"bleu": [0.2, 0.1], "bleu_overall": 0.15, "steps": 9, "epochs": 0.5}}}}
    fig = bottleneck.draw(data)
    assert fig.axes[2].get_title().endswith("after 9 steps (0.50 epochs)")
    title = fig._suptitle.get_text()
    assert "attention 100% to 80%, none 50% to 0%" in title
    assert "attention 30.0 to 25.0, none 20.0 to 10.0" in title
    labels = [t.get_text() for t in fig.axes[2].get_xticklabels()]
    assert labels == ["1-8\n(7)", "18+\n(2)"]
    legend = [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
    assert legend[0].endswith("all 28.0") and legend[1].endswith("all 15.0")
    bottleneck.figure.plt.close(fig)


@pytest.mark.parametrize("args, says", [
    (["--bogus"], ["unrecognized arguments: --bogus"]),
    (["--threads", "0"], ["--threads", "must be positive"]),
    (["--seed", "x"], ["--seed", "invalid int value"]),
    (["--multi30k-steps", "0"], ["--multi30k-steps", "must be positive"]),
    (["--quick", "--plot-only"], ["no ", "bottleneck.json to redraw"]),
])
def test_bad_flags_refused_in_one_line(refused, tmp_path, args, says):
    refused(bottleneck, *args, "--out", tmp_path / "empty", says=says)
