"""experiments/cost.py: the --quick run writes its figure and every number it measured, redraws
from them, fits slopes right, and measures saved-for-backward memory exactly."""
import json
import math
import os
import sys

import pytest
import torch

from conftest import ROOT, quick_run

sys.path.append(os.path.join(ROOT, "experiments"))  # after the scripts: nothing shadows them
import cost  # noqa: E402
import gpt  # noqa: E402


def test_quick_run_writes_every_number_and_redraws(tmp_path, capsys):
    r, data = quick_run("cost", tmp_path)
    quick = cost.SIZES["quick"]
    repeats = {"step_seconds": "repeats", "token_seconds": "token_repeats"}
    assert data["quick"] and data["lengths"] == quick["lengths"]
    assert data["contexts"] == quick["contexts"] and data["machine"]["threads"] == 1
    for key, models, xs in (("step_seconds", cost.LAYERS, quick["lengths"]),
                            ("saved_bytes", cost.LAYERS, quick["lengths"]),
                            ("token_seconds", cost.GENERATORS, quick["contexts"])):
        assert data[key].keys() == models.keys()
        for name, values in data[key].items():
            assert len(values) == len(xs), (key, name)
            assert all(math.isfinite(v) and v > 0 for v in values), (key, name, values)
            assert f"| {name} |" in r.stdout  # the tables printed, a row per model
            if key != "saved_bytes":  # every repeat kept, the medians drawn
                runs = data["repeats"][key][name]
                assert [len(t) for t in runs] == [quick[repeats[key]]] * len(xs), (key, name)
                assert all(math.isfinite(t) and t > 0 for ts in runs for t in ts), (key, name)
                assert values == [sorted(ts)[len(ts) // 2] for ts in runs]
    # the memory is exact: doubling n doubles the fused attention's bytes (nothing n x n)
    fused = data["saved_bytes"]["attention, fused"]
    assert fused[1:] == [2 * b for b in fused[:-1]]
    (tmp_path / "cost.png").unlink()
    cost.main(["--plot-only", "--out", str(tmp_path)])
    assert (tmp_path / "cost.png").exists()
    assert json.loads((tmp_path / "cost.json").read_text()) == data  # redrawn, not re-measured
    assert "| attention, fused |" in capsys.readouterr().out


def test_slope_of_a_known_power_law():
    xs = [2 ** i for i in range(4, 12)]  # 16 .. 2048
    assert cost.slope(xs, [3.0 * x ** 2.5 for x in xs]) == pytest.approx(2.5, abs=1e-12)
    assert cost.slope(xs, [7.0] * len(xs)) == pytest.approx(0.0, abs=1e-12)
    # linear below, quadratic over the upper range: the fit sees only the upper range
    ys = [x ** 2 if x >= xs[-1] / cost.FIT_FROM else 1e6 * x for x in xs]
    assert cost.fitted(xs, ys) == pytest.approx(2.0, abs=1e-12)
    assert cost.slope(xs, ys) < 1.5


def test_slopes_in_the_legends_and_title():
    lengths, contexts = [16, 32, 64, 128], [8, 16, 32, 64]
    data = {"machine": {"date": "today", "torch": "x", "threads": 1, "cores": 2}, "quick": True,
            "settings": {**cost.SIZES["quick"], "heads": 1, "fit_from": cost.FIT_FROM},
            "lengths": lengths, "contexts": contexts,
            "step_seconds": {m: [1e-3 * n ** 2 for n in lengths] for m in cost.LAYERS},
            "saved_bytes": {m: [1e3 * n for n in lengths] for m in cost.LAYERS},
            "token_seconds": {m: [1e-4 * n ** 0.5 for n in contexts] for m in cost.GENERATORS}}
    fig = cost.draw(data)
    layers, tokens = [[t.get_text() for t in ax.get_legend().get_texts()]
                      for ax in (fig.axes[3], fig.axes[2])]
    assert layers == [f"{m:23s} 2.00   1.00" for m in cost.LAYERS]  # time, memory
    assert tokens == [f"{m:14s} 0.50" for m in cost.GENERATORS]
    title = fig._suptitle.get_text()
    assert "$n^{2.0}$" in title and "$n^{1.0}$" in title and "$S^{0.5}$" in title
    cost.figure.plt.close(fig)


def test_saved_bytes_counts_each_storage_once_without_parameters():
    torch.manual_seed(0)
    linear, x = torch.nn.Linear(3, 5), torch.randn(7, 3, requires_grad=True)
    assert cost.saved_bytes(lambda: linear(x), linear.parameters()) == 7 * 3 * 4  # x only
    assert cost.saved_bytes(lambda: linear(x)) == 7 * 3 * 4 + 5 * 3 * 4  # x and the weight
    assert cost.saved_bytes(lambda: x * x.t().t()) == 7 * 3 * 4  # x and a view of it: once


def test_written_out_attention_keeps_the_n_by_n_matrix():
    B, h, n, hs = 2, 3, 8, 4
    q, k, v = (torch.randn(B, h, n, hs, requires_grad=True) for _ in range(3))
    # by hand: q, k and v, the causal mask (n,n) bool, softmax's output (B,h,n,n) float32
    assert cost.saved_bytes(lambda: gpt.attention(q, k, v)) == 3 * 4 * B * h * n * hs \
        + n * n + 4 * B * h * n * n
    # the layers: written out, the n^2 part (softmax's output and the mask) grows 4x when n
    # doubles, the rest 2x; fused, everything grows 2x
    d, B = 128, 2
    written, fused = cost.make_layer("attention, written out", d), cost.make_layer(
        "attention, fused", d)
    assert not written.fused and fused.fused and written.n_head == 2

    def saved(layer, n):
        x = torch.randn(B, n, d, requires_grad=True)
        return cost.saved_bytes(lambda: layer(x), list(layer.parameters()))

    for n in (16, 32):
        assert saved(written, 2 * n) - 2 * saved(written, n) == 2 * (4 * B * 2 + 1) * n * n
        assert saved(fused, 2 * n) == 2 * saved(fused, n)


@pytest.mark.parametrize("args, says", [
    (["--bogus"], ["unrecognized arguments: --bogus"]),
    (["--threads", "0"], ["--threads", "must be positive"]),
    (["--quick", "--plot-only"], ["no ", "cost.json to redraw"]),
])
def test_bad_flags_refused_in_one_line(refused, tmp_path, args, says):
    refused(cost, *args, "--out", tmp_path / "empty", says=says)
