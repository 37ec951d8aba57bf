"""transformer.py: the layers against torch.nn.Transformer and nn.MultiheadAttention, the
translation model around them (padding, the decoder's cache, decoding), the dates task, the CLI.
The data, metrics, training loop and decoding are seq2seq.py's, verbatim (a test checks that),
and tests/test_seq2seq.py tests them."""
import inspect
import math
import os
import random
import re

import pytest
import torch
import torch.nn as nn

import seq2seq
import transformer as tr
from conftest import (check_metrics, check_padding_invariance, check_refuses_earlier_checkpoints,
                      ctrl_c_at_call)

TINY = ["--n-embd", 8, "--n-hidden", 16, "--n-head", 2, "--batch-size", 8, "--eval-interval",
        10, "--eval-steps", 2, "--max-new-tokens", 12, "--num-samples", 2]


def pad_mask(lengths, T):
    """(B,T) bool, True at the padded positions beyond each row's length."""
    return torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]


def assert_same_grads(ours, ref):
    for (name, p_ref), (name_ours, p) in zip(ref.named_parameters(), ours.named_parameters()):
        assert name == name_ours
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=0, atol=1e-10, msg=name)


# ----------------------------------------------------------------------------- the layers

@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")  # float and bool
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("variant", ["batch_first relu bias", "seq_first gelu no-bias masks"])
def test_transformer_matches_nn_transformer(norm_first, variant):
    """2+2 layers, float64, dropout 0, train mode (torch's slow path: padded positions are
    defined): padding on source and target, a causal target mask; in the second variant also
    (S,B,E) inputs, gelu, no biases (nor LayerNorm biases), and an explicit src_mask (bool) and
    memory_mask (float). Outputs and every gradient."""
    torch.manual_seed(0)
    batch_first = variant.startswith("batch_first")
    kw = dict(d_model=16, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
              dim_feedforward=24, dropout=0.0, batch_first=batch_first, norm_first=norm_first)
    if not batch_first:
        kw.update(activation="gelu", bias=False)
    ref = nn.Transformer(**kw).double()
    ours = tr.Transformer(**kw).double()
    ours.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():  # LayerNorm gains away from 1, so that a lost one shows
        for p_ref, p in zip(ref.parameters(), ours.parameters()):
            p.copy_(p_ref.add_(0.1 * torch.randn_like(p_ref)))
    src = torch.randn(3, 7, 16, dtype=torch.float64)
    tgt = torch.randn(3, 5, 16, dtype=torch.float64)
    masks = dict(tgt_mask=torch.ones(5, 5, dtype=torch.bool).triu(1),
                 src_key_padding_mask=pad_mask([7, 4, 2], 7),
                 tgt_key_padding_mask=pad_mask([5, 5, 3], 5),
                 memory_key_padding_mask=pad_mask([7, 4, 2], 7))
    if not batch_first:
        src, tgt = src.transpose(0, 1), tgt.transpose(0, 1)
        src_mask = torch.rand(7, 7) < 0.3
        src_mask[:, 0] = False  # every position keeps a key to look at
        masks.update(src_mask=src_mask, memory_mask=torch.randn(5, 7, dtype=torch.float64))
    inputs = [(src.clone().requires_grad_(), tgt.clone().requires_grad_()) for _ in range(2)]
    out_ref = ref(*inputs[0], **masks)
    out = ours(*inputs[1], **masks)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-10)
    w = torch.randn_like(out)  # a loss that weighs every output differently
    (out_ref * w).sum().backward()
    (out * w).sum().backward()
    assert_same_grads(ours, ref)
    for x_ours, x_ref in zip(inputs[1], inputs[0]):
        torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=0, atol=1e-10)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
def test_transformer_state_dict_both_ways_and_same_init():
    kw = dict(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=2,
              dim_feedforward=12)
    torch.manual_seed(1)
    ref = nn.Transformer(**kw)
    torch.manual_seed(1)
    ours = tr.Transformer(**kw)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for name, value in ref.state_dict().items():  # same seed, same draws: torch's own init
        assert torch.equal(ours.state_dict()[name], value), name
    ref.load_state_dict(tr.Transformer(**kw, norm_first=True).state_dict(), strict=True)
    ours.load_state_dict(nn.Transformer(**kw, bias=True).state_dict(), strict=True)
    assert set(tr.Transformer(**kw, bias=False).state_dict()) == set(
        nn.Transformer(**kw, bias=False).state_dict())


def test_square_subsequent_mask():
    assert torch.equal(tr.Transformer.generate_square_subsequent_mask(4),
                       nn.Transformer.generate_square_subsequent_mask(4))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("masks", ["none", "bool", "float3d", "causal"])
@pytest.mark.parametrize("average", [True, False])
def test_multihead_attention_matches_nn(batch_first, masks, average):
    torch.manual_seed(2)
    B, T, S, E, h = 3, 4, 6, 8, 2
    ref = nn.MultiheadAttention(E, h, batch_first=batch_first).double()
    ours = tr.MultiheadAttention(E, h, batch_first=batch_first).double()
    ours.load_state_dict(ref.state_dict(), strict=True)
    shape = (lambda n: (B, n, E)) if batch_first else (lambda n: (n, B, E))
    x = torch.randn(shape(T), dtype=torch.float64)
    mem = torch.randn(shape(S), dtype=torch.float64)
    kw, self_attention = {}, masks == "causal"
    if masks == "bool":
        kw = dict(key_padding_mask=pad_mask([6, 3, 1], S),
                  attn_mask=torch.rand(T, S) < 0.3)
        kw["attn_mask"][:, 0] = False  # every query keeps a key to look at
    elif masks == "float3d":
        kw = dict(attn_mask=torch.randn(B * h, T, S, dtype=torch.float64),
                  key_padding_mask=torch.zeros(B, S, dtype=torch.float64).masked_fill(
                      pad_mask([6, 3, 1], S), float("-inf")))
    elif masks == "causal":
        kw = dict(attn_mask=torch.ones(T, T, dtype=torch.bool).triu(1),
                  key_padding_mask=pad_mask([4, 2, 3], T), is_causal=True)
    results = []
    for module in (ref, ours):
        q = x.clone().requires_grad_()
        kv = q if self_attention else mem.clone().requires_grad_()
        y, att = module(q, kv, kv, average_attn_weights=average, **kw)
        (y.sum() + (att * torch.arange(att.numel()).view_as(att)).sum()).backward()
        results.append((y, att, q.grad, kv.grad, [p.grad for p in module.parameters()]))
    for a, b in zip(results[1], results[0]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_multihead_attention_state_dict_and_init():
    torch.manual_seed(3)
    ref = nn.MultiheadAttention(8, 2, bias=False)
    torch.manual_seed(3)
    ours = tr.MultiheadAttention(8, 2, bias=False)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for name, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name
    y, att = ours(torch.randn(5, 2, 8), torch.randn(3, 2, 8), torch.randn(3, 2, 8),
                  need_weights=False)
    assert y.shape == (5, 2, 8) and att is None


# ----------------------------------------------------------------------------- the translator

def tiny_model(vocab_sizes=(12, 9), seed=0, dtype=torch.float64, **sizes):
    torch.manual_seed(seed)
    sizes = {"n_embd": 8, "n_hidden": 16, "n_layer": 2, "n_head": 2, "dropout": 0.0, **sizes}
    return tr.Translator(*vocab_sizes, **sizes).to(dtype).eval()


def random_examples(n, vocab_sizes=(12, 9), seed=0):
    """n examples of random ids (no specials), various lengths, sorted as make_examples does."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        src = [rng.randrange(4, vocab_sizes[0]) for _ in range(rng.randint(1, 7))] + [tr.EOS]
        tgt = [rng.randrange(4, vocab_sizes[1]) for _ in range(rng.randint(1, 6))] + [tr.EOS]
        examples.append((src, tgt, [str(t) for t in tgt[:-1]]))
    return sorted(examples, key=lambda e: (len(e[0]), len(e[1])))


def sections(module):
    """A script's text cut at its `# ---- name` banners: {"config": ..., "data": ..., ...}."""
    parts = re.split(r"^# -{20,} (\w+)\n", inspect.getsource(module), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_shared_parts_are_seq2seq_py_verbatim():
    """Data, training loop, decoding and main are seq2seq.py's text (all but the schedule),
    so that test_seq2seq.py's tests of them hold here too and `diff` shows the model."""
    ours, theirs = sections(tr), sections(seq2seq)
    for name in ("data", "sample", "main"):
        assert ours[name] == theirs[name], name
    without_lr = [re.sub(r"^def get_lr\(.*?\n\n\n", "", part["train"], flags=re.M | re.S)
                  for part in (ours, theirs)]
    assert without_lr[0] == without_lr[1] and len(without_lr[0]) < len(ours["train"])


def test_positional_encoding_is_the_papers():
    pe = tr.positional_encoding(torch.arange(50), 16)
    pos, i = 37, 5
    assert pe[pos, 2 * i].item() == pytest.approx(math.sin(pos / 10000 ** (2 * i / 16)))
    assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(pos / 10000 ** (2 * i / 16)))
    torch.testing.assert_close(tr.positional_encoding(torch.arange(30, 50), 16), pe[30:])


def test_embeddings_scaled_output_tied_and_label_smoothing():
    model = tiny_model()
    assert model.lm_head.weight is model.tgt_emb.weight
    src, idx, targets = tr.collate(random_examples(4), "cpu")
    x = model.embed(model.tgt_emb, idx)
    pe = tr.positional_encoding(torch.arange(idx.shape[1]), 8)
    torch.testing.assert_close(x, model.tgt_emb(idx) * 8 ** 0.5 + pe, rtol=0, atol=1e-12)
    logits, loss = model(src, idx, targets)
    real = targets != tr.PAD
    nll = nn.functional.cross_entropy(logits[real], targets[real])
    torch.testing.assert_close(loss, nll, rtol=0, atol=1e-12)  # evaluation: no smoothing
    logp = logits[real].log_softmax(-1)
    smoothed = 0.9 * nll - 0.1 * logp.mean(-1).mean()  # 0.1 spread uniformly over V tokens
    torch.testing.assert_close(model.train()(src, idx, targets)[1], smoothed, rtol=0, atol=1e-12)


def test_padding_changes_no_sentence_output_or_loss():
    model = tiny_model()
    logits, loss, targets = check_padding_invariance(tr, model, random_examples(5))
    assert logits.shape[-1] == 9


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_cache_changes_nothing(norm_first):
    """decode_step, one position at a time with cached keys and values, gives the logits of
    the whole-sequence forward; its attention is the last layer's, 0 on padding."""
    model = tiny_model(norm_first=norm_first)
    examples = random_examples(6, seed=2)
    src, idx, _ = tr.collate(examples, "cpu")
    logits, _ = model(src, idx)
    memory, state = model.encode(src)
    for t in range(idx.shape[1]):
        logits_t, state, attention = model.decode_step(idx[:, t], state, memory)
        torch.testing.assert_close(logits_t, logits[:, t], rtol=0, atol=1e-10)
        for cache in state:  # self-attention: one position more per step, not recomputed
            assert cache["self"]["k"].shape == cache["self"]["v"].shape == (6, t + 1, 8)
            assert cache["cross"]["k"].shape == (6, src.shape[1], 8)
        torch.testing.assert_close(attention.sum(-1), torch.ones(6, dtype=torch.float64))
        assert (attention[src == tr.PAD] == 0).all()
    cache = [{} for _ in range(2)]  # the same through the layers' own cache argument
    x = model.embed(model.tgt_emb, idx)
    h, pad = model.memory(src)
    steps = [model.transformer.decoder(x[:, t:t + 1], h, memory_key_padding_mask=pad,
                                       cache=cache) for t in range(idx.shape[1])]
    whole = model.transformer.decoder(x, h, memory_key_padding_mask=pad, tgt_is_causal=True)
    torch.testing.assert_close(torch.cat(steps, 1), whole, rtol=0, atol=1e-10)


def test_beam_size_1_equals_greedy():
    model = tiny_model(seed=3, dtype=torch.float32)
    examples = random_examples(8, seed=1)
    src = tr.collate(examples, "cpu")[0]
    greedy = tr.sample(model, src, 10)
    assert any(len(ids) < 10 for ids, _ in greedy)  # some stop at <eos>, not only at the limit
    for i, (ids, attention) in enumerate(greedy):
        n = len(examples[i][0])
        assert attention.shape == (len(ids), n)
        beam_ids, beam_attention = tr.beam_search(model, src[i:i + 1, :n], 10, 1)
        end = len(ids)
        assert beam_ids.tolist()[:end] == ids and (len(beam_ids) == end or beam_ids[end] == 2)
        torch.testing.assert_close(beam_attention[:end], attention, rtol=0, atol=1e-6)


def slow_beam_search(model, src, max_new_tokens, beam_size):
    """Beam search as the definition says it, written plainly: every hypothesis a list, its
    next-token log-probabilities from the whole-sequence forward (no cache, no state), the
    finished scored by log-probability per token."""
    live, finished = [([], 0.0)], []
    for t in range(max_new_tokens):
        candidates = []
        for ys, score in live:
            logp = model(src, torch.tensor([[tr.BOS] + ys]))[0][0, -1].log_softmax(-1)
            candidates += [(ys + [token], score + lp) for token, lp in enumerate(logp.tolist())]
        candidates = sorted(candidates, key=lambda c: -c[1])[:beam_size - len(finished)]
        finished += [(score / (t + 1), ys) for ys, score in candidates if ys[-1] == tr.EOS]
        live = [(ys, score) for ys, score in candidates if ys[-1] != tr.EOS]
        if len(finished) >= beam_size or not live or t == max_new_tokens - 1:
            finished += [(score / (t + 1), ys) for ys, score in live]
            break
    ys = max(finished)[1]
    return ys[:ys.index(tr.EOS)] if tr.EOS in ys else ys


def test_beam_search_reorders_the_decoders_cache_with_its_beams():
    model = tiny_model(seed=3)
    examples = random_examples(8, seed=1)
    src = tr.collate(examples, "cpu")[0]
    greedy = [ids for ids, _ in tr.sample(model, src, 10)]
    for beam_size in (2, 3):
        beams = tr.sample(model, src, 10, beam_size=beam_size)
        for i, (ids, attention) in enumerate(beams):
            n = len(examples[i][0])
            assert ids == slow_beam_search(model, src[i:i + 1, :n], 10, beam_size), (i, beam_size)
            assert attention.shape == (len(ids), n)
        assert [ids for ids, _ in beams] != greedy  # the search changes some translations


def test_lr_schedule_warms_up_decays_as_inverse_sqrt_then_cools_down():
    cfg = tr.Config(lr=1e-3, warmup_steps=100, max_steps=1000, cooldown=0.2)
    lrs = [tr.get_lr(step, cfg) for step in range(1000)]
    assert lrs[0] == pytest.approx(1e-5) and max(lrs) == lrs[99] == pytest.approx(1e-3)
    assert lrs[399] == pytest.approx(1e-3 * (100 / 400) ** 0.5)
    assert all(a < b for a, b in zip(lrs[:99], lrs[1:100]))
    assert lrs[800] == pytest.approx(1e-3 * (100 / 801) ** 0.5)  # the cooldown begins
    assert lrs[900] == pytest.approx(0.5 * 1e-3 * (100 / 901) ** 0.5)
    assert lrs[999] == pytest.approx(1e-3 * (100 / 1000) ** 0.5 / 200)  # the last step's
    cfg.cooldown = 0  # the paper's schedule alone
    assert tr.get_lr(999, cfg) == pytest.approx(1e-3 * (100 / 1000) ** 0.5)


def test_train_applies_the_schedule():
    cfg = tr.Config(lr=1e-3, warmup_steps=10, cooldown=1 / 3, max_steps=30, eval_interval=30,
                    eval_steps=1, batch_size=4, max_new_tokens=4)
    model = tiny_model(dtype=torch.float32).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0)
    lrs = []
    optimizer.register_step_pre_hook(lambda opt, *_: lrs.append(opt.param_groups[0]["lr"]))
    vocab = {"src": [str(i) for i in range(12)], "tgt": [str(i) for i in range(9)]}
    examples = random_examples(20)
    tr.train(model, optimizer, {"train": examples, "val": examples}, vocab, cfg)
    expected = [1e-3 * min((s + 1) / 10, (10 / (s + 1)) ** 0.5) * min(1, (30 - s) / 10)
                for s in range(30)]
    assert lrs == pytest.approx(expected, rel=1e-12)


def test_eval_turns_dropout_off():
    """Dropout on embeddings, attention weights and every sublayer: on in train(), off in
    eval(), where the model is the same as one built without dropout."""
    model = tiny_model(dropout=0.5)
    plain = tiny_model(dropout=0.0)
    plain.load_state_dict(model.state_dict())
    src, idx, targets = tr.collate(random_examples(4), "cpu")
    torch.testing.assert_close(model.eval()(src, idx)[0], plain(src, idx)[0], rtol=0, atol=0)
    attention = model.transformer.encoder.layers[0].self_attn.train()
    x = torch.randn(3, 2, 8, dtype=torch.float64)
    assert not torch.equal(attention(x, x, x)[1], attention(x, x, x)[1])  # its own dropout
    model.train()
    assert not torch.equal(model(src, idx)[0], model(src, idx)[0])


def copy_task(n, seed):
    """Strings of 3-8 letters, to be copied."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 8))) for _ in range(n)]
    return [(list(w), list(w)) for w in words]


def test_loss_falls_on_a_tiny_task(capsys):
    pairs = {"train": copy_task(1000, 0), "val": copy_task(100, 1)}
    vocab = tr.build_vocab(pairs["train"], 1)
    data = {name: tr.make_examples(p, vocab) for name, p in pairs.items()}
    cfg = tr.Config(n_embd=32, n_hidden=64, n_layer=1, n_head=2, dropout=0.0, batch_size=32,
                    lr=1e-2, warmup_steps=30, max_steps=100, eval_interval=100, eval_steps=2,
                    max_new_tokens=10)
    torch.manual_seed(0)
    model = tr.make_model(vocab, cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scores = tr.train(model, optimizer, data, vocab, cfg)
    assert scores["val"] < 0.5 * math.log(len(vocab["tgt"])), scores  # from ~log V at the start
    assert "step   100 | train loss" in capsys.readouterr().out


@pytest.fixture
def threads_as_asked():
    """The default run's result moves with the float path: it runs with the OMP_NUM_THREADS the
    suite was started with (1 if unset), as on the command line, not with the suite's one."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    yield
    torch.set_num_threads(1)


@pytest.mark.slow
def test_default_run_reaches_99_percent_on_dates(tmp_path, monkeypatch, capsys, threads_as_asked):
    monkeypatch.chdir(tmp_path)
    tr.main([])
    out = capsys.readouterr().out
    assert "░" in out or "█" in out  # the attention map is shown
    ckpt = torch.load(tmp_path / "out" / "transformer.pt", weights_only=True)
    cfg, vocab = tr.Config(**ckpt["config"]), ckpt["vocab"]
    model = tr.make_model(vocab, cfg)
    model.load_state_dict(ckpt["model"])
    val = tr.make_examples(tr.load_pairs("", "char")["val"], vocab)
    scores = tr.evaluate(model, val, vocab, cfg, "cpu")  # every val pair, not a subset
    print(f"exact on all {len(val)} val pairs: {scores['exact']:.2%}")  # shown by pytest -rP
    assert scores["exact"] >= 0.99, scores


# ----------------------------------------------------------------------------- the CLI

@pytest.fixture
def tsv(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{' '.join(s)}\t{' '.join(t)}\n" for s, t in copy_task(120, 2)),
                    encoding="utf-8")
    return path


def test_cli_trains_resumes_exactly_and_translates(tmp_path, tsv, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # dropout on: its masks come from the generator saved too
    args = ["--data", str(tsv), "--tokens", "word", "--max-steps", "30", "--dropout", "0.2",
            *map(str, TINY)]
    tr.main([*args, "--out-dir", "whole"])
    out = capsys.readouterr().out
    assert "step    30 | train loss" in out and "| exact" in out and out.count("->") == 2
    check_metrics(tmp_path / "whole" / "transformer.jsonl", out, "val_loss", "exact", "bleu")
    ckpt = torch.load(tmp_path / "whole" / "transformer.pt", weights_only=True)
    assert ckpt["script"] == "transformer" and ckpt["step"] == 30
    assert ckpt["config"]["n_head"] == 2 and "lm_head.weight" in ckpt["model"]
    # Ctrl-C arrives while the 25th batch (training or evaluation) is drawn
    get_batch = ctrl_c_at_call(monkeypatch, tr, "get_batch", 25)
    with pytest.raises(SystemExit) as exit_:
        tr.main([*args, "--out-dir", "cut"])
    assert exit_.value.code == 130
    monkeypatch.setattr(tr, "get_batch", get_batch)
    cut = torch.load(tmp_path / "cut" / "transformer.pt", weights_only=True)["step"]
    assert 10 < cut < 30 and f"interrupted at step {cut}; saved" in capsys.readouterr().out
    tr.main([*args, "--out-dir", "cut", "--resume"])  # the warmup schedule goes on, not anew
    out = capsys.readouterr().out
    assert f"resuming from step {cut}" in out and f"step {cut:5d} |" not in out
    resumed = torch.load(tmp_path / "cut" / "transformer.pt", weights_only=True)
    assert resumed["step"] == 30
    for name, value in ckpt["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    capsys.readouterr()
    translate = ["--sample-only", "--out-dir", "whole", "--prompt", "a b c", "--beam-size", "3",
                 "--show-attention"]
    tr.main(translate)
    first = capsys.readouterr().out
    assert "step" not in first and "a b c  -> " in first
    assert any(c in first for c in tr.SHADES[1:])
    tr.main(translate)
    assert capsys.readouterr().out == first  # translating is deterministic


def test_sample_only_translates_with_the_checkpoints_weights(tmp_path, tsv, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tr.main(["--data", str(tsv), "--tokens", "word", "--max-steps", "60", *map(str, TINY)])
    ckpt = torch.load(tmp_path / "out" / "transformer.pt", weights_only=True)
    cfg, vocab = tr.Config(**ckpt["config"]), ckpt["vocab"]
    src = tr.collate(tr.make_examples([("a b c d".split(), [])], vocab), "cpu")[0]
    model = tr.make_model(vocab, cfg)
    untrained = tr.decode(tr.sample(model, src, 12)[0][0], vocab["tgt"], "word")
    model.load_state_dict(ckpt["model"])
    trained = tr.decode(tr.sample(model, src, 12)[0][0], vocab["tgt"], "word")
    assert trained != untrained
    capsys.readouterr()
    tr.main(["--sample-only", "--prompt", "a b c d", "--max-new-tokens", "12"])
    assert f"a b c d  ->  {trained}\n" in capsys.readouterr().out


def test_cli_exits_1_on_a_non_finite_loss(tmp_path, tsv, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    forward = tr.Translator.forward
    monkeypatch.setattr(tr.Translator, "forward", lambda *a: (forward(*a)[0], torch.tensor(
        math.nan, requires_grad=True)))
    with pytest.raises(SystemExit) as exit_:
        tr.main(["--data", str(tsv), "--tokens", "word", "--max-steps", "5", *map(str, TINY)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1 and len(err) == 1 and "loss nan" in err[0], err


def test_device_is_picked_cuda_then_mps_then_cpu_and_a_missing_one_refused(tsv, monkeypatch,
                                                                           refused):
    for cuda, mps, expected in [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        assert tr.pick_device("") == torch.device(expected)
    for name in ("cuda", "mps"):
        refused(tr, "--data", tsv, "--device", name,
                says=[f"--device {name} is not available here"])


def test_cli_refuses_bad_settings_and_foreign_checkpoints(tmp_path, tsv, refused):
    refused(tr, "--data", tsv, "--n-embd", 10, "--n-head", 4, says=["--n-head 4 must divide"])
    for flag, value in [("--n-head", 0), ("--warmup-steps", 0), ("--n-layer", 0),
                        ("--dropout", -0.1), ("--cooldown", -0.1), ("--cooldown", 1.5)]:
        refused(tr, "--data", tsv, flag, value, says=[flag, "must be"])
    refused(tr, "--sample-only", "--prompt", "x", says=["no checkpoint"])
    (tmp_path / "other").mkdir()
    torch.save({"script": "seq2seq", "config": {}}, tmp_path / "other" / "transformer.pt")
    refused(tr, "--sample-only", "--out-dir", "other", says=["seq2seq.py, not of transformer"])
    tr.main(["--data", str(tsv), "--tokens", "word", "--max-steps", "2", *map(str, TINY)])
    refused(tr, "--sample-only", "--prompt", "a", "--n-head", 8,
            says=["--n-head 8 differs from the checkpoint's 2"])
    refused(tr, "--sample-only", "--prompt", "a", "--n-head", 4,  # the default, asked for
            says=["--n-head 4 differs from the checkpoint's 2"])
    refused(tr, "--sample-only", "--prompt", "a zebra", says=["never seen", "'zebra'"])
    check_refuses_earlier_checkpoints(refused, tr, tmp_path / "out" / "transformer.pt",
                                      "--sample-only", "--prompt", "a")
