"""experiments/memory.py: the adding problem's data is as defined, the --quick run writes its
figure and every number it measured, --plot-only redraws from them, and bad flags are refused
in one line."""
import json
import math
import os
import sys

import pytest
import torch

from conftest import ROOT, quick_run

sys.path.append(os.path.join(ROOT, "experiments"))  # after the scripts: nothing shadows them
import memory  # noqa: E402


def test_adding_problem_as_defined():
    n, T = 500, 11  # odd: the halves are t < 5 and t >= 5
    x, y = memory.adding(n, T, torch.Generator().manual_seed(0))
    assert x.shape == (n, T, 2) and y.shape == (n,)
    values, markers = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert ((markers == 0) | (markers == 1)).all()
    assert (markers[:, :T // 2].sum(1) == 1).all() and (markers[:, T // 2:].sum(1) == 1).all()
    for i in range(n):  # the target, the slow way
        marked = [values[i, t].item() for t in range(T) if markers[i, t] == 1]
        assert y[i].item() == pytest.approx(sum(marked), abs=1e-6)
    # every position of each half gets marked
    assert set(markers[:, :T // 2].argmax(1).tolist()) == set(range(T // 2))
    assert set(markers[:, T // 2:].argmax(1).tolist()) == set(range(T - T // 2))


def test_predicting_the_mean_scores_one_sixth():
    _, y = memory.adding(200_000, 8, torch.Generator().manual_seed(1))
    mse = ((y - 1) ** 2).mean().item()
    # the squared error's variance is E(y-1)^4 - 1/36 = 1/15 - 1/36: its mean's sd is ~0.0004
    assert mse == pytest.approx(memory.BASELINE, abs=0.002)
    assert memory.BASELINE == pytest.approx(1 / 6)


def test_reach_and_the_title_come_from_the_numbers():
    lengths = [10, 25, 50]
    assert memory.reach(lengths, [0.001, 0.002, 0.003]) == 50
    assert memory.reach(lengths, [0.001, 0.2, 0.003]) == 10  # up to the first failure
    assert memory.reach(lengths, [0.2, 0.001, None]) is None
    data = {"lengths": lengths, "gradient_length": 50,
            "runs": {"rnn": {"test_mse": [0.009, 0.17, 0.17]},
                     "lstm": {"test_mse": [0.003, 0.002, 0.004]},
                     "gru": {"test_mse": [0.001, 0.001, 0.001]}},
            "gradients": {c: {"trained": [1.0, 2e-5]} for c in ("rnn", "lstm", "gru")}}
    title = memory.finding(data)
    assert "LSTM and GRU at every T up to 50; RNN only up to T = 10" in title
    assert "LSTM 2e-05" in title


def test_quick_run_writes_every_number_and_redraws(tmp_path, capsys, monkeypatch):
    r, data = quick_run("memory", tmp_path, "--threads", 1)
    quick = memory.SIZES["quick"]
    assert data["quick"] and data["lengths"] == quick["lengths"]
    assert data["machine"]["threads"] == 1
    assert data["baseline"] == pytest.approx(1 / 6) and data["settings"]["lr"] == memory.LR
    assert data["runs"].keys() == data["gradients"].keys() == {"rnn", "lstm", "gru"}
    for cell, run in data["runs"].items():
        for key in ("test_mse", "steps", "seconds", "curve", "diverged"):
            assert len(run[key]) == len(quick["lengths"]), (cell, key)
        assert all(0 < m < 1 for m in run["test_mse"]), (cell, run["test_mse"])
        assert all(s <= quick["max_steps"] for s in run["steps"])
        for steps, curve in zip(run["steps"], run["curve"]):  # a point every `every` steps
            assert len(curve) == steps // quick["every"] and all(c > 0 for c in curve)
        assert f"| {cell} | {quick['lengths'][-1]} |" in r.stdout  # the table printed
        for state in ("trained", "untrained"):
            grads = data["gradients"][cell][state]
            assert len(grads) == quick["lengths"][-1]
            assert all(math.isfinite(g) and g > 0 for g in grads)
    png = (tmp_path / "memory.png").read_bytes()
    (tmp_path / "memory.png").unlink()
    monkeypatch.setattr(memory, "measure", lambda args: pytest.fail("--plot-only measured"))
    memory.main(["--plot-only", "--out", str(tmp_path)])
    assert (tmp_path / "memory.png").read_bytes() == png  # the same figure, from the JSON alone
    assert json.loads((tmp_path / "memory.json").read_text()) == data
    assert "| gru |" in capsys.readouterr().out


def test_the_figure_draws_the_json(tmp_path):
    lengths = [10, 20]
    data = {"machine": {"date": "today", "torch": "x", "threads": 1}, "quick": True,
            "settings": {**memory.SIZES["quick"], "lr": memory.LR, "clip": 1.0, "target": 0.01,
                         "seed": 0},
            "baseline": memory.BASELINE, "lengths": lengths, "gradient_length": 3,
            "runs": {c: {"test_mse": [0.001 * (i + 1), 0.17]}
                     for i, c in enumerate(("rnn", "lstm", "gru"))},
            "gradients": {c: {"trained": [1e-1, 1e-3, 1e-5], "untrained": [1e-2, 1e-20, 1e-48]}
                          for c in ("rnn", "lstm", "gru")}}
    fig = memory.draw(data)
    mse_ax, grad_ax = fig.axes
    lines = [(list(ln.get_xdata()), list(ln.get_ydata())) for ln in mse_ax.get_lines()]
    assert lines[0] == (lengths, [0.001, 0.17]) and lines[2] == (lengths, [0.003, 0.17])
    assert lines[3][1][0] == pytest.approx(1 / 6)  # the baseline
    assert [list(ln.get_ydata()) for ln in grad_ax.get_lines()][1] == [1e-2, 1e-20, 1e-48]
    assert list(grad_ax.get_lines()[0].get_xdata()) == [1, 2, 3]
    assert "RNN, LSTM and GRU only up to T = 10" in fig._suptitle.get_text()
    memory.figure.plt.close(fig)


@pytest.mark.parametrize("args, says", [
    (["--bogus"], ["unrecognized arguments: --bogus"]),
    (["--threads", "0"], ["--threads", "must be positive"]),
    (["--quick", "--plot-only"], ["no ", "memory.json to redraw"]),
    (["--lengths", "10", "5"], ["--lengths must increase", "got 10 5"]),
    (["--lengths", "1", "5"], ["--lengths must increase, each at least 2"]),
    (["--lengths", "0"], ["--lengths", "must be positive"]),
])
def test_bad_flags_refused_in_one_line(refused, tmp_path, args, says):
    refused(memory, *args, "--out", tmp_path / "empty", says=says)
