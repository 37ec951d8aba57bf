"""experiments/ladder.py, attention.py and wordmap.py: each draws its figure from a tiny run, its
JSON holds the numbers the run gave, the figure shows those numbers, --plot-only redraws it,
and bad flags are refused in one line."""
import json
import os
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY_TEXT

sys.path.append(os.path.join(ROOT, "experiments"))
import attention  # noqa: E402
import ladder  # noqa: E402
import seq2seq  # noqa: E402
import transformer  # noqa: E402
import word2vec  # noqa: E402
import wordmap  # noqa: E402


def written(folder, name):
    """The JSON in folder/name.json, after checking that name.png beside it is a PNG."""
    with open(os.path.join(folder, name + ".png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(folder, name + ".json")) as f:
        return json.load(f)


def check_plot_only(module, name, folder, data, monkeypatch):
    """--plot-only redraws the same name.png from the JSON alone (measuring nothing), which it
    leaves as it was."""
    with open(os.path.join(folder, name + ".png"), "rb") as f:
        png = f.read()
    os.remove(os.path.join(folder, name + ".png"))
    monkeypatch.setattr(module, "measure", lambda args: pytest.fail("--plot-only measured"))
    module.main(["--plot-only", "--out", str(folder)])
    assert written(folder, name) == data
    with open(os.path.join(folder, name + ".png"), "rb") as f:
        assert f.read() == png


# ----------------------------------------------------------------------------- the ladder

def logged(path):
    """(step, train, val, seconds) of each evaluation line of a script's log, read here
    independently of ladder.py's parser."""
    rows = []
    for line in open(path).read().splitlines():
        if line.startswith("step "):
            fields = [f.split() for f in line.split("|")]
            rows.append((int(fields[0][1]), float(fields[1][2]), float(fields[2][2]),
                         float(fields[4][0].rstrip("s"))))
    return rows


def test_ladder_draws_each_scripts_curve_from_its_metrics_file(tmp_path, capsys, monkeypatch):
    text = tmp_path / "tiny.txt"
    text.write_text(TINY_TEXT)
    out, runs = tmp_path / "fig", tmp_path / "runs"
    ladder.main(["--quick", "--data", str(text), "--scripts", "rnn", "--seconds", "0.5",
                 "--evals", "2", "--eval-steps", "1", "--trial-steps", "2", "--out", str(out),
                 "--runs-dir", str(runs)])
    data = written(out, "ladder")
    assert list(data["runs"]) == ["rnn"] and data["seconds"] == 0.5 and data["quick"]
    for s, r in data["runs"].items():
        log = open(runs / "run" / f"{s}.log").read()
        assert f"--max-steps {r['max_steps']} " in log.splitlines()[0]
        with open(runs / "run" / f"{s}.jsonl") as f:
            records = [json.loads(line) for line in f]
        assert [(k, a, b, c) for k, a, b, c in zip(r["steps"], r["train"], r["val"],
                                                   r["seconds"])] == \
            [(x["step"], x["train_loss"], x["val_loss"], x["seconds"]) for x in records]
        rows = logged(runs / "run" / f"{s}.log")  # what it printed: the same, rounded
        assert [(k, round(a, 4), round(b, 4), round(c)) for k, a, b, c in zip(
            r["steps"], r["train"], r["val"], r["seconds"])] == rows
        assert rows[0][0] == 0 and rows[-1][0] == r["max_steps"] and len(rows) >= 2
        assert r["params"] == float(log.splitlines()[1].split()[1].rstrip("M"))
        assert r["chars"] == [k * 32 * 128 for k in r["steps"]]  # batch x block, as in its log
        assert r["command"].startswith(f"python {s}.py --max-steps {r['max_steps']}")
        assert "--block-size=128 --batch-size=32" in r["command"]
    n = int(0.9 * len(TINY_TEXT))  # the unigram line: frequencies of the training split
    counts = {c: TINY_TEXT[:n].count(c) + 1 for c in set(TINY_TEXT)}
    total = sum(counts.values())
    expected = -np.mean([np.log(counts[c] / total) for c in TINY_TEXT[n:]])
    assert data["unigram"] == pytest.approx(expected, rel=1e-9)
    assert "| rnn.py |" in capsys.readouterr().out  # the old benchmark's table, from the runs

    fig = ladder.draw(data)  # the figure shows the JSON's numbers, nothing else
    time_ax, chars_ax = fig.axes
    for ax, x in ((time_ax, "seconds"), (chars_ax, "chars")):
        curves = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
        assert len(curves) == 1
        for line, r in zip(curves, data["runs"].values()):
            scale = 1e6 if x == "chars" else 1
            assert list(line.get_xdata()) == pytest.approx(np.array(r[x]) / scale)
            assert list(line.get_ydata()) == r["val"]
        baseline = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert baseline[0].get_ydata()[0] == data["unigram"]
    assert "0.5 s each" in fig._suptitle.get_text()
    check_plot_only(ladder, "ladder", out, data, monkeypatch)


def test_ladder_names_the_leader_and_ignores_a_wobble():
    xs = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    a = [5, 2.0, 1.8, 1.7, 1.65, 1.6, 1.58, 1.57, 1.56, 1.55, 1.54]
    b = [5, 2.5, 2.0, 1.75, 1.6, 1.5, 1.45, 1.4, 1.35, 1.3, 1.25]  # below a from x = 35
    assert ladder.leaders({"a": (xs, a), "b": (xs, b)}, lambda x: f"{x:.0f} s") == \
        "a to 35 s, then b (to 100 s)"
    c = [y + 0.1 for y in a]
    c[5] = a[5] - 0.01  # c dips below a from x = 49.1 to 50.9: under 5% of the range
    assert ladder.leaders({"a": (xs, a), "c": (xs, c)}, str) == "a lowest throughout (to 100)"
    c[5] = a[5] - 0.2  # now from 43.3 to 56.7: a lead
    assert ladder.leaders({"a": (xs, a), "c": (xs, c)}, lambda x: f"{x:.0f}") == \
        "a to 43, then c to 57, then a (to 100)"


def test_ladder_counts_the_characters_each_script_trains_on():
    assert ladder.chars_per_step("mlp") == 64 * 16 and ladder.flags("mlp") == []  # its own
    assert ladder.chars_per_step("gpt") == 32 * 128  # the shared shape, not its batch of 16
    assert ladder.flags("gpt") == ["--block-size=128", "--batch-size=32"]


def test_ladder_refuses_bad_flags(refused, tmp_path):
    refused(ladder, "--scripts", "mlp,bert", says=["unknown bert"])
    refused(ladder, "--seconds", "0", says=["--seconds", "must be positive"])
    refused(ladder, "--data", str(tmp_path / "none.txt"), says=["none.txt", "no such file"])
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    refused(ladder, "--quick", "--data", str(empty), "--out", str(tmp_path),
            says=["is empty"])
    refused(ladder, "--plot-only", "--out", str(tmp_path / "nothing"),
            says=["no ", "ladder.json to redraw"])


# ----------------------------------------------------------------------------- attention

DE = ["ein mann", "eine frau", "ein hund", "ein kind"]
EN = ["a man", "a woman", "a dog", "a child"]
VERBS = [("läuft", "runs"), ("sitzt", "sits"), ("springt", "jumps")]
PLACES = [("im park", "in the park"), ("am strand", "on the beach")]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny seq2seq.py and transformer.py checkpoints, trained through their own CLI in
    seconds: on dates (in dates/) and on a made-up word-level TSV (in words/)."""
    folder = tmp_path_factory.mktemp("attention")
    tsv = folder / "pairs.tsv"
    tsv.write_text("".join(f"{d} {v} {p} .\t{e} {w} {q} .\n" for d, e in zip(DE, EN)
                           for v, w in VERBS for p, q in PLACES), encoding="utf-8")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        common = ["--batch-size", "8", "--eval-steps", "1", "--num-samples", "0"]
        for task, data in (("dates", ["--max-steps", "20", "--eval-interval", "20"]),
                           ("words", ["--data", str(tsv), "--tokens", "word", "--max-steps",
                                      "60", "--eval-interval", "60"])):  # seq2seq ends: <eos>
            seq2seq.main([*data, *common, "--n-embd", "8", "--n-hidden", "16",
                          "--out-dir", task])
            transformer.main([*data, *common, "--n-embd", "8", "--n-hidden", "16", "--n-head",
                              "2", "--n-layer", "1", "--out-dir", task])
    finally:
        os.chdir(cwd)
    return folder


def test_attention_maps_are_the_scripts_own_and_labelled_with_their_tokens(checkpoints,
                                                                           tmp_path,
                                                                           monkeypatch):
    out = tmp_path / "fig"
    attention.main(["--dates", str(checkpoints / "dates"), "--multi30k",
                    str(checkpoints / "words"), "--sentence", "ein hund springt am strand .",
                    "--bleu", "seq2seq=12.5", "transformer=7.25", "--beam-size", "3",
                    "--out", str(out)])
    data = written(out, "attention")
    panels = {(p["task"], p["model"]): p for p in data["panels"]}
    assert list(panels) == [("date", "seq2seq"), ("date", "transformer"),
                            ("multi30k", "seq2seq"), ("multi30k", "transformer")]
    assert panels["multi30k", "seq2seq"]["bleu"] == 12.5
    assert panels["multi30k", "transformer"]["bleu"] == 7.25
    ends = []
    for (task, name), p in panels.items():
        module = attention.MODELS[name]
        ckpt = torch.load(checkpoints / ("dates" if task == "date" else "words") /
                          f"{name}.pt", weights_only=True)
        cfg = module.Config(**{k: ckpt["config"][k] for k in module.MODEL_ARGS})
        model = module.make_model(ckpt["vocab"], cfg)
        model.load_state_dict(ckpt["model"])
        text = attention.DATE if task == "date" else "ein hund springt am strand ."
        tokens = module.TOKENIZERS[cfg.tokens](text)
        # the source axis: the tokens the model read, then <eos>
        assert p["source"] == [t if t in ckpt["vocab"]["src"] else "<unk>" for t in tokens] \
            + ["<eos>"]
        beam = 1 if task == "date" else 3
        assert p["beam_size"] == beam
        src = torch.tensor([module.make_examples([(tokens, [])], ckpt["vocab"])[0][0]])
        ids, expected = module.sample(model, src, attention.MAX_NEW_TOKENS, beam)[0]
        # the output axis: the script's own translation, then the <eos> it wrote
        written_out = [ckpt["vocab"]["tgt"][i] for i in ids]
        stopped = len(ids) < attention.MAX_NEW_TOKENS  # by writing <eos>
        assert p["output"] == written_out + ["<eos>"] * stopped
        ends.append(stopped)
        a = torch.tensor(p["attention"])
        assert a.shape == (len(p["output"]), len(p["source"]))
        torch.testing.assert_close(a.sum(1), torch.ones(len(a), dtype=a.dtype))
        if name == "transformer":  # the mean over heads; head 0 is the script's own
            heads = torch.tensor(p["heads"])
            assert heads.shape[0] == 2
            torch.testing.assert_close(heads.mean(0), a)
            torch.testing.assert_close(heads[0, :len(ids)], expected)
        else:
            torch.testing.assert_close(a[:len(ids)], expected)

    assert any(ends)  # the <eos> row is drawn, when the model wrote one
    fig = attention.draw(data)  # each heatmap is its panel's matrix, labelled with its tokens
    for ax, p in zip(fig.axes, data["panels"]):
        assert np.array_equal(ax.images[0].get_array(), np.array(p["attention"]))
        shown = ["␣" if t == " " else t for t in p["source"]]
        assert [t.get_text() for t in ax.get_xticklabels()] == shown
        assert [t.get_text() for t in ax.get_yticklabels()] == p["output"]
        peak = np.mean(np.max(p["attention"], axis=1))
        assert f"mean peak weight {peak:.2f}" in ax.get_xlabel()
    assert "␣" in [t.get_text() for t in fig.axes[0].get_xticklabels()]  # the date's spaces
    assert "test BLEU 12.50, beam 3" in fig.axes[2].get_xlabel()  # under its heatmap
    check_plot_only(attention, "attention", out, data, monkeypatch)


def test_attention_refuses_missing_checkpoints_and_bleu(refused, checkpoints, tmp_path):
    dates, words = str(checkpoints / "dates"), str(checkpoints / "words")
    refused(attention, "--dates", str(tmp_path), "--out", str(tmp_path),
            says=["no checkpoint at", "seq2seq.pt"])
    refused(attention, "--dates", dates, "--multi30k", dates, "--out", str(tmp_path),
            says=["no BLEU for seq2seq.pt", "--bleu seq2seq="])
    refused(attention, "--dates", dates, "--multi30k", words, "--bleu", "seq2seq=x",
            says=["--bleu", "expected seq2seq=VALUE"])
    refused(attention, "--bleu", "gpt=3", says=["--bleu", "got 'gpt=3'"])
    refused(attention, "--beam-size", "0", says=["--beam-size", "must be positive"])


# ----------------------------------------------------------------------------- the word map

PAIRS = [("france", "paris"), ("germany", "berlin"), ("italy", "rome"), ("spain", "madrid")]


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    """A tiny word2vec.py checkpoint, trained through its CLI on a made-up text that holds
    the pairs and man, woman, king, queen."""
    folder = tmp_path_factory.mktemp("wordmap")
    lines = [f"{capital} is the capital of {country}" for country, capital in PAIRS]
    lines += ["the king is a man", "the queen is a woman", "a man and a woman"]
    (folder / "text.txt").write_text("\n".join(lines * 20))
    word2vec.main(["--data", str(folder / "text.txt"), "--min-count", "1", "--dim", "8",
                   "--epochs", "1", "--out-dir", str(folder), "--prompt", "king"])
    return folder


def test_word_map_projects_the_checkpoints_vectors(vectors, tmp_path, monkeypatch):
    out = tmp_path / "fig"
    wordmap.main(["--checkpoint", str(vectors), "--pairs", "France:Paris", "germany:berlin",
                  "italy:rome", "germany:bonn", "spain:madrid", "japan:paris", "--out", str(out)])
    data = written(out, "word2vec")
    assert data["pairs"] == [list(p) for p in PAIRS]  # a pair with a word unknown: left out
    assert data["left_out"] == [["germany", "bonn"], ["japan", "paris"]]
    ckpt = torch.load(vectors / "word2vec.pt", weights_only=True)
    stoi = {w: i for i, w in enumerate(ckpt["vocab"])}
    w = ckpt["model"]["emb_in.weight"].double().numpy()
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    words = [c for c, _ in PAIRS] + [c for _, c in PAIRS]
    x = w[[stoi[t] for t in words]]
    x -= x.mean(0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    xy = np.array(data["xy"])
    for k in range(2):  # the PCA coordinates, up to each component's sign
        assert np.allclose(np.abs(xy[:, k]), np.abs(u[:, k] * s[k]), atol=1e-6)
    assert data["variance_shown"] == pytest.approx((s[:2] ** 2).sum() / (s ** 2).sum())
    offsets = w[[stoi[c] for _, c in PAIRS]] - w[[stoi[c] for c, _ in PAIRS]]
    offsets /= np.linalg.norm(offsets, axis=1, keepdims=True)
    cos = offsets @ offsets.T
    assert data["offset_cosine"] == pytest.approx(cos[~np.eye(4, dtype=bool)].mean(), abs=1e-6)
    assert data["analogies_asked"] == 12 and 0 <= data["analogies_right"] <= 12
    assert len(data["man_king_woman"]) == 5 and "woman" not in data["man_king_woman"]

    fig = wordmap.draw(data)  # the points drawn are the JSON's
    assert np.allclose(fig.axes[0].collections[0].get_offsets(), xy)
    labels = [t.get_text().strip() for t in fig.axes[0].texts if t.get_text()]  # no arrows
    assert labels == [t for pair in PAIRS for t in pair]
    check_plot_only(wordmap, "word2vec", out, data, monkeypatch)


def test_word_map_labels_do_not_overlap():
    labels = [("paris", 0.0, 0.0), ("rome", 0.02, 0.01), ("madrid", 5.0, 0.0)]
    heights = wordmap.spread(labels, gap=0.1, char=0.1, right=True)
    assert heights[1] == 0.01 and heights[0] == pytest.approx(-0.09)  # moved below rome
    assert heights[2] == 0.0  # far to the side: stays


def test_word_map_refuses_bad_input(refused, vectors, tmp_path):
    refused(wordmap, "--checkpoint", str(tmp_path), says=["no checkpoint at"])
    refused(wordmap, "--checkpoint", str(vectors), "--pairs", "france:paris", "japan:tokyo",
            says=["only 1 of the pairs", "need 3"])
    refused(wordmap, "--checkpoint", str(vectors), "--eval-vocab", "3",
            says=["only 0 of the pairs"])
    refused(wordmap, "--pairs", "france", says=["--pairs", "france"])
