"""mlp.py: its hand-written backward pass against autograd, its layers against torch's."""
import itertools
import math
import shutil

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mlp
import rnn
from conftest import (TINY_TEXT, check_metrics, check_refuses_earlier_checkpoints,
                      check_sample_only_draws_by_seed, check_sampling, ctrl_c_at_call,
                      run_script, unigram_entropy)

TINY = ["--block-size", 8, "--n-embd", 8, "--n-hidden", 32, "--batch-size", 8,
        "--eval-interval", 10, "--eval-steps", 2, "--max-new-tokens", 20, "--num-samples", 1]
CHARS = "".join(sorted(set(TINY_TEXT)))


def assert_grads_equal(ours, reference):
    """Every parameter of `ours` has the .grad of the same-named one in `reference`."""
    grads = dict(reference.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=0, atol=1e-10, msg=name)


# ----------------------------------------------------------------------------- the layer

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 5)])
def test_linear_matches_nn_linear_forward_and_backward(bias, shape):
    torch.manual_seed(0)
    ref = nn.Linear(5, 7, bias=bias).double()
    ours = mlp.Linear(5, 7, bias=bias).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(shape, dtype=torch.float64)
    x_ref = x.clone().requires_grad_()
    y_ref = ref(x_ref)
    torch.testing.assert_close(ours(x), y_ref, rtol=0, atol=1e-10)
    dy = torch.randn_like(y_ref)  # a loss that weighs every output differently
    (y_ref * dy).sum().backward()
    dx = ours.backward(x, dy)
    torch.testing.assert_close(dx, x_ref.grad, rtol=0, atol=1e-10)
    assert_grads_equal(ours, ref)
    ours.backward(x, dy)  # a second use adds its gradient, as autograd does
    torch.testing.assert_close(ours.weight.grad, 2 * ref.weight.grad, rtol=0, atol=1e-10)


@pytest.fixture
def default_dtype():
    """set_default_dtype(dtype) for the rest of the test."""
    before = torch.get_default_dtype()
    yield torch.set_default_dtype
    torch.set_default_dtype(before)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_state_dict_both_ways_and_same_init(bias, default_dtype):
    # 1/sqrt(fan_in) and torch's bound differ in the last bit of a double for these fan-ins,
    # which changes float64 draws (float32 draws round it away)
    for dtype, fan_in in itertools.product((torch.float32, torch.float64), (1, 3, 384)):
        default_dtype(dtype)
        torch.manual_seed(1)
        ref = nn.Linear(fan_in, 6, bias=bias)
        torch.manual_seed(1)
        ours = mlp.Linear(fan_in, 6, bias=bias)
        assert list(ours.state_dict()) == list(ref.state_dict())
        for name, value in ref.state_dict().items():  # same seed, same draws: nn.Linear's init
            assert torch.equal(ours.state_dict()[name], value), (dtype, fan_in, name)
    torch.manual_seed(2)
    other = mlp.Linear(4, 6, bias=bias)
    ref = nn.Linear(4, 6, bias=bias)
    ref.load_state_dict(other.state_dict(), strict=True)
    x = torch.randn(5, 4)
    torch.testing.assert_close(ref(x), other(x))
    other.load_state_dict(nn.Linear(4, 6, bias=bias).state_dict(), strict=True)


# ----------------------------------------------------------------------------- the model

class TorchMLP(nn.Module):
    """The same model from torch's layers, parameters named as mlp.LanguageModel's."""

    def __init__(self, vocab_size, n_embd, n_hidden, block_size):
        super().__init__()
        self.block_size = block_size
        self.emb = nn.Embedding(vocab_size, n_embd)
        self.hidden = nn.Linear(block_size * n_embd, n_hidden)
        self.tanh = nn.Tanh()
        self.lm_head = nn.Linear(n_hidden, vocab_size)

    def named_parameters(self, *args, **kwargs):
        for name, p in super().named_parameters(*args, **kwargs):
            yield ("wte" if name == "emb.weight" else name), p

    def forward(self, idx, targets):
        x = self.emb(idx.unfold(1, self.block_size, 1)).flatten(2)
        logits = self.lm_head(self.tanh(self.hidden(x)))
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def twins(vocab_size=11, n_embd=3, n_hidden=7, block_size=4):
    """mlp.LanguageModel and TorchMLP, float64, from the same seed: the same weights."""
    torch.manual_seed(0)
    ours = mlp.LanguageModel(vocab_size, n_embd, n_hidden, block_size).double()
    torch.manual_seed(0)
    ref = TorchMLP(vocab_size, n_embd, n_hidden, block_size).double()
    return ours, ref


def test_same_init_and_forward_as_torch_layers():
    ours, ref = twins()
    for name, p in ref.named_parameters():  # same seed, same draws: torch's own init
        assert torch.equal(dict(ours.named_parameters())[name], p), name
    idx, targets = torch.randint(11, (5, 9)), torch.randint(11, (5, 6))
    logits, loss = ours(idx, targets)
    logits_ref, loss_ref = ref(idx, targets)
    assert logits.shape == (5, 6, 11)
    torch.testing.assert_close(logits, logits_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(loss, loss_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(ours(idx)[0], logits_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("batch", ["random", "repeats"])
def test_hand_written_backward_equals_autograd(batch):
    ours, ref = twins()
    if batch == "random":
        idx, targets = torch.randint(11, (5, 9)), torch.randint(11, (5, 6))
    else:  # one character over and over, and rows that repeat: every embedding row collects many
        idx = torch.tensor([[3] * 9, [3, 3, 1, 3, 3, 1, 3, 3, 1], [3] * 9])
        targets = torch.tensor([[3] * 6, [1, 3, 3, 1, 3, 3], [3] * 6])
    ours(idx, targets)
    ours.backward()
    ref(idx, targets)[1].backward()
    assert_grads_equal(ours, ref)
    if batch == "repeats":  # only the rows looked up get a gradient
        assert ours.wte.grad[[1, 3]].abs().min() > 0 and ours.wte.grad[[0, 2]].abs().max() == 0
    _, loss = ours(idx, targets)  # and ours against autograd on our own graph
    grads = {name: p.grad.clone() for name, p in ours.named_parameters()}
    ours.zero_grad(set_to_none=True)
    loss.backward()
    for name, p in ours.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=0, atol=1e-10, msg=name)


def test_get_batch_gives_every_target_its_full_context():
    data = torch.arange(100)
    x, y = mlp.get_batch(data, 8, 4, "cpu")
    assert x.shape == (4, 15) and y.shape == (4, 8)
    assert torch.equal(y, x[:, 7:] + 1)  # y[:, t] follows x[:, t:t+8]
    assert torch.equal(x[:, 1:], x[:, :-1] + 1)  # contiguous text


# ----------------------------------------------------------------------------- training

def tiny_setup(**overrides):
    settings = dict(block_size=8, n_embd=8, n_hidden=32, batch_size=16, lr=1e-2,
                    max_steps=100, eval_interval=50, eval_steps=4)
    cfg = mlp.Config(**{**settings, **overrides})
    data = mlp.split(mlp.encode(TINY_TEXT, CHARS), cfg.block_size)
    torch.manual_seed(0)
    model = mlp.LanguageModel(len(CHARS), cfg.n_embd, cfg.n_hidden, cfg.block_size)
    return cfg, data, model


def test_training_uses_the_hand_written_backward_and_loss_falls(capsys, monkeypatch):
    def no_autograd(*args, **kwargs):
        raise AssertionError("train() called autograd's backward")

    monkeypatch.setattr(torch.Tensor, "backward", no_autograd)
    monkeypatch.setattr(torch.autograd, "backward", no_autograd)
    cfg, data, model = tiny_setup()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    losses = mlp.train(model, optimizer, data, cfg)
    assert losses["val"] < 0.25 * unigram_entropy(TINY_TEXT), losses
    assert "step   100 | train loss" in capsys.readouterr().out


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(capsys):
    cfg, data, model = tiny_setup(max_steps=40, eval_interval=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    saved, forward = {}, model.forward
    model.steps_left = 16

    def poisoned(idx, targets=None):  # the loss turns to NaN at the 16th training step
        logits, loss = forward(idx, targets)
        if model.training:
            model.steps_left -= 1
        return logits, loss * float("nan") if model.steps_left == 0 else loss

    model.forward = poisoned
    with pytest.raises(FloatingPointError, match="at step 15"):
        mlp.train(model, optimizer, data, cfg, save=lambda s: saved.update(step=s))
    assert saved["step"] == 10
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_sampling_is_reproducible_and_top_k_1_is_greedy():
    cfg, data, model = tiny_setup()
    prompt = mlp.encode("    def ", CHARS)[None]
    check_sampling(mlp, model, prompt)


def test_learning_rate_follows_the_cosine_from_lr_to_lr_over_10():
    cfg, data, model = tiny_setup(max_steps=20, eval_interval=20)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    used, step = [], optimizer.step

    def recording_step(*args, **kwargs):
        used.append(optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    optimizer.step = recording_step
    mlp.train(model, optimizer, data, cfg)
    # lr_s = lr/10 + (lr - lr/10) (1 + cos(pi s / max_steps)) / 2 at step s = 0, ..., 19
    lr, lo = cfg.lr, cfg.lr / 10
    expected = [lo + (lr - lo) * (1 + math.cos(math.pi * s / 20)) / 2 for s in range(20)]
    assert used == pytest.approx(expected, rel=1e-12)
    assert mlp.get_lr(20, cfg) == pytest.approx(lo) and mlp.get_lr(40, cfg) == pytest.approx(lo)


class KnownLogits(nn.Module):
    """A stand-in model whose next-character logits are always `logits` (V,)."""

    block_size = 2

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, idx, targets=None):
        B, T = idx.shape
        return self.logits.expand(B, T - self.block_size + 1, -1), None


@pytest.mark.parametrize("temperature, top_k", [(1.0, 0), (0.5, 0), (2.0, 0), (1.0, 2),
                                                (0.7, 3), (1.5, 4), (1.0, 9)])
def test_sampling_follows_temperature_and_top_k_by_their_definitions(temperature, top_k):
    logits = torch.tensor([0.5, 2.0, -1.0, 1.0, 0.0])
    n = 40_000  # rows drawn at once: a frequency is within ~0.0025 of its probability (1 sd)
    torch.manual_seed(0)
    drawn = mlp.sample(KnownLogits(logits), torch.zeros(n, 2, dtype=torch.long), 1,
                       temperature=temperature, top_k=top_k)[:, -1]
    freq = torch.bincount(drawn, minlength=5) / n
    # p_i = exp(l_i / T) / sum_j exp(l_j / T) among the k largest logits l_i (k = 0: all), else 0
    keep = torch.zeros(5, dtype=torch.bool)
    keep[logits.argsort(descending=True)[:top_k or 5]] = True
    p = torch.where(keep, torch.exp(logits / temperature), 0)
    p = p / p.sum()
    assert torch.equal(freq > 0, keep), (freq, p)
    torch.testing.assert_close(freq, p, rtol=0, atol=0.012)


# ----------------------------------------------------------------------------- the CLI

def test_cli_trains_saves_and_samples(tmp_path, tiny_file, capsys, monkeypatch):
    r = run_script("mlp.py", "--data", tiny_file, "--max-steps", 20, *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]  # the format experiments/ladder.py parses
    assert first.startswith("mlp.py: ")
    assert first.endswith(f"M parameters, vocabulary {len(CHARS)}, on cpu")
    assert "step    20 | train loss" in r.stdout and "chars/s" in r.stdout
    check_metrics(tmp_path / "out" / "mlp.jsonl", r.stdout, "val_loss", "chars_per_s")
    ckpt = torch.load(tmp_path / "out" / "mlp.pt", weights_only=True)
    assert ckpt["script"] == "mlp" and ckpt["step"] == 20 and ckpt["vocab"] == CHARS
    assert ckpt["config"]["block_size"] == 8
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    mlp.main(["--sample-only", "--prompt", "de", "--max-new-tokens", "30"])  # shorter than 8
    out = capsys.readouterr().out
    assert "step" not in out
    sample = out.split("-" * 80 + "\n")[1]
    assert sample.startswith("de") and len(sample) == 2 + 30 + 1  # padding not printed; "\n"


def test_sample_only_samples_from_the_checkpoint_weights(tmp_path, tiny_file, monkeypatch,
                                                         capsys):
    monkeypatch.chdir(tmp_path)
    mlp.main(["--data", str(tiny_file), "--max-steps", "10", *map(str, TINY)])
    path = tmp_path / "out" / "mlp.pt"
    ckpt = torch.load(path, weights_only=True)
    for char in "m*":  # weights that give `char` all the probability, whatever the context
        ckpt["model"]["lm_head.weight"].zero_()
        ckpt["model"]["lm_head.bias"].fill_(-50.0)[CHARS.index(char)] = 50.0
        torch.save(ckpt, path)
        capsys.readouterr()
        mlp.main(["--sample-only", "--prompt", "de", "--max-new-tokens", "12", "--num-samples",
                  "1"])
        assert capsys.readouterr().out.split("-" * 80 + "\n")[1] == "de" + char * 12 + "\n"


def test_sample_only_draws_by_seed(tmp_path, tiny_file, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mlp.main(["--data", str(tiny_file), "--max-steps", "10", *map(str, TINY)])
    check_sample_only_draws_by_seed(mlp, capsys, "--max-new-tokens", 40, "--num-samples", 1,
                                    "--temperature", 1.0)


@pytest.mark.parametrize("call, cut", [(16, 10), (20, 12)])
def test_ctrl_c_saves_and_resume_reaches_the_same_weights(tmp_path, tiny_file, monkeypatch,
                                                          capsys, call, cut):
    """Ctrl-C while the call-th batch is drawn: 16 is in the evaluation at step 10, which is
    saved and not evaluated again on resume; 20 is in the middle of step 11, saved after it."""
    monkeypatch.chdir(tmp_path)
    args = [*map(str, ["--data", tiny_file, "--max-steps", 30, *TINY]), "--num-samples", "2"]
    mlp.main([*args, "--out-dir", "whole"])
    whole_out = capsys.readouterr().out
    get_batch = ctrl_c_at_call(monkeypatch, mlp, "get_batch", call)
    with pytest.raises(SystemExit) as exit_:
        mlp.main([*args, "--out-dir", "cut"])
    assert exit_.value.code == 130
    assert f"interrupted at step {cut}; saved" in capsys.readouterr().out
    assert torch.load(tmp_path / "cut" / "mlp.pt", weights_only=True)["step"] == cut
    monkeypatch.setattr(mlp, "get_batch", get_batch)
    started, train = [], mlp.train

    def recording_train(model, optimizer, data, cfg, step=0, *args):
        started.append(step)
        return train(model, optimizer, data, cfg, step, *args)

    monkeypatch.setattr(mlp, "train", recording_train)
    mlp.main([*args, "--out-dir", "cut", "--resume"])
    resumed_out = capsys.readouterr().out
    assert started == [cut]
    logged = [line.split("|")[0] for line in resumed_out.splitlines() if line.startswith("step")]
    assert logged == ["step    20 ", "step    30 "]
    whole = torch.load(tmp_path / "whole" / "mlp.pt", weights_only=True)
    resumed = torch.load(tmp_path / "cut" / "mlp.pt", weights_only=True)
    assert resumed["step"] == 30
    for name, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    samples = whole_out.split("-" * 80 + "\n")[1:]  # drawn after training: the same generators
    assert len(samples) == 2 and resumed_out.split("-" * 80 + "\n")[1:] == samples


def test_non_finite_loss_exits_with_status_1_and_keeps_the_last_checkpoint(
        tmp_path, tiny_file, monkeypatch, capsys):
    forward, calls = mlp.LanguageModel.forward, []

    def poisoned(self, idx, targets=None):  # the 16th training step's loss is NaN
        logits, loss = forward(self, idx, targets)
        if self.training and targets is not None:
            calls.append(1)
            loss = loss * float("nan") if len(calls) == 16 else loss
        return logits, loss

    monkeypatch.setattr(mlp.LanguageModel, "forward", poisoned)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        mlp.main(["--data", str(tiny_file), "--max-steps", "30", *map(str, TINY)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1
    assert err == ["mlp.py: loss is nan at step 15; stopped, the last good checkpoint is kept"]
    ckpt = torch.load(tmp_path / "out" / "mlp.pt", weights_only=True)
    assert ckpt["step"] == 10 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_checkpoint_keeps_the_state_of_every_generator(monkeypatch):
    cpu = torch.device("cpu")
    states = mlp.rng_states(cpu)
    assert list(states) == ["cpu"] and torch.equal(states["cpu"], torch.get_rng_state())
    a = torch.rand(3)
    mlp.set_rng_states(states, cpu)
    assert torch.equal(torch.rand(3), a)
    # a GPU's generator, on any machine: its get/set_rng_state stand-ins see what is asked
    for kind, module in [("cuda", torch.cuda), ("mps", torch.mps)]:
        device, asked, put_back = torch.device(kind), [], []
        state = torch.tensor([7, len(kind)], dtype=torch.uint8)

        def get_rng_state(device):
            asked.append(device)
            return state

        def set_rng_state(new_state, device):
            put_back.append((new_state, device))

        monkeypatch.setattr(module, "get_rng_state", get_rng_state)
        monkeypatch.setattr(module, "set_rng_state", set_rng_state)
        states = mlp.rng_states(device)
        assert list(states) == ["cpu", kind] and states[kind] is state and asked == [device]
        mlp.set_rng_states(states, device)
        assert put_back == [(state, device)]
        mlp.set_rng_states({"cpu": states["cpu"]}, device)  # saved on a CPU: left as seeded
        assert len(put_back) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_checkpoint_restores_the_cuda_generator():
    device = torch.device("cuda")
    states = mlp.rng_states(device)
    a = torch.rand(3, device=device)
    mlp.set_rng_states(states, device)
    assert torch.equal(torch.rand(3, device=device), a)


# Refusals run main() in-process (the same code path as the command line, without paying for
# a fresh interpreter each time).

def test_cli_refuses_bad_data(tmp_path, tiny_file, refused):
    refused(mlp, "--data", "nope.txt", says=["cannot read --data nope.txt", "No such file"])
    refused(mlp, "--data", tmp_path, says=["cannot read --data"])
    (tmp_path / "empty.txt").write_text("")
    refused(mlp, "--data", "empty.txt", says=["is empty"])
    (tmp_path / "short.txt").write_text("x" * 30)  # 27 + 3 characters: no room for 2 * 16
    refused(mlp, "--data", "short.txt", says=["fewer than 2 * block_size = 32"])
    refused(mlp, "--data", tiny_file, "--prompt", "déf", *TINY, says=["--prompt", "'é'"])


def test_cli_refuses_impossible_settings(tiny_file, refused):
    for flag, value in [("--block-size", 0), ("--n-embd", 0), ("--n-hidden", -1),
                        ("--batch-size", 0), ("--max-steps", 0), ("--lr", 0),
                        ("--temperature", 0), ("--top-k", -1)]:
        refused(mlp, "--data", tiny_file, flag, value, says=[flag, "must be"])


def test_cli_refuses_a_device_this_machine_lacks(tiny_file, refused, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # so on any machine
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for device, kind in [("cuda", "cuda"), ("cuda:0", "cuda"), ("mps", "mps")]:
        refused(mlp, "--data", tiny_file, "--device", device, *TINY,
                says=[f"--device {device} is not available here"])
    refused(mlp, "--data", tiny_file, "--device", "gpu", says=["unknown --device 'gpu'"])


@pytest.mark.parametrize("cuda, mps, best", [(True, True, "cuda"), (True, False, "cuda"),
                                             (False, True, "mps"), (False, False, "cpu")])
def test_device_by_default_is_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, best):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert mlp.pick_device("") == torch.device(best)
    assert mlp.pick_device("cpu") == torch.device("cpu")  # asked for: taken as asked


def test_cli_refuses_missing_foreign_or_other_shape_checkpoints(tmp_path, tiny_file, refused):
    refused(mlp, "--sample-only", says=["no checkpoint"])
    refused(mlp, "--resume", "--data", tiny_file, says=["no checkpoint"])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "mlp.pt").write_text("not a checkpoint")
    refused(mlp, "--sample-only", "--out-dir", "junk", says=["not a readable checkpoint"])
    rnn.main(["--data", str(tiny_file), "--max-steps", "1", "--eval-steps", "1",
              "--num-samples", "0", "--out-dir", "other", "--n-hidden", "8"])
    shutil.copy(tmp_path / "other" / "rnn.pt", tmp_path / "other" / "mlp.pt")
    refused(mlp, "--sample-only", "--out-dir", "other", says=["rnn.py, not of mlp.py"])
    mlp.main(["--data", str(tiny_file), "--max-steps", "10", *map(str, TINY)])
    refused(mlp, "--sample-only", "--block-size", 4,
            says=["--block-size 4 differs from the checkpoint's 8"])
    refused(mlp, "--sample-only", "--n-hidden", 64,
            says=["--n-hidden 64 differs from the checkpoint's 32"])
    refused(mlp, "--sample-only", "--n-hidden", 512,  # asked for, though it is the default
            says=["--n-hidden 512 differs from the checkpoint's 32"])
    (tmp_path / "other.txt").write_text("something else entirely " * 50)
    refused(mlp, "--resume", "--data", "other.txt", *TINY, says=["vocabulary differs"])
    refused(mlp, "--sample-only", "--data", "other.txt",
            says=["--data other.txt is not the text", "--sample-only needs no --data"])
    mlp.main(["--sample-only", "--data", str(tiny_file), "--num-samples", "0"])  # its own: taken
    check_refuses_earlier_checkpoints(refused, mlp, tmp_path / "out" / "mlp.pt", "--resume",
                                      "--data", tiny_file, *TINY)
