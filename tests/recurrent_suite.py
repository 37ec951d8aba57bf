"""The tests rnn.py, lstm.py and gru.py share: the layer against its torch.nn built-in, training,
sampling, and the skeleton (CLI, checkpoints, --resume, Ctrl-C, refusals). Each
tests/test_<script>.py imports them and defines the fixture `script`, so that
`pytest tests/test_lstm.py` checks lstm.py against nn.LSTM exactly as rnn.py is checked against
nn.RNN, and no check is written twice."""
import difflib
import math
import os
import re
from collections import namedtuple

import pytest
import torch

from conftest import (ROOT, TINY_TEXT, check_metrics, check_sampling, ctrl_c_at_call,
                      poison_loss_at, check_refuses_earlier_checkpoints,
                      check_sample_only_draws_by_seed, run_script, unigram_entropy)

Script = namedtuple("Script", "module layer builtin")  # e.g. (lstm, lstm.LSTM, nn.LSTM)

TINY = ["--block-size", 16, "--n-embd", 8, "--n-hidden", 32, "--batch-size", 8,
        "--eval-interval", 10, "--eval-steps", 2, "--max-new-tokens", 20, "--num-samples", 1]
SIBLINGS = ("rnn", "lstm", "gru")


def parts(state):
    """The tensors of a layer's state: (h,) for RNN and GRU, (h, c) for LSTM."""
    return state if isinstance(state, tuple) else (state,)


def random_state(script, num_layers, batch, hidden):
    h = torch.randn(num_layers, batch, hidden, dtype=torch.float64)
    return (h, torch.randn_like(h)) if script.layer.__name__ == "LSTM" else h


def changed_lines(a, b):
    """Lines removed plus lines added from file a to file b: `diff a b | grep -c '^[<>]'`."""
    with open(os.path.join(ROOT, a)) as fa, open(os.path.join(ROOT, b)) as fb:
        lines_a, lines_b = fa.readlines(), fb.readlines()
    # autojunk off: on files this long it would treat blank lines as noise and overcount
    ops = difflib.SequenceMatcher(None, lines_a, lines_b, autojunk=False).get_opcodes()
    return sum(i2 - i1 + j2 - j1 for tag, i1, i2, j1, j2 in ops if tag != "equal")


# ----------------------------------------------------------------------------- the layer

@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("unbatched", [False, True])  # one sequence (T,C), state (L,H)
def test_matches_builtin(script, num_layers, batch_first, with_state, unbatched):
    torch.manual_seed(0)
    ref = script.builtin(5, 7, num_layers=num_layers, batch_first=batch_first).double()
    ours = script.layer(5, 7, num_layers=num_layers, batch_first=batch_first).double()
    ours.load_state_dict(ref.state_dict())
    shape = (6, 5) if unbatched else (3, 6, 5) if batch_first else (6, 3, 5)
    x = torch.randn(shape, dtype=torch.float64)
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    s_ref = s_ours = None
    if with_state:
        s = parts(random_state(script, num_layers, 3, 7))
        s = tuple(t[:, 0] for t in s) if unbatched else s
        s_ref = tuple(t.clone().requires_grad_() for t in s)
        s_ours = tuple(t.clone().requires_grad_() for t in s)
        if len(s) == 1:  # RNN and GRU take h_0 itself, LSTM the pair (h_0, c_0)
            s_ref, s_ours = s_ref[0], s_ours[0]
    out_ref, final_ref = ref(x_ref, s_ref)
    out, final = ours(x_ours, s_ours)
    assert type(final) is type(final_ref)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-10)
    for a, b in zip(parts(final), parts(final_ref), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    w = torch.randn_like(out)  # a loss that weighs every output, and each part of the state
    ws = [torch.randn_like(t) for t in parts(final)]
    for o, f in ((out_ref, final_ref), (out, final)):
        ((o * w).sum() + sum((t * v).sum() for t, v in zip(parts(f), ws))).backward()
    for (name, p_ref), p in zip(ref.named_parameters(), ours.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=0, atol=1e-10, msg=name)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=0, atol=1e-10)
    if with_state:
        for a, b in zip(parts(s_ours), parts(s_ref)):
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-10)


def test_refuses_the_torch_options_it_does_not_write_out(script):
    script.layer(5, 7, bias=True, dropout=0.0, bidirectional=False)  # torch's defaults: taken
    for name, value in [("bias", False), ("dropout", 0.1), ("bidirectional", True)]:
        script.builtin(5, 7, num_layers=2, **{name: value})  # torch has them; we refuse them
        with pytest.raises(ValueError, match=re.escape(f"{name}={value!r}")):
            script.layer(5, 7, num_layers=2, **{name: value})
    with pytest.raises(TypeError, match="proj_size|nonlinearity|unexpected keyword"):
        script.layer(5, 7, proj_size=3)
    with pytest.raises(TypeError, match="positional"):  # torch's 4th positional is another flag
        script.layer(5, 7, 1, True)


def test_state_dict_both_ways_and_same_init(script):
    torch.manual_seed(1)
    ref = script.builtin(4, 6, num_layers=2)
    torch.manual_seed(1)
    ours = script.layer(4, 6, num_layers=2)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for name, value in ref.state_dict().items():  # same seed, same draws: torch's own init
        assert torch.equal(ours.state_dict()[name], value), name
    torch.manual_seed(2)
    other = script.layer(4, 6, num_layers=2)
    ref.load_state_dict(other.state_dict(), strict=True)
    x = torch.randn(5, 2, 4)
    torch.testing.assert_close(ref(x)[0], other(x)[0])
    ours.load_state_dict(script.builtin(4, 6, num_layers=2).state_dict(), strict=True)


# ----------------------------------------------------------------------------- training

def tiny_setup(m, **overrides):
    settings = dict(block_size=16, n_embd=8, n_hidden=32, batch_size=16, lr=1e-2,
                    max_steps=300, eval_interval=100, eval_steps=4)
    cfg = m.Config(**{**settings, **overrides})
    chars = "".join(sorted(set(TINY_TEXT)))
    data = m.split(m.encode(TINY_TEXT, chars), cfg.block_size)
    torch.manual_seed(0)
    model = m.LanguageModel(len(chars), cfg.n_embd, cfg.n_hidden, cfg.n_layer)
    return cfg, chars, data, model


def test_training_drives_loss_far_below_unigram_entropy(script, capsys):
    cfg, chars, data, model = tiny_setup(script.module)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    losses = script.module.train(model, optimizer, data, cfg)
    assert losses["val"] < 0.25 * unigram_entropy(TINY_TEXT), losses
    assert "step   300 | train loss" in capsys.readouterr().out


def test_learning_rate_follows_a_cosine_from_lr_to_a_tenth_of_it(script, capsys):
    cfg, chars, data, model = tiny_setup(script.module, max_steps=20, eval_interval=10,
                                         eval_steps=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    used, step = [], optimizer.step

    def recording_step(*args, **kwargs):  # the rate each update is made with
        used.append(optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    optimizer.step = recording_step
    script.module.train(model, optimizer, data, cfg)
    lo, hi = cfg.lr / 10, cfg.lr  # cosine annealing from hi at step 0 to lo at max_steps
    want = [lo + (hi - lo) * (1 + math.cos(math.pi * s / 20)) / 2 for s in range(20)]
    assert used == pytest.approx(want, rel=1e-12) and used[0] == cfg.lr
    used.clear()
    script.module.train(model, optimizer, data, cfg, step=12)  # a resumed run goes on with it
    assert used == pytest.approx(want[12:], rel=1e-12)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(script, capsys):
    cfg, chars, data, model = tiny_setup(script.module, max_steps=40, eval_interval=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    saved = {}
    poison_loss_at(model, 15)
    with pytest.raises(FloatingPointError, match="at step 15"):
        script.module.train(model, optimizer, data, cfg, save=lambda s: saved.update(step=s))
    assert saved["step"] == 10
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_sampling_is_reproducible_and_top_k_1_is_greedy(script):
    m = script.module
    cfg, chars, data, model = tiny_setup(m)
    prompt = m.encode("def ", chars)[None]
    check_sampling(m, model, prompt)


class FixedLogits(torch.nn.Module):
    """A stand-in model whose next-character logits are `logits`, whatever it has read."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def advance(self, idx, state=None):
        return self.logits.expand(*idx.shape, -1), state  # (B,T,V)


@pytest.mark.parametrize("temperature, top_k", [(1.0, 0), (0.5, 0), (2.0, 0), (1.0, 3),
                                                (0.5, 2), (2.0, 9)])
def test_sampling_draws_from_softmax_of_logits_over_temperature_among_the_top_k(
        script, temperature, top_k):
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -3.0])  # sorted: the top k are the first k
    p = torch.exp(logits / temperature)  # the definitions: p_i ~ exp(z_i / T) ...
    p[top_k or len(p):] = 0  # ... over the k largest z_i only (k = 0: all)
    p /= p.sum()
    torch.manual_seed(0)
    start = torch.zeros(20_000, 1, dtype=torch.long)
    drawn = script.module.sample(FixedLogits(logits), start, 5, temperature, top_k)[:, 1:]
    freq = torch.bincount(drawn.flatten(), minlength=5) / drawn.numel()  # 100k draws
    assert (freq[p == 0] == 0).all()
    torch.testing.assert_close(freq, p, rtol=0, atol=0.01)  # about 6 standard deviations


def test_encode_decode_and_default_corpus(script):
    m = script.module
    assert m.decode(m.encode("cab", "abc").tolist(), "abc") == "cab"
    with pytest.raises(m.BadInput, match="'xz'"):
        m.encode("axz", "abc")
    text = m.stdlib_source()
    assert len(text) > 1_000_000 and "def __init__(self" in text
    assert text == m.stdlib_source()  # the same corpus every time


# ----------------------------------------------------------------------------- the CLI

def test_cli_trains_saves_and_samples(script, tmp_path, tiny_file, monkeypatch, capsys):
    m, name = script.module, script.module.SCRIPT
    monkeypatch.chdir(tmp_path)
    m.main(["--data", str(tiny_file), "--max-steps", "20", *map(str, TINY)])
    out = capsys.readouterr().out
    assert out.startswith(f"{name}.py: ") and " parameters, vocabulary " in out
    assert "step    20 | train loss" in out and "chars/s" in out
    check_metrics(tmp_path / "out" / f"{name}.jsonl", out, "val_loss", "chars_per_s")
    ckpt = torch.load(tmp_path / "out" / f"{name}.pt", weights_only=True)
    assert ckpt["script"] == name and ckpt["step"] == 20
    assert ckpt["vocab"] == "".join(sorted(set(TINY_TEXT)))
    # the real command line, once per script: a fresh interpreter, __main__, exit status 0
    r = run_script(f"{name}.py", "--sample-only", "--prompt", "def ", "--max-new-tokens", 30,
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "def " in r.stdout and "step" not in r.stdout


def test_cli_sample_only_samples_from_the_checkpoints_weights(script, tmp_path, tiny_file,
                                                              monkeypatch, capsys):
    m, name = script.module, script.module.SCRIPT
    monkeypatch.chdir(tmp_path)
    m.main(["--data", str(tiny_file), "--max-steps", "60", *map(str, TINY)])
    path = tmp_path / "out" / f"{name}.pt"
    ckpt = torch.load(path, weights_only=True)
    args = ["--sample-only", "--prompt", "def ", "--max-new-tokens", "40", "--num-samples", "1"]
    capsys.readouterr()
    m.main(args)
    printed = capsys.readouterr().out.split("-" * 80 + "\n")[1]
    # what the checkpoint's model samples under the default --seed, drawn after the model's
    # initialisation, as in run()
    torch.manual_seed(m.Config.seed)
    model = m.LanguageModel(len(ckpt["vocab"]), 8, 32, 1)
    model.load_state_dict(ckpt["model"])
    out = m.sample(model, m.encode("def ", ckpt["vocab"])[None], 40, m.Config.temperature)
    assert printed == m.decode(out[0].tolist(), ckpt["vocab"]) + "\n"
    # the same checkpoint with other weights samples something else
    ckpt["model"] = m.LanguageModel(len(ckpt["vocab"]), 8, 32, 1).state_dict()
    torch.save(ckpt, path)
    m.main(args)
    assert capsys.readouterr().out.split("-" * 80 + "\n")[1] != printed


def test_cli_sample_only_draws_by_seed(script, tmp_path, tiny_file, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    script.module.main(["--data", str(tiny_file), "--max-steps", "10", *map(str, TINY)])
    check_sample_only_draws_by_seed(script.module, capsys, "--max-new-tokens", 40,
                                    "--num-samples", 1, "--temperature", 1.0)


def test_cli_ctrl_c_saves_and_resume_reaches_the_same_weights(script, tmp_path, tiny_file,
                                                               monkeypatch, capsys):
    m, name = script.module, script.module.SCRIPT
    monkeypatch.chdir(tmp_path)
    args = ["--data", str(tiny_file), "--max-steps", "60", *map(str, TINY)]
    m.main([*args, "--out-dir", "whole"])
    get_batch = ctrl_c_at_call(monkeypatch, m, "get_batch", 30)  # at the 30th batch drawn
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        m.main([*args, "--out-dir", "cut"])
    out = capsys.readouterr().out
    assert exit_.value.code == 130
    step = int(out.split("interrupted at step ")[1].split(";")[0])
    cut = torch.load(tmp_path / "cut" / f"{name}.pt", weights_only=True)
    assert cut["step"] == step and 10 < step < 60
    batches = []

    def counted(*args):
        batches.append(1)
        return get_batch(*args)

    monkeypatch.setattr(m, "get_batch", counted)
    m.main([*args, "--out-dir", "cut", "--resume"])
    out = capsys.readouterr().out
    assert f"at step {step}\n" in out  # where it says it resumes, and where it does:
    evals = [s for s in range(step + 1, 61) if s % 10 == 0 or s == 60]
    assert [int(line.split()[1]) for line in out.splitlines() if line.startswith("step ")] == evals
    assert len(batches) == (60 - step) + 2 * 2 * len(evals)  # training, then 2 splits x 2 batches
    whole = torch.load(tmp_path / "whole" / f"{name}.pt", weights_only=True)
    resumed = torch.load(tmp_path / "cut" / f"{name}.pt", weights_only=True)
    assert resumed["step"] == 60
    for key, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


def test_cli_non_finite_loss_exits_1_and_keeps_the_last_good_checkpoint(script, tmp_path,
                                                                         tiny_file, monkeypatch,
                                                                         capsys):
    m, name = script.module, script.module.SCRIPT
    monkeypatch.chdir(tmp_path)
    forward, calls = m.LanguageModel.forward, []

    def poisoned(self, idx, targets=None):  # NaN at the 16th training forward: step 15
        logits, loss = forward(self, idx, targets)
        if torch.is_grad_enabled():
            calls.append(1)
        return logits, loss * float("nan") if len(calls) == 16 else loss

    monkeypatch.setattr(m.LanguageModel, "forward", poisoned)
    with pytest.raises(SystemExit) as exit_:
        m.main(["--data", str(tiny_file), "--max-steps", "40", *map(str, TINY)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1 and len(err) == 1 and "loss is nan at step 15" in err[0]
    assert torch.load(tmp_path / "out" / f"{name}.pt", weights_only=True)["step"] == 10


def test_checkpoint_keeps_the_devices_generator_and_resume_restores_it(script, tmp_path,
                                                                      tiny_file, monkeypatch):
    m, name = script.module, script.module.SCRIPT
    monkeypatch.chdir(tmp_path)
    # the CPU's generator, for real
    cpu = torch.device("cpu")
    states = m.rng_states(cpu)
    assert list(states) == ["cpu"]
    a = torch.rand(5)
    m.set_rng_states(states, cpu)
    assert torch.equal(torch.rand(5), a)
    # a GPU's, with the CUDA and MPS calls stood in for (this machine may have neither)
    for kind, module in (("cuda", torch.cuda), ("mps", torch.mps)):
        device, restored = torch.device(kind, 0), {}
        monkeypatch.setattr(module, "get_rng_state", lambda device, kind=kind: torch.tensor(
            [7 if kind == "cuda" else 9, device.index], dtype=torch.uint8))
        monkeypatch.setattr(module, "set_rng_state",
                            lambda s, device: restored.update(state=s, device=device))
        states = m.rng_states(device)
        assert set(states) == {"cpu", kind}
        assert states[kind].tolist() == [7 if kind == "cuda" else 9, 0]  # the run's device's
        m.set_rng_states(states, device)
        assert torch.equal(restored["state"], states[kind]) and restored["device"] == device
        restored.clear()
        m.set_rng_states({"cpu": states["cpu"]}, device)  # saved on a CPU: left as seeded
        assert not restored
    # earlier versions saved CUDA's state as a list, one a GPU: the run's GPU gets its own
    m.set_rng_states({"cpu": states["cpu"], "cuda": [torch.tensor([1]), torch.tensor([2])]},
                     torch.device("cuda", 1))
    assert restored["state"].tolist() == [2]
    # a CPU run saves the CPU's alone
    args = ["--data", str(tiny_file), "--device", "cpu", *map(str, TINY), "--num-samples", "0"]
    m.main([*args, "--max-steps", "10"])
    rng = torch.load(tmp_path / "out" / f"{name}.pt", weights_only=True)["rng"]
    assert list(rng) == ["cpu"] and torch.equal(rng["cpu"], torch.get_rng_state())


# Refusals run main() in-process (the same code path as the command line, without paying for
# a fresh interpreter each time).

def test_cli_refuses_bad_data(script, tmp_path, tiny_file, refused):
    m = script.module
    refused(m, "--data", "nope.txt", says=["cannot read --data nope.txt", "No such file"])
    refused(m, "--data", tmp_path, says=["cannot read --data"])
    (tmp_path / "empty.txt").write_text("")
    refused(m, "--data", "empty.txt", says=["is empty"])
    (tmp_path / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    refused(m, "--data", "latin1.txt", says=["not UTF-8"])
    (tmp_path / "short.txt").write_text("x" * 100)
    refused(m, "--data", "short.txt", says=["fewer than block_size + 1 = 129"])
    refused(m, "--data", tiny_file, "--prompt", "déf", *TINY, says=["--prompt", "'é'"])
    refused(m, "--data", tiny_file, "--prompt", "", *TINY, says=["--prompt is empty"])


def test_cli_refuses_impossible_settings(script, tiny_file, refused):
    for flag, value in [("--n-hidden", 0), ("--max-steps", 0), ("--block-size", -3),
                        ("--lr", 0), ("--temperature", 0), ("--top-k", -1), ("--n-layer", 0)]:
        refused(script.module, "--data", tiny_file, flag, value, says=[flag, "must be"])


def test_cli_refuses_a_device_this_machine_lacks(script, monkeypatch, refused):
    # forced off, so that the refusal is tested on machines that have either, too
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    refused(script.module, "--device", "cuda", says=["--device cuda is not available here"])
    refused(script.module, "--device", "cuda:1", says=["--device cuda:1 is not available here"])
    refused(script.module, "--device", "mps", says=["--device mps is not available here"])
    refused(script.module, "--device", "gpu", says=["unknown --device 'gpu'"])


@pytest.mark.parametrize("cuda, mps, best", [(True, True, "cuda"), (False, True, "mps"),
                                             (False, False, "cpu")])
def test_device_is_the_best_available_cuda_then_mps_then_cpu(script, monkeypatch, cuda, mps,
                                                              best):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert script.module.pick_device("") == torch.device(best)
    assert script.module.pick_device("cpu") == torch.device("cpu")


def test_cli_refuses_missing_or_foreign_checkpoints(script, tmp_path, tiny_file, refused,
                                                    capsys):
    m, name = script.module, script.module.SCRIPT
    refused(m, "--sample-only", says=["no checkpoint"])
    refused(m, "--resume", "--data", tiny_file, says=["no checkpoint"])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / f"{name}.pt").write_text("not a checkpoint")
    refused(m, "--sample-only", "--out-dir", "junk", says=["not a readable checkpoint"])
    # a sibling's real checkpoint, put where this script looks for its own
    sibling = __import__(SIBLINGS[(SIBLINGS.index(name) + 1) % len(SIBLINGS)])
    sibling.main(["--data", str(tiny_file), "--max-steps", "1", "--out-dir", "other",
                  *map(str, TINY)])
    os.replace(tmp_path / "other" / f"{sibling.SCRIPT}.pt", tmp_path / "other" / f"{name}.pt")
    refused(m, "--sample-only", "--out-dir", "other",
            says=[f"is a checkpoint of {sibling.SCRIPT}.py, not of {name}.py"])
    refused(m, "--resume", "--data", tiny_file, "--out-dir", "other", *TINY,
            says=[f"is a checkpoint of {sibling.SCRIPT}.py, not of {name}.py"])
    m.main(["--data", str(tiny_file), "--max-steps", "10", *map(str, TINY)])
    refused(m, "--sample-only", "--n-hidden", 64,
            says=["--n-hidden 64 differs from the checkpoint's 32"])
    refused(m, "--sample-only", "--n-hidden", m.Config.n_hidden,  # asked for, though the default
            says=[f"--n-hidden {m.Config.n_hidden} differs from the checkpoint's 32"])
    (tmp_path / "other.txt").write_text("something else entirely " * 50)
    refused(m, "--resume", "--data", "other.txt", *TINY, says=["vocabulary differs"])
    refused(m, "--sample-only", "--data", "other.txt",
            says=["--data other.txt is not the text", "--sample-only needs no --data"])
    m.main(["--sample-only", "--data", str(tiny_file), "--num-samples", "0"])  # its own: taken
    check_refuses_earlier_checkpoints(refused, m, tmp_path / "out" / f"{name}.pt", "--resume",
                                      "--data", tiny_file, *TINY)
