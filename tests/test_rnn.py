"""rnn.py against torch.nn.RNN, and the skeleton every sibling script shares."""
import math
import os
import signal
import subprocess
import sys
from collections import Counter

import pytest
import torch
import torch.nn as nn

import rnn
from conftest import ROOT, TINY_TEXT, run_script

TINY = ["--block-size", 16, "--n-embd", 8, "--n-hidden", 32, "--batch-size", 8,
        "--eval-interval", 10, "--eval-steps", 2, "--max-new-tokens", 20, "--num-samples", 1]


# ----------------------------------------------------------------------------- the layer

@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_matches_nn_rnn(num_layers, batch_first, with_h0):
    torch.manual_seed(0)
    ref = nn.RNN(5, 7, num_layers=num_layers, batch_first=batch_first).double()
    ours = rnn.RNN(5, 7, num_layers=num_layers, batch_first=batch_first).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn((3, 6, 5) if batch_first else (6, 3, 5), dtype=torch.float64)
    h0 = torch.randn(num_layers, 3, 7, dtype=torch.float64) if with_h0 else None
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    h0_ref = h0.clone().requires_grad_() if with_h0 else None
    h0_ours = h0.clone().requires_grad_() if with_h0 else None
    out_ref, hn_ref = ref(x_ref, h0_ref)
    out, hn = ours(x_ours, h0_ours)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(hn, hn_ref, rtol=0, atol=1e-10)
    w = torch.randn_like(out)  # a loss that weighs every output differently
    ((out_ref * w).sum() + hn_ref.sum()).backward()
    ((out * w).sum() + hn.sum()).backward()
    for (name, p_ref), p in zip(ref.named_parameters(), ours.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=0, atol=1e-10, msg=name)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=0, atol=1e-10)
    if with_h0:
        torch.testing.assert_close(h0_ours.grad, h0_ref.grad, rtol=0, atol=1e-10)


def test_state_dict_both_ways_and_same_init():
    torch.manual_seed(1)
    ref = nn.RNN(4, 6, num_layers=2)
    torch.manual_seed(1)
    ours = rnn.RNN(4, 6, num_layers=2)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for name, value in ref.state_dict().items():  # same seed, same draws: nn.RNN's own init
        assert torch.equal(ours.state_dict()[name], value), name
    torch.manual_seed(2)
    other = rnn.RNN(4, 6, num_layers=2)
    ref.load_state_dict(other.state_dict(), strict=True)
    x = torch.randn(5, 2, 4)
    torch.testing.assert_close(ref(x)[0], other(x)[0])
    ours.load_state_dict(nn.RNN(4, 6, num_layers=2).state_dict(), strict=True)


# ----------------------------------------------------------------------------- training

def unigram_entropy(text):
    counts = Counter(text)
    return -sum(n / len(text) * math.log(n / len(text)) for n in counts.values())


def tiny_setup(**overrides):
    settings = dict(block_size=16, n_embd=8, n_hidden=32, batch_size=16, lr=1e-2,
                    max_steps=300, eval_interval=100, eval_steps=4)
    cfg = rnn.Config(**{**settings, **overrides})
    chars = "".join(sorted(set(TINY_TEXT)))
    data = rnn.split(rnn.encode(TINY_TEXT, chars), cfg.block_size)
    torch.manual_seed(0)
    model = rnn.LanguageModel(len(chars), cfg.n_embd, cfg.n_hidden, cfg.n_layer)
    return cfg, chars, data, model


def test_training_drives_loss_far_below_unigram_entropy(capsys):
    cfg, chars, data, model = tiny_setup()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    losses = rnn.train(model, optimizer, data, cfg)
    assert losses["val"] < 0.25 * unigram_entropy(TINY_TEXT), losses
    assert "step   300 | train loss" in capsys.readouterr().out


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(capsys):
    cfg, chars, data, model = tiny_setup(max_steps=40, eval_interval=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    saved = {}
    forward = model.forward

    def poisoned(idx, targets=None):  # the loss turns to NaN once step 15 is reached
        logits, loss = forward(idx, targets)
        return logits, loss * float("nan") if model.calls_left == 0 else loss

    def counting(idx, targets=None):
        if torch.is_grad_enabled():
            model.calls_left -= 1
        return poisoned(idx, targets)

    model.calls_left = 16
    model.forward = counting
    with pytest.raises(FloatingPointError, match="at step 15"):
        rnn.train(model, optimizer, data, cfg, save=lambda s: saved.update(step=s))
    assert saved["step"] == 10
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_sampling_is_reproducible_and_top_k_1_is_greedy():
    cfg, chars, data, model = tiny_setup()
    prompt = rnn.encode("def ", chars)[None]
    torch.manual_seed(3)
    a = rnn.sample(model, prompt, 30, temperature=1.0)
    torch.manual_seed(3)
    b = rnn.sample(model, prompt, 30, temperature=1.0)
    torch.manual_seed(4)
    c = rnn.sample(model, prompt, 30, temperature=1.0)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, :4], prompt) and a.shape == (1, 34)
    greedy = rnn.sample(model, prompt, 10, top_k=1)
    idx = prompt
    for _ in range(10):  # greedy decoding the slow way: rerun the whole context each time
        logits, _ = model(idx)
        idx = torch.cat((idx, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(greedy, idx)


def test_encode_decode_and_default_corpus():
    assert rnn.decode(rnn.encode("cab", "abc").tolist(), "abc") == "cab"
    with pytest.raises(rnn.BadInput, match="'xz'"):
        rnn.encode("axz", "abc")
    text = rnn.stdlib_source()
    assert len(text) > 1_000_000 and "def __init__(self" in text
    assert text == rnn.stdlib_source()  # the same corpus every time


# ----------------------------------------------------------------------------- the CLI

def test_cli_trains_saves_and_samples(tmp_path, tiny_file):
    r = run_script("rnn.py", "--data", tiny_file, "--max-steps", 20, *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "step    20 | train loss" in r.stdout and "chars/s" in r.stdout
    ckpt = torch.load(tmp_path / "out" / "rnn.pt", weights_only=True)
    assert ckpt["script"] == "rnn" and ckpt["step"] == 20
    assert ckpt["vocab"] == "".join(sorted(set(TINY_TEXT)))
    r = run_script("rnn.py", "--sample-only", "--prompt", "def ", "--max-new-tokens", 30,
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "def " in r.stdout and "step" not in r.stdout


def test_cli_ctrl_c_saves_and_resume_reaches_the_same_weights(tmp_path, tiny_file):
    args = ["--data", tiny_file, "--max-steps", 200, *TINY]
    r = run_script("rnn.py", *args, "--out-dir", "whole", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cmd = [sys.executable, os.path.join(ROOT, "rnn.py"), *map(str, args), "--out-dir", "cut"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for line in proc.stdout:  # wait until training is under way
        if line.startswith("step    10"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted at step" in out and "Traceback" not in err
    step = int(out.split("interrupted at step ")[1].split(";")[0])
    cut = torch.load(tmp_path / "cut" / "rnn.pt", weights_only=True)
    assert cut["step"] == step and 10 <= step < 200
    r = run_script("rnn.py", *args, "--out-dir", "cut", "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"step {step:5d} |" not in r.stdout and "step   200 |" in r.stdout
    whole = torch.load(tmp_path / "whole" / "rnn.pt", weights_only=True)
    resumed = torch.load(tmp_path / "cut" / "rnn.pt", weights_only=True)
    assert resumed["step"] == 200
    for name, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][name]), name


# Refusals run main() in-process (the same code path as the command line, without paying for
# a fresh interpreter each time).

def test_cli_refuses_bad_data(tmp_path, tiny_file, refused):
    refused(rnn, "--data", "nope.txt", says=["cannot read --data nope.txt", "No such file"])
    refused(rnn, "--data", tmp_path, says=["cannot read --data"])
    (tmp_path / "empty.txt").write_text("")
    refused(rnn, "--data", "empty.txt", says=["is empty"])
    (tmp_path / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    refused(rnn, "--data", "latin1.txt", says=["not UTF-8"])
    (tmp_path / "short.txt").write_text("x" * 100)
    refused(rnn, "--data", "short.txt", says=["fewer than block_size + 1 = 129"])
    refused(rnn, "--data", tiny_file, "--prompt", "déf", *TINY, says=["--prompt", "'é'"])


def test_cli_refuses_impossible_settings(tiny_file, refused):
    for flag, value in [("--n-hidden", 0), ("--max-steps", 0), ("--block-size", -3),
                        ("--lr", 0), ("--temperature", 0), ("--top-k", -1), ("--n-layer", 0)]:
        refused(rnn, "--data", tiny_file, flag, value, says=[flag, "must be"])


def test_cli_refuses_missing_or_foreign_checkpoints(tmp_path, tiny_file, refused):
    refused(rnn, "--sample-only", says=["no checkpoint"])
    refused(rnn, "--resume", "--data", tiny_file, says=["no checkpoint"])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "rnn.pt").write_text("not a checkpoint")
    refused(rnn, "--sample-only", "--out-dir", "junk", says=["not a readable checkpoint"])
    (tmp_path / "other").mkdir()
    torch.save({"script": "lstm", "config": {}}, tmp_path / "other" / "rnn.pt")
    refused(rnn, "--sample-only", "--out-dir", "other", says=["lstm.py, not of rnn.py"])
    rnn.main(["--data", str(tiny_file), "--max-steps", "10", *map(str, TINY)])
    refused(rnn, "--sample-only", "--n-hidden", 64,
            says=["--n-hidden 64 differs from the checkpoint's 32"])
    (tmp_path / "other.txt").write_text("something else entirely " * 50)
    refused(rnn, "--resume", "--data", "other.txt", *TINY, says=["vocabulary differs"])
