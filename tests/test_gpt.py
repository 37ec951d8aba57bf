"""gpt.py against torch's LayerNorm, scaled_dot_product_attention and TransformerEncoderLayer;
its cache, training loop, sampler and CLI."""
import functools
import hashlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gpt
import rnn
from conftest import (ROOT, SHARED_DATA, TINY_TEXT, check_metrics,
                      check_refuses_earlier_checkpoints, check_sample_only_draws_by_seed,
                      check_sampling, poison_loss_at, run_script, unigram_entropy)

TINY = ["--block-size", 16, "--n-embd", 16, "--n-head", 2, "--n-layer", 2, "--batch-size", 8,
        "--warmup-steps", 5, "--eval-interval", 10, "--eval-steps", 2, "--max-new-tokens", 20,
        "--num-samples", 1]
CHARS = "".join(sorted(set(TINY_TEXT)))


def tiny_model(dtype=torch.float64, seed=0, **kwargs):
    """A 2-block GPT on TINY_TEXT's vocabulary with random (not zero) biases and LayerNorm gains,
    so that every parameter matters in a comparison."""
    settings = dict(vocab_size=len(CHARS), block_size=16, n_embd=16, n_head=4, n_layer=2)
    torch.manual_seed(seed)
    model = gpt.GPT(**{**settings, **kwargs}).to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def assert_grads_close(a, b):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-10, msg=name)


# ----------------------------------------------------------------------------- the layers

def test_attention_matches_scaled_dot_product_attention():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 5, dtype=torch.float64, requires_grad=True) for _ in "qkv")
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    w = torch.randn_like(ref)
    grads_ref = torch.autograd.grad((ref * w).sum(), (q, k, v))
    out = gpt.attention(q, k, v)
    grads = torch.autograd.grad((out * w).sum(), (q, k, v))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-10)


def test_attention_of_new_queries_on_cached_keys_is_aligned_bottom_right():
    torch.manual_seed(0)
    q = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    k, v = (torch.randn(2, 3, 9, 5, dtype=torch.float64) for _ in "kv")
    full = gpt.attention(torch.cat((torch.randn(2, 3, 5, 5, dtype=torch.float64), q), 2), k, v)
    torch.testing.assert_close(gpt.attention(q, k, v), full[:, :, 5:], rtol=0, atol=1e-12)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=gpt.causal_mask(4, 9, q.device))
    torch.testing.assert_close(gpt.attention(q, k, v), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("fused", [False, True])
def test_layernorm_matches_nn_layernorm_both_ways(fused):
    torch.manual_seed(0)
    ref, ours = nn.LayerNorm(6).double(), gpt.LayerNorm(6).double()
    ours.fused = fused
    assert list(ours.state_dict()) == list(ref.state_dict()) and ours.eps == ref.eps
    for name, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name
    with torch.no_grad():
        ref.weight.normal_(), ref.bias.normal_()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = (3 + 5 * torch.randn(4, 5, 6, dtype=torch.float64)).requires_grad_()
    w = torch.randn(4, 5, 6, dtype=torch.float64)
    (gx_ref,) = torch.autograd.grad((ref(x) * w).sum(), x)
    (ours(x) * w).sum().backward()
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-10)
    torch.testing.assert_close(x.grad, gx_ref, rtol=0, atol=1e-10)
    ref.zero_grad(), (ref(x) * w).sum().backward()
    assert_grads_close(ours, ref)
    ref.load_state_dict(gpt.LayerNorm(6).state_dict(), strict=True)


@pytest.mark.parametrize("fused", [False, True])
def test_block_matches_nn_transformer_encoder_layer(fused):
    """One block == TransformerEncoderLayer(norm_first=True) with a causal mask: the GPT-2
    block is the encoder layer of 2017 with its LayerNorms moved in front and the mask on."""
    C, nh = 16, 4
    block = tiny_model(n_embd=C, n_head=nh, fused=fused).transformer.h[0]
    ref = nn.TransformerEncoderLayer(C, nh, dim_feedforward=4 * C, dropout=0.0,
                                     activation=functools.partial(F.gelu, approximate="tanh"),
                                     batch_first=True, norm_first=True).double()
    pairs = [("ln_1", "norm1"), ("attn.c_attn", "self_attn.in_proj"),
             ("attn.c_proj", "self_attn.out_proj"), ("ln_2", "norm2"), ("mlp.c_fc", "linear1"),
             ("mlp.c_proj", "linear2")]
    to_ref = {f"{a}.{p}": (f"{b}_{p}" if b.endswith("in_proj") else f"{b}.{p}")
              for a, b in pairs for p in ("weight", "bias")}
    ref.load_state_dict({to_ref[name]: p for name, p in block.state_dict().items()}, strict=True)
    x = torch.randn(3, 10, C, dtype=torch.float64)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, _ = block(x_ours)
    mask = nn.Transformer.generate_square_subsequent_mask(10, dtype=torch.float64)
    out_ref = ref(x_ref, src_mask=mask, is_causal=True)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-10)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (out_ref * w).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=0, atol=1e-10)
    grads_ref = dict(ref.named_parameters())
    for name, p in block.named_parameters():
        torch.testing.assert_close(p.grad, grads_ref[to_ref[name]].grad, rtol=0, atol=1e-10,
                                   msg=name)


def test_fused_path_equals_written_out_path(monkeypatch):
    written = tiny_model(fused=False)
    fused = tiny_model(fused=True)
    fused.load_state_dict(written.state_dict(), strict=True)
    idx = torch.randint(len(CHARS), (3, 16))
    targets = torch.randint(len(CHARS), (3, 16))
    calls = []  # which code ran: the written-out attention, or torch's LayerNorm kernel
    attention, layer_norm = gpt.attention, F.layer_norm
    monkeypatch.setattr(gpt, "attention", lambda *a: calls.append("written") or attention(*a))
    monkeypatch.setattr(F, "layer_norm", lambda *a: calls.append("fused") or layer_norm(*a))
    logits_w, loss_w = written(idx, targets)
    assert calls == ["written"] * 2  # one attention a block, LayerNorm written out too
    logits_f, loss_f = fused(idx, targets)
    assert calls == ["written"] * 2 + ["fused"] * 5  # 2 a block and ln_f
    torch.testing.assert_close(logits_f, logits_w, rtol=0, atol=1e-10)
    loss_w.backward(), loss_f.backward()
    assert_grads_close(fused, written)


def test_gpt2_layout_init_and_tied_head():
    model = gpt.GPT(vocab_size=50, block_size=32, n_embd=64, n_head=4, n_layer=3)
    per_block = ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                 "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                 "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"]
    assert list(model.state_dict()) == (
        ["transformer.wte.weight", "transformer.wpe.weight"]
        + [f"transformer.h.{i}.{name}" for i in range(3) for name in per_block]
        + ["transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight"])
    assert model.lm_head.weight is model.transformer.wte.weight
    params = dict(model.named_parameters())
    assert "lm_head.weight" not in params  # counted once
    assert abs(params["transformer.h.0.mlp.c_fc.weight"].std() - 0.02) < 0.002
    assert abs(params["transformer.wpe.weight"].std() - 0.02) < 0.002
    c_proj = torch.cat([params[f"transformer.h.{i}.mlp.c_proj.weight"].flatten()
                        for i in range(3)])
    assert abs(c_proj.std() - 0.02 / math.sqrt(6)) < 0.001
    assert all(torch.equal(p, torch.ones_like(p)) for n, p in params.items() if "ln" in n
               and n.endswith("weight"))
    assert all(not p.any() for n, p in params.items() if n.endswith("bias"))
    other = gpt.GPT(vocab_size=50, block_size=32, n_embd=64, n_head=4, n_layer=3)
    other.load_state_dict(model.state_dict(), strict=True)
    idx = torch.randint(50, (2, 32))
    torch.testing.assert_close(other(idx)[0], model(idx)[0])


@pytest.mark.parametrize("fused", [False, True])
def test_kv_cache_equals_full_recompute(fused):
    model = tiny_model(fused=fused).eval()
    idx = torch.randint(len(CHARS), (3, 16))
    full, _ = model(idx)
    logits, cache = model.advance(idx[:, :5])  # a prompt, then one position at a time,
    steps = [logits]  # then a chunk of several at once
    for t in range(5, 12):
        logits, cache = model.advance(idx[:, t:t + 1], cache)
        steps.append(logits)
    logits, cache = model.advance(idx[:, 12:], cache)
    steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-10)
    assert cache[0][0].shape == (3, 4, 16, 4)
    with pytest.raises(ValueError, match="more than block_size 16"):
        model.advance(idx[:, :1], cache)


# ----------------------------------------------------------------------------- training

def tiny_setup(**overrides):
    settings = dict(block_size=16, n_embd=16, n_head=2, n_layer=2, batch_size=16, lr=1e-2,
                    warmup_steps=10, max_steps=150, eval_interval=50, eval_steps=4)
    cfg = gpt.Config(**{**settings, **overrides})
    data = gpt.split(gpt.encode(TINY_TEXT, CHARS), cfg.block_size)
    torch.manual_seed(0)
    model = gpt.GPT(len(CHARS), cfg.block_size, cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.dropout)
    return cfg, data, model


def test_training_drives_loss_far_below_unigram_entropy(capsys):
    cfg, data, model = tiny_setup(dropout=0.1)
    losses = gpt.train(model, gpt.make_optimizer(model, cfg), data, cfg)
    assert losses["val"] < 0.25 * unigram_entropy(TINY_TEXT), losses
    assert "step   150 | train loss" in capsys.readouterr().out


def test_optimizer_decays_matrices_only_and_schedule():
    cfg, data, model = tiny_setup(lr=1e-3, warmup_steps=10, max_steps=110)
    decay, rest = gpt.make_optimizer(model, cfg).param_groups
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert decay["betas"] == (0.9, 0.99) and not decay["fused"]  # fused: on a GPU only
    cfg.beta2 = 0.95
    assert gpt.make_optimizer(model, cfg).param_groups[0]["betas"] == (0.9, 0.95)
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in rest["params"])
    assert len(decay["params"]) + len(rest["params"]) == len(list(model.parameters()))
    lrs = [gpt.get_lr(s, cfg) for s in range(111)]
    assert lrs[0] == pytest.approx(1e-3 / 11) and lrs[9] == pytest.approx(1e-3 * 10 / 11)
    assert lrs[10] == pytest.approx(1e-3) and lrs[60] == pytest.approx(0.55e-3)
    assert lrs[110] == pytest.approx(1e-4) and gpt.get_lr(500, cfg) == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint():
    cfg, data, model = tiny_setup(max_steps=40, eval_interval=10)
    saved = {}
    poison_loss_at(model, 15)
    with pytest.raises(FloatingPointError, match="at step 15"):
        gpt.train(model, gpt.make_optimizer(model, cfg), data, cfg,
                  save=lambda s: saved.update(step=s))
    assert saved["step"] == 10
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ----------------------------------------------------------------------------- sampling

def test_sampling_is_reproducible_and_top_k_1_is_greedy():
    model = tiny_model(dtype=torch.float32)
    prompt = gpt.encode("def ", CHARS)[None]
    check_sampling(gpt, model, prompt)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("prompt", ["def ", "def add(a, b):\n    return"])
def test_cached_sampling_equals_uncached_past_block_size(fused, prompt):
    """block_size 16 and 40 new characters: the cache fills, then the window slides; a prompt
    longer than the context is cropped. Every character must match a full recompute's."""
    model = tiny_model(fused=fused)
    prompt = gpt.encode(prompt, CHARS)[None].repeat(2, 1)
    out = {}
    for use_cache in (True, False):
        torch.manual_seed(5)
        out[use_cache] = gpt.sample(model, prompt, 40, temperature=1.5, use_cache=use_cache)
    assert out[True].shape == (2, prompt.shape[1] + 40)
    assert torch.equal(out[True], out[False])
    assert not torch.equal(out[True][0], out[True][1])  # rows sampled independently


# ----------------------------------------------------------------------------- the CLI

def test_cli_trains_saves_and_samples(tmp_path, tiny_file, capsys, monkeypatch):
    r = run_script("gpt.py", "--data", tiny_file, "--max-steps", 20, *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith("gpt.py: ") and first.endswith(f"vocabulary {len(CHARS)}, on cpu")
    assert "step    20 | train loss" in r.stdout and "chars/s" in r.stdout
    check_metrics(tmp_path / "out" / "gpt.jsonl", r.stdout, "val_loss", "chars_per_s")
    ckpt = torch.load(tmp_path / "out" / "gpt.pt", weights_only=True)
    assert ckpt["script"] == "gpt" and ckpt["step"] == 20 and ckpt["vocab"] == CHARS
    assert set(ckpt["model"]) == set(gpt.GPT(len(CHARS), 16, 16, 2, 2).state_dict())
    monkeypatch.chdir(tmp_path)  # sample-only in-process; a prompt past the context is cropped
    prompt = "def add(a, b):\n    return a + b\n"
    gpt.main(["--sample-only", "--prompt", prompt, "--max-new-tokens", "30"])
    out = capsys.readouterr().out
    assert prompt in out and "step" not in out


def logged_steps(out):
    return [int(n) for n in re.findall(r"^step +(\d+) \|", out, flags=re.M)]


def test_cli_ctrl_c_saves_and_resume_reaches_the_same_weights(tmp_path, tiny_file, monkeypatch,
                                                               capsys):
    """With dropout on, so that the generators' states (batches, dropout) must come back too."""
    monkeypatch.chdir(tmp_path)
    args = ["--data", str(tiny_file), "--max-steps", "60", "--num-samples", "0",
            "--dropout", "0.2", *map(str, TINY)]
    gpt.main([*args, "--out-dir", "whole"])
    save = gpt.save_checkpoint

    def save_then_ctrl_c(path, ckpt):  # Ctrl-C arrives right after the step-20 checkpoint
        save(path, ckpt)
        if ckpt["step"] == 20:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(gpt, "save_checkpoint", save_then_ctrl_c)
    with pytest.raises(SystemExit) as exit_:
        gpt.main([*args, "--out-dir", "cut"])
    assert exit_.value.code == 130
    assert "interrupted at step 20; saved" in capsys.readouterr().out
    assert torch.load(tmp_path / "cut" / "gpt.pt", weights_only=True)["step"] == 20
    gpt.main([*args, "--out-dir", "cut", "--resume"])
    assert logged_steps(capsys.readouterr().out) == [30, 40, 50, 60]  # on from step 20
    whole = torch.load(tmp_path / "whole" / "gpt.pt", weights_only=True)
    resumed = torch.load(tmp_path / "cut" / "gpt.pt", weights_only=True)
    assert resumed["step"] == 60
    for name, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][name]), name


@pytest.mark.slow
def test_cli_compile_saves_the_plain_modules_weights(tmp_path, tiny_file):
    r = run_script("gpt.py", "--data", tiny_file, "--max-steps", 10, "--compile", *TINY,
                   cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    ckpt = torch.load(tmp_path / "out" / "gpt.pt", weights_only=True)
    assert set(ckpt["model"]) == set(gpt.GPT(len(CHARS), 16, 16, 2, 2).state_dict())


def test_cli_refuses_bad_data(tmp_path, tiny_file, refused):
    refused(gpt, "--data", "nope.txt", says=["cannot read --data nope.txt", "No such file"])
    (tmp_path / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    refused(gpt, "--data", "latin1.txt", says=["not UTF-8"])
    (tmp_path / "short.txt").write_text("x" * 100)
    refused(gpt, "--data", "short.txt", says=["fewer than block_size + 1 = 129"])
    refused(gpt, "--data", tiny_file, "--prompt", "déf", *TINY, says=["--prompt", "'é'"])
    refused(gpt, "--data", tiny_file, "--prompt", "", *TINY, says=["--prompt is empty"])


def test_cli_refuses_impossible_settings(tiny_file, refused):
    for flag, value in [("--n-head", 0), ("--max-steps", 0), ("--block-size", -3), ("--lr", 0),
                        ("--dropout", -0.1), ("--weight-decay", -1), ("--warmup-steps", -1),
                        ("--temperature", 0), ("--top-k", -1), ("--n-layer", 0),
                        ("--grad-accum", 0), ("--top-p", 0), ("--beta2", 0)]:
        refused(gpt, "--data", tiny_file, flag, value, says=[flag, "must be"])
    refused(gpt, "--n-embd", 10, "--n-head", 4,
            says=["--n-embd 10 must be divisible by --n-head 4"])
    refused(gpt, "--dropout", 1, says=["--dropout must be below 1"])
    refused(gpt, "--beta2", 1, says=["--beta2 must be below 1"])
    refused(gpt, "--top-p", 1.5, says=["--top-p must be at most 1, got 1.5"])
    refused(gpt, "--kernels", "flash", says=["--kernels must be fused or written"])


def test_cli_refuses_a_device_this_machine_lacks(tiny_file, refused, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # so on any machine
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for device, kind in [("cuda", "cuda"), ("cuda:0", "cuda"), ("mps", "mps")]:
        refused(gpt, "--data", tiny_file, "--device", device, *TINY,
                says=[f"--device {device} is not available here"])
    refused(gpt, "--data", tiny_file, "--device", "gpu", says=["unknown --device 'gpu'"])


@pytest.mark.parametrize("cuda, mps, best", [(True, True, "cuda"), (True, False, "cuda"),
                                             (False, True, "mps"), (False, False, "cpu")])
def test_device_by_default_is_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, best):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert gpt.pick_device("") == torch.device(best)
    assert gpt.pick_device("cpu") == torch.device("cpu")  # asked for: taken as asked


def test_cli_refuses_missing_or_foreign_checkpoints(tmp_path, tiny_file, refused):
    refused(gpt, "--sample-only", says=["no checkpoint"])
    refused(gpt, "--resume", "--data", tiny_file, says=["no checkpoint"])
    rnn.main(["--data", str(tiny_file), "--max-steps", "1", "--num-samples", "0",
              "--block-size", "16", "--n-hidden", "8", "--out-dir", "rnn_out"])
    os.makedirs("other")
    os.replace("rnn_out/rnn.pt", "other/gpt.pt")  # a real rnn.py checkpoint, renamed
    refused(gpt, "--sample-only", "--out-dir", "other", says=["rnn.py, not of gpt.py"])
    gpt.main(["--data", str(tiny_file), "--max-steps", "1", *map(str, TINY)])
    refused(gpt, "--sample-only", "--n-head", 8,
            says=["--n-head 8 differs from the checkpoint's 2"])
    refused(gpt, "--sample-only", "--n-head", 4,  # asked for, though it is the default
            says=["--n-head 4 differs from the checkpoint's 2"])
    refused(gpt, "--sample-only", "--block-size", 32,
            says=["--block-size 32 differs from the checkpoint's 16"])
    (tmp_path / "other.txt").write_text("something else entirely " * 50)
    refused(gpt, "--resume", "--data", "other.txt", *TINY, says=["vocabulary differs"])
    refused(gpt, "--sample-only", "--data", "other.txt",
            says=["--data other.txt is not the text", "--sample-only needs no --data"])
    gpt.main(["--sample-only", "--data", str(tiny_file), "--num-samples", "0"])  # its own: taken
    check_refuses_earlier_checkpoints(refused, gpt, tmp_path / "out" / "gpt.pt", "--resume",
                                      "--data", tiny_file, *TINY)


# ----------------------------------------------------------------------------- sampling rules

class KnownLogits(nn.Module):
    """A stand-in model whose next-token logits are `logits` whatever it reads."""

    def __init__(self, logits):
        super().__init__()
        self.logits, self.block_size = logits, 8

    def advance(self, idx, cache=None):
        B, T = idx.shape
        S = T + (0 if cache is None else cache[0][0].shape[2])
        return self.logits.expand(B, T, -1), [(torch.zeros(B, 1, S, 1),) * 2]


LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0], dtype=torch.float64)


def frequencies(n=40000, **settings):
    torch.manual_seed(0)
    out = gpt.sample(KnownLogits(LOGITS), torch.zeros(n, 1, dtype=torch.long), 1, **settings)
    return torch.bincount(out[:, 1], minlength=len(LOGITS)).double() / n


@pytest.mark.parametrize("settings, keep", [
    (dict(temperature=0.5), [1] * 6), (dict(temperature=2.0), [1] * 6),
    (dict(top_k=3), [1, 1, 1, 0, 0, 0]), (dict(top_k=3, temperature=2.0), [1, 1, 1, 0, 0, 0]),
    (dict(top_p=0.8), [1, 1, 1, 0, 0, 0]), (dict(top_p=0.5), [1, 0, 0, 0, 0, 0]),
    (dict(top_p=0.85, temperature=2.0), [1, 1, 1, 1, 0, 0])])
def test_temperature_top_k_and_top_p_follow_their_definitions(settings, keep):
    """p ~ softmax(logits / temperature), restricted to the k likeliest tokens, or to the
    likeliest whose probabilities (at that temperature) first reach top_p, then renormalised.
    At temperature 1 the probabilities add up to .56 .77 .89 .97 ...: top_p 0.8 keeps three
    tokens, 0.5 keeps one; at temperature 2 (.36 .58 .76 .89 ...) top_p 0.85 keeps four."""
    p = F.softmax(LOGITS / settings.get("temperature", 1.0), dim=-1) * torch.tensor(keep)
    expected = p / p.sum()
    torch.testing.assert_close(frequencies(**settings), expected, rtol=0, atol=0.01)


# ----------------------------------------------------------------------------- GPT-2

TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"  # its source's


@pytest.fixture
def gpt2_vocab(tmp_path_factory, monkeypatch):
    """GPT-2's vocabulary for tiktoken, offline: the two shared files in a cache folder, each
    named by the SHA-1 of the address tiktoken downloads it from."""
    shared = os.path.join(SHARED_DATA, "gpt2")
    if not os.path.isdir(shared):
        pytest.skip("needs ../shared/data/gpt2")
    cache = tmp_path_factory.getbasetemp() / "tiktoken"
    cache.mkdir(exist_ok=True)
    for name in ("vocab.bpe", "encoder.json"):
        key = hashlib.sha1((TIKTOKEN_URL + name).encode()).hexdigest()
        shutil.copy(os.path.join(shared, name), cache / key)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))


def save_hf_gpt2(folder, seed=0, **config):
    """A GPT-2 built by transformers with random weights (biases and gains too), saved in the
    Hugging Face layout; returns the model, in eval mode."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(GPT2Config(**config)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(folder)
    return hf


def test_from_pretrained_equals_transformers_gpt2_with_and_without_the_cache(tmp_path):
    hf = save_hf_gpt2(tmp_path / "hf", vocab_size=99, n_positions=1024, n_embd=16, n_layer=2,
                      n_head=4).double()
    model = gpt.GPT.from_pretrained(tmp_path / "hf").double().eval()
    idx = torch.randint(99, (2, 1024))
    with torch.no_grad():
        ref = hf(idx).logits
        torch.testing.assert_close(model(idx)[0], ref, rtol=0, atol=1e-9)
        logits, cache = model.advance(idx[:, :1000])  # then one position at a time, to 1024
        steps = [logits]
        for t in range(1000, 1024):
            logits, cache = model.advance(idx[:, t:t + 1], cache)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), ref, rtol=0, atol=1e-9)
    prompt = idx[:1, :1004]  # greedy up to GPT-2's last position, through the cache
    greedy = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20,
                         do_sample=False, pad_token_id=0)
    assert torch.equal(gpt.sample(model, prompt, 20, top_k=1), greedy)


def test_from_pretrained_reads_the_hubs_older_layout_and_crops_positions(tmp_path):
    """The hub's gpt2 files name keys without "transformer." and keep each block's causal mask
    (attn.bias, attn.masked_bias): the same weights must come out."""
    from safetensors.torch import load_file, save_file
    save_hf_gpt2(tmp_path / "new", vocab_size=99, n_positions=64, n_embd=16, n_layer=2,
                 n_head=4)
    weights = {k.removeprefix("transformer."): w
               for k, w in load_file(tmp_path / "new" / "model.safetensors").items()}
    for i in range(2):
        weights[f"h.{i}.attn.bias"] = torch.ones(1, 1, 64, 64).tril()
        weights[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    save_file(weights, tmp_path / "old" / "model.safetensors")
    new = gpt.GPT.from_pretrained(tmp_path / "new")
    old = gpt.GPT.from_pretrained(tmp_path / "old", block_size=40)
    assert old.block_size == 40 and old.transformer.wpe.weight.shape == (40, 16)
    for name, value in old.state_dict().items():
        assert torch.equal(value, new.state_dict()[name][:40] if "wpe" in name else
                           new.state_dict()[name]), name
    assert torch.equal(new.transformer.h[0].attn.c_attn.weight,
                       weights["h.0.attn.c_attn.weight"].t())  # Conv1D's (in, out), transposed


def test_from_pretrained_refuses_what_is_not_gpt2_by_name(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file
    save_hf_gpt2(tmp_path / "hf", vocab_size=99, n_positions=64, n_embd=16, n_layer=2, n_head=4)

    def refused(folder, says, error=ValueError, **kwargs):  # a plain error, naming no flag
        with pytest.raises(error) as e:
            gpt.GPT.from_pretrained(folder, **kwargs)
        assert not isinstance(e.value, gpt.BadInput) and "--" not in str(e.value)
        assert says in str(e.value), str(e.value)

    refused("gpt3", says="no such folder, and not one of gpt2, gpt2-medium",
            error=FileNotFoundError)
    refused(tmp_path / "hf", says="block_size 65 is more than its 64 positions", block_size=65)
    weights = load_file(tmp_path / "hf" / "model.safetensors")
    shutil.copytree(tmp_path / "hf", tmp_path / "bad")
    save_file({k: w for k, w in weights.items() if k != "transformer.h.1.ln_2.bias"},
              tmp_path / "bad" / "model.safetensors")
    refused(tmp_path / "bad", says="missing ['h.1.ln_2.bias'], unexpected []")
    weights["transformer.h.0.mlp.c_fc.bias"] = torch.zeros(63)
    save_file(weights, tmp_path / "bad" / "model.safetensors")
    refused(tmp_path / "bad", says="h.0.mlp.c_fc.bias is (63,), the model's (64,)")
    (tmp_path / "bad" / "config.json").write_text('{"model_type": "llama"}')
    refused(tmp_path / "bad", says="not a GPT-2 (model_type llama)")
    asked = []  # a hub name goes to huggingface_hub (here a stand-in: no download in a test)

    def snapshot_download(repo, allow_patterns):
        asked.append(repo)
        if repo.endswith("-xl"):
            raise FileNotFoundError("offline")
        return str(tmp_path / "hf")

    hub = type(sys)("huggingface_hub")
    hub.snapshot_download = snapshot_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    assert gpt.GPT.from_pretrained("gpt2-medium").config["n_embd"] == 16
    refused("gpt2-xl", says="cannot fetch openai-community/gpt2-xl from the Hugging Face hub",
            error=OSError)
    assert asked == ["openai-community/gpt2-medium", "openai-community/gpt2-xl"]
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)  # as if not installed
    refused(tmp_path / "hf", says="this needs safetensors: pip install safetensors",
            error=ImportError)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    refused("gpt2", says="this needs huggingface_hub: pip install huggingface_hub",
            error=ImportError)


SHAKESPEARE = os.path.join(SHARED_DATA, "tinyshakespeare.txt")
GPT2_TINY = ["--block-size", 16, "--n-embd", 16, "--n-head", 2, "--n-layer", 1, "--batch-size",
             4, "--eval-interval", 5, "--eval-steps", 1, "--max-new-tokens", 8, "--num-samples",
             1, "--tokens", "gpt2"]


def test_gpt2_tokens_round_trip_train_from_a_token_file_and_sample(tmp_path, gpt2_vocab,
                                                                  monkeypatch, capsys, refused):
    text = open(SHAKESPEARE, encoding="utf-8").read()
    ids = gpt.encode(text)
    assert len(ids) == 338025 and ids.max() < gpt.GPT2_VOCAB == 50257  # tiktoken's count
    assert gpt.decode(ids.tolist()) == text
    assert gpt.encode("Hello world").tolist() == [15496, 995]  # GPT-2's own ids
    gpt.write_tokens(SHAKESPEARE, str(tmp_path / "ts.bin"))  # in ~1 MB pieces: two here
    assert torch.equal(gpt.read_tokens(str(tmp_path / "ts.bin")).long(), ids)
    gpt.main(["--data", SHAKESPEARE, "--max-steps", "5", "--prompt", "ROMEO:", *map(str,
              GPT2_TINY)])
    out = capsys.readouterr().out
    assert "vocabulary 50257" in out and "304,222 train / 33,803 val tokens" in out
    assert "step     5 | train loss" in out and "k tokens/s" in out
    assert "\nROMEO:" in out  # decoded back to text
    ckpt = torch.load("out/gpt.pt", weights_only=True)
    assert ckpt["config"]["tokens"] == "gpt2" and ckpt["vocab"] is None
    gpt.main(["--data", "ts.bin", "--max-steps", "10", "--resume", *map(str, GPT2_TINY)])
    out = capsys.readouterr().out  # the token file, memory-mapped, holds the same tokens
    assert "304,222 train" in out and logged_steps(out) == [10]
    refused(gpt, "--data", "ts.bin", "--tokens", "char", says=["read GPT-2's tokens"])
    refused(gpt, "--data", SHAKESPEARE, "--resume", "--tokens", "char",
            says=["--tokens char differs from the checkpoint's gpt2"])
    refused(gpt, "--tokens", "bpe", says=["--tokens must be char or gpt2, got 'bpe'"])
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    refused(gpt, "--data", "ts.bin", "--sample-only", says=["pip install tiktoken"])


def test_init_from_a_folder_samples_and_fine_tunes_with_a_cropped_context(tmp_path, tiny_file,
                                                                          gpt2_vocab, capsys,
                                                                          refused):
    hf = save_hf_gpt2(tmp_path / "hf", n_positions=32, n_embd=8, n_layer=1, n_head=2)
    gpt.main(["--init-from", "hf", "--sample-only", "--prompt", "def", "--max-new-tokens", "5",
              "--num-samples", "1", "--temperature", "1e-3"])  # no checkpoint: GPT-2's weights
    out = capsys.readouterr().out
    assert "vocabulary 50257" in out
    prompt = torch.tensor([gpt.encode("def").tolist()])
    greedy = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=5,
                         do_sample=False, pad_token_id=0)
    assert gpt.decode(greedy[0].tolist()) in out  # the loaded weights, sampled
    refused(gpt, "--init-from", "hf", "--sample-only", "--data", tiny_file,
            says=["is not the text hf was trained on", "--sample-only needs no --data"])
    gpt.main(["--init-from", "hf", "--data", str(tiny_file), "--block-size", "16",
              "--max-steps", "3", "--eval-interval", "3", "--eval-steps", "1", "--num-samples",
              "0"])
    ckpt = torch.load("out/gpt.pt", weights_only=True)
    assert ckpt["config"]["tokens"] == "gpt2" and ckpt["step"] == 3
    assert {k: ckpt["config"][k] for k in ("block_size", "n_embd", "n_head", "n_layer")} == dict(
        block_size=16, n_embd=8, n_head=2, n_layer=1)  # GPT-2's shape, its positions cropped
    assert ckpt["model"]["transformer.wpe.weight"].shape == (16, 8)
    refused(gpt, "--init-from", "hf", "--n-head", 4, "--data", tiny_file,
            says=["--n-head 4 differs from hf's 2"])
    refused(gpt, "--init-from", "hf", "--resume", "--data", tiny_file, says=["give one of them"])
    refused(gpt, "--init-from", "hf", "--tokens", "char", says=["read GPT-2's tokens"])
    refused(gpt, "--init-from", "nowhere", says=["--init-from nowhere: no such folder"])


# ----------------------------------------------------------------------------- many processes

def test_grad_accum_steps_as_one_step_on_the_whole_batch():
    """2 micro-batches of 4 == one batch of 8: the same windows (drawn by seed and the whole
    batch's size), the loss of each micro-batch halved, so the gradients add up to the mean."""
    weights = []
    for batch_size, grad_accum in [(8, 1), (4, 2)]:
        cfg, data, model = tiny_setup(batch_size=batch_size, grad_accum=grad_accum, max_steps=5,
                                      eval_interval=5, eval_steps=1)
        model.double()
        gpt.train(model, gpt.make_optimizer(model, cfg), data, cfg,
                  batches=torch.Generator().manual_seed(0))
        weights.append(model.state_dict())
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=0, atol=1e-12, msg=name)
    assert not torch.equal(weights[1]["lm_head.weight"], tiny_setup()[2].lm_head.weight.double())


def torchrun(*args, cwd, worker=None):
    """torchrun --standalone --nproc_per_node 2, on the CPU (gloo), one thread a process."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           worker or os.path.join(ROOT, "gpt.py"), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def logged_losses(out):
    return re.findall(r"step +\d+ \| train loss \S+ \| val loss \S+", out)


DDP_ARGS = ["--block-size", 16, "--n-embd", 16, "--n-head", 2, "--n-layer", 2, "--batch-size", 4,
            "--warmup-steps", 5, "--eval-interval", 5, "--eval-steps", 2, "--num-samples", 0,
            "--max-steps", 20, "--grad-accum", 2]


def test_torchrun_on_two_processes_equals_one_process(tmp_path, tiny_file, capsys, monkeypatch):
    """Each process takes one of the 2 micro-batches; DDP averages their gradients: the same
    weights, bit for bit, and the same logged losses as one process adding both up."""
    r = torchrun("--data", tiny_file, *DDP_ARGS, "--out-dir", "two", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "on cpu x 2 processes" in r.stdout and r.stdout.count("step    20 |") == 1  # rank 0 logs
    monkeypatch.chdir(tmp_path)
    gpt.main(["--data", str(tiny_file), *map(str, DDP_ARGS), "--out-dir", "one"])
    assert logged_losses(capsys.readouterr().out) == logged_losses(r.stdout)
    assert len(logged_losses(r.stdout)) == 5
    two, one = (torch.load(tmp_path / d / "gpt.pt", weights_only=True) for d in ("two", "one"))
    assert two["step"] == one["step"] == 20
    for name, value in one["model"].items():
        assert torch.equal(two["model"][name], value), name


WORKER = """import os, signal, sys, time
sys.path.insert(0, {root!r})
import gpt

save, sent = gpt.save_checkpoint, []


def save_then_ctrl_c(path, ckpt):  # after the step-15 checkpoint: Ctrl-C on torchrun, once
    save(path, ckpt)
    if ckpt["step"] == 15 and not sent:
        sent.append(True)
        handler, arrived = signal.getsignal(signal.SIGINT), []
        signal.signal(signal.SIGINT, lambda *a: arrived.append(handler(*a)))
        os.kill(os.getppid(), signal.SIGINT)  # torchrun passes it on to every process
        for _ in range(2000):  # until it is back here, so that the run stops at step 15
            if arrived:
                break
            time.sleep(0.01)


gpt.save_checkpoint = save_then_ctrl_c
gpt.main()
"""


def test_torchrun_resumes_one_process_checkpoints_and_the_other_way_round(tmp_path, tiny_file,
                                                                          capsys, monkeypatch):
    """One process to step 10, Ctrl-C; torchrun resumes it, Ctrl-C at 15; one process resumes
    that to 20: the weights of one uninterrupted run."""
    monkeypatch.chdir(tmp_path)
    args = ["--data", str(tiny_file), *map(str, DDP_ARGS)]
    gpt.main([*args, "--out-dir", "whole"])
    save = gpt.save_checkpoint

    def save_then_ctrl_c(path, ckpt):
        save(path, ckpt)
        if ckpt["step"] == 10:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(gpt, "save_checkpoint", save_then_ctrl_c)
    with pytest.raises(SystemExit):
        gpt.main([*args, "--out-dir", "cut"])
    monkeypatch.setattr(gpt, "save_checkpoint", save)
    assert torch.load("cut/gpt.pt", weights_only=True)["step"] == 10
    (tmp_path / "worker.py").write_text(WORKER.format(root=ROOT))
    r = torchrun(*args, "--out-dir", "cut", "--resume", cwd=tmp_path, worker="worker.py")
    assert "interrupted at step 15; saved" in r.stdout, r.stdout + r.stderr
    assert logged_steps(r.stdout) == [15]  # on from step 10
    assert torch.load("cut/gpt.pt", weights_only=True)["step"] == 15
    capsys.readouterr()
    gpt.main([*args, "--out-dir", "cut", "--resume"])
    assert logged_steps(capsys.readouterr().out) == [20]  # on from step 15
    whole, resumed = (torch.load(f"{d}/gpt.pt", weights_only=True) for d in ("whole", "cut"))
    assert resumed["step"] == 20
    for name, value in whole["model"].items():
        assert torch.equal(resumed["model"][name], value), name


# ----------------------------------------------------------------------------- promises kept

def test_sample_only_samples_the_checkpoints_weights_by_seed(tmp_path, tiny_file, capsys,
                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    gpt.main(["--data", str(tiny_file), "--max-steps", "30", "--num-samples", "0",
              *map(str, TINY)])
    capsys.readouterr()
    gpt.main(["--sample-only", "--prompt", "def", "--max-new-tokens", "30"])
    out = capsys.readouterr().out
    ckpt = torch.load("out/gpt.pt", weights_only=True)
    torch.manual_seed(gpt.Config.seed)  # the default --seed; run() draws the initial weights first
    model = gpt.GPT(len(CHARS), 16, 16, 2, 2)
    model.load_state_dict(ckpt["model"])
    idx = gpt.sample(model, gpt.encode("def", CHARS)[None], 30, temperature=0.8)
    assert out.split("-" * 80 + "\n")[1] == gpt.decode(idx[0].tolist(), CHARS) + "\n"
    check_sample_only_draws_by_seed(gpt, capsys, "--max-new-tokens", 40, "--num-samples", 1,
                                    "--temperature", 1.0)


def test_eval_turns_dropout_off():
    model, plain = tiny_model(dropout=0.5), tiny_model(dropout=0.0)
    idx = torch.randint(len(CHARS), (3, 16))
    assert not torch.equal(model(idx)[0], model(idx)[0])  # training: dropout on
    model.eval()
    assert torch.equal(model(idx)[0], plain(idx)[0])


def test_rng_states_keep_every_generator_the_run_draws_from(monkeypatch):
    batches = torch.Generator().manual_seed(1)
    saved = gpt.rng_states(torch.device("cpu"), batches)
    drawn = torch.rand(3), torch.rand(3, generator=batches)
    gpt.set_rng_states(saved, torch.device("cpu"), batches)
    assert all(torch.equal(a, b) for a, b in zip(drawn, (torch.rand(3),
                                                          torch.rand(3, generator=batches))))
    cuda = {}  # on a machine without CUDA: the CUDA generator's state goes out and comes back
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: torch.tensor([7, 8]))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device: cuda.update(state=s))
    states = gpt.rng_states(torch.device("cuda", 0), batches)
    assert torch.equal(states["cuda"], torch.tensor([7, 8]))
    gpt.set_rng_states(states, torch.device("cuda", 0), batches)
    assert torch.equal(cuda["state"], torch.tensor([7, 8]))


@pytest.mark.filterwarnings("ignore:CUDA is not available")
@pytest.mark.parametrize("fused", [False, True])
def test_bf16_autocast_branch(fused):
    """CUDA trains under bf16 autocast; both paths run under it (here on the CPU's autocast) and
    give the float32 loss to bf16's precision."""
    ctx = gpt.autocast(torch.device("cuda"))
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
    assert ctx.device == "cuda" and not isinstance(gpt.autocast(torch.device("cpu")),
                                                   torch.autocast)
    model = tiny_model(dtype=torch.float32, fused=fused)
    idx, targets = torch.randint(len(CHARS), (2, 2, 16))
    _, loss = model(idx, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss_bf16 = model(idx, targets)
    assert logits.dtype == torch.bfloat16
    assert abs(loss_bf16.item() - loss.item()) < 0.05
    loss_bf16.backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())


def test_cli_non_finite_loss_exits_1_and_keeps_the_last_checkpoint(tmp_path, tiny_file, capsys,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    forward = gpt.GPT.forward

    def nan_after_step_10(self, idx, targets=None):
        logits, loss = forward(self, idx, targets)
        self.calls = getattr(self, "calls", 0) + torch.is_grad_enabled()
        return logits, loss * float("nan") if self.calls > 10 else loss

    monkeypatch.setattr(gpt.GPT, "forward", nan_after_step_10)
    with pytest.raises(SystemExit) as exit_:
        gpt.main(["--data", str(tiny_file), "--max-steps", "30", *map(str, TINY)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1 and len(err) == 1 and "not finite at step 10" in err[0], err
    assert torch.load("out/gpt.pt", weights_only=True)["step"] == 10


def test_cli_refuses_a_grad_accum_the_processes_cannot_share(tiny_file, refused, monkeypatch):
    for name, value in [("is_initialized", True), ("get_rank", 0), ("get_world_size", 2),
                        ("destroy_process_group", None)]:  # as under torchrun, 2 processes
        monkeypatch.setattr(gpt.dist, name, lambda value=value: value)
    refused(gpt, "--data", tiny_file, "--grad-accum", 3,
            says=["--grad-accum 3 must be a multiple of the 2 processes"])
