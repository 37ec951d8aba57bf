"""Shared test helpers: run a script's CLI, make tiny corpora, find ../shared/data."""
import json
import math
import os
import signal
import subprocess
import sys
from collections import Counter

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
sys.path.insert(0, ROOT)  # the scripts sit at the top level: `import rnn`

# A short text with plenty of repetition: small models learn it in a few hundred steps.
TINY_TEXT = ("def add(a, b):\n    return a + b\n\n" * 40
             + "def mul(a, b):\n    return a * b\n\n" * 40)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests' models are tiny: one intra-op thread is faster than two fighting over them
    (and much faster on a busy machine, where OpenMP threads wait for each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ctrl_c_at_call(monkeypatch, module, name, n):
    """Replace module.<name> by a wrapper that sends this process a real SIGINT (Ctrl-C) during
    its n-th call, before calling through. Returns the original, to put back with
    monkeypatch.setattr(module, name, original)."""
    original, calls = getattr(module, name), []

    def wrapper(*args):
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args)

    monkeypatch.setattr(module, name, wrapper)
    return original


def run_script(script, *args, cwd, timeout=120):
    """Run `python <script> args...` in cwd (one thread, as in-process tests); returns the
    CompletedProcess (text mode)."""
    cmd = [sys.executable, os.path.join(ROOT, script), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def quick_run(name, out, *args, drawn=None):
    """Run `experiments/<name>.py --quick --out out` and check what it leaves there: exactly
    drawn.png (a PNG small enough for the README) and drawn.json, drawn the experiment's name
    unless it draws another's figure. Returns the finished process and the JSON's numbers."""
    drawn = drawn or name
    r = run_script(f"experiments/{name}.py", "--quick", "--out", out, *args, cwd=out)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == [f"{drawn}.json", f"{drawn}.png"]
    png = open(os.path.join(out, f"{drawn}.png"), "rb").read()
    assert png.startswith(b"\x89PNG") and len(png) < 200_000
    with open(os.path.join(out, f"{drawn}.json")) as f:
        return r, json.load(f)


@pytest.fixture
def refused(tmp_path, monkeypatch, capsys):
    """refused(module, *args, says=[...]): module.main(args), run in tmp_path, must exit with
    status 2 and print one line on stderr, with every fragment of `says` in it."""
    monkeypatch.chdir(tmp_path)

    def check(module, *args, says):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            module.main([str(a) for a in args])
        err = capsys.readouterr().err
        assert exit_.value.code == 2, (exit_.value.code, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        for fragment in says:
            assert fragment in lines[0], (fragment, lines[0])
    return check


def check_refuses_earlier_checkpoints(refused, module, path, *args):
    """The checkpoint at `path`, put back into the layout earlier versions of the scripts wrote
    (the random state as the CPU generator's one tensor), is refused in one line."""
    ckpt = torch.load(path, weights_only=True)
    ckpt["rng"] = ckpt["rng"]["cpu"]
    torch.save(ckpt, path)
    refused(module, *args, says=["written by an earlier", "train anew"])


@pytest.fixture
def tiny_file(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


def unigram_entropy(text):
    """Entropy of the text's characters in nats: the loss of a model that learned only their
    frequencies, which a trained model must beat by far."""
    counts = Counter(text)
    return -sum(n / len(text) * math.log(n / len(text)) for n in counts.values())


def check_sampling(module, model, prompt):
    """module.sample continues `prompt` (1,T): reproducible under a seed, different under
    another, the prompt kept, and top_k=1 equal to greedy decoding done the slow way (the
    model rerun on the whole text for every new token)."""
    n = prompt.shape[1]
    torch.manual_seed(3)
    a = module.sample(model, prompt, 30, temperature=1.0)
    torch.manual_seed(3)
    b = module.sample(model, prompt, 30, temperature=1.0)
    torch.manual_seed(4)
    c = module.sample(model, prompt, 30, temperature=1.0)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, :n], prompt) and a.shape == (1, n + 30)
    greedy = module.sample(model, prompt, 10, top_k=1)
    idx = prompt
    for _ in range(10):
        logits, _ = model(idx)
        idx = torch.cat((idx, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(greedy, idx)


def poison_loss_at(model, step):
    """Make the training loss NaN at `step`: the (step+1)-th forward with grad enabled."""
    forward, calls = model.forward, []

    def poisoned(idx, targets=None):
        logits, loss = forward(idx, targets)
        if torch.is_grad_enabled():
            calls.append(1)
        return logits, loss * float("nan") if len(calls) == step + 1 else loss

    model.forward = poisoned


def check_padding_invariance(module, model, examples):
    """Extra padding on source and target, or a sentence run alone, changes no real position's
    logits and not the loss (module is seq2seq or transformer; model in float64)."""
    src, idx, targets = module.collate(examples, "cpu")
    logits, loss = model(src, idx, targets)

    def more_padding(x, extra):
        return torch.cat((x, x.new_full((x.shape[0], extra), module.PAD)), dim=1)

    logits2, loss2 = model(more_padding(src, 3), more_padding(idx, 2), more_padding(targets, 2))
    real = targets != module.PAD
    torch.testing.assert_close(logits2[:, :idx.shape[1]][real], logits[real], rtol=0, atol=1e-10)
    torch.testing.assert_close(loss2, loss, rtol=0, atol=1e-10)
    for i, example in enumerate(examples):  # each sentence alone, with no padding at all
        alone, _ = model(*module.collate([example], "cpu"))
        torch.testing.assert_close(alone[0], logits[i, :alone.shape[1]], rtol=0, atol=1e-10)
    return logits, loss, targets


def check_sample_only_draws_by_seed(module, capsys, *args):
    """module.main(--sample-only args), run where its checkpoint is, prints the same samples
    under the same --seed and others under another one (not the checkpoint's random state)."""
    def samples(seed):
        capsys.readouterr()
        module.main(["--sample-only", "--seed", str(seed), *map(str, args)])
        return capsys.readouterr().out.split("-" * 80 + "\n")[1:]

    first = samples(1)
    assert first and samples(1) == first and samples(2) != first


def check_metrics(path, printed, *own):
    """The metrics file at `path` holds one JSON object per evaluation the run printed (in
    `printed`, its stdout): the step, the losses and rate as printed (to the digits shown),
    seconds, and the script's `own` keys. Returns the records."""
    with open(path) as f:
        records = [json.loads(line) for line in f]
    lines = [[field.split() for field in line.split(" | ")] for line in printed.splitlines()
             if line.startswith("step ")]
    assert [r["step"] for r in records] == [int(line[0][1]) for line in lines]
    for r, line in zip(records, lines):
        assert {"step", "train_loss", "seconds", *own} <= r.keys()
        assert f"{r['train_loss']:.4f}" == line[1][-1]
        rate = next(k for k in r if k.endswith("_per_s"))
        assert f"{r[rate] / 1e3:.1f}k" == line[[f[-1] for f in line].index(
            rate.removesuffix("_per_s") + "/s")][0]
        if "val_loss" in r:
            assert f"{r['val_loss']:.4f}" == line[2][-1]
    return records
