"""seq2seq.py: the attention, the padding, decoding, BLEU, the dates task and the CLI."""
import datetime
import math
import os
import random

import pytest
import torch

import seq2seq
from conftest import (check_metrics, check_padding_invariance, check_refuses_earlier_checkpoints,
                      ctrl_c_at_call, run_script)

TINY = ["--n-embd", 8, "--n-hidden", 16, "--batch-size", 8, "--eval-interval", 10,
        "--eval-steps", 2, "--max-new-tokens", 12, "--num-samples", 2]


def tiny_model(vocab_sizes=(12, 9), seed=0, dtype=torch.float32, **sizes):
    torch.manual_seed(seed)
    sizes = {"n_embd": 6, "n_hidden": 8, "n_layer": 2, "dropout": 0.0, **sizes}
    return seq2seq.Seq2Seq(*vocab_sizes, **sizes).to(dtype).eval()


def random_examples(n, vocab_sizes=(12, 9), seed=0):
    """n examples of random ids (no specials), various lengths, sorted as make_examples does."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        src = [rng.randrange(4, vocab_sizes[0]) for _ in range(rng.randint(1, 7))] + [2]
        tgt = [rng.randrange(4, vocab_sizes[1]) for _ in range(rng.randint(1, 6))] + [2]
        examples.append((src, tgt, [str(t) for t in tgt[:-1]]))
    return sorted(examples, key=lambda e: (len(e[0]), len(e[1])))


# ----------------------------------------------------------------------------- attention

def test_attention_sums_to_one_and_is_exactly_zero_on_padding():
    torch.manual_seed(0)
    attention = seq2seq.Attention(5, 6, 7).double()
    s, h = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 4, 6, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    c, a = attention(s, h, mask)
    assert c.shape == (3, 6) and a.shape == (3, 4)
    torch.testing.assert_close(a.sum(-1), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (a[~mask] == 0).all() and (a[mask] > 0).all()
    assert torch.equal(a[2], torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
    h2 = h.clone()
    h2[~mask] = 1e3  # whatever sits under the padding cannot leak into the context
    c2, a2 = attention(s, h2, mask)
    assert torch.equal(a, a2) and torch.equal(c, c2)
    c3, a3 = attention(s, h, mask, Uh=attention.U(h))  # the hoisted U h is the same thing
    assert torch.equal(a, a3) and torch.equal(c, c3)
    # the equations by hand, one position at a time
    e = torch.stack([attention.v(torch.tanh(attention.W(s) + attention.U(h[:, j])))[:, 0]
                     for j in range(4)], 1).masked_fill(~mask, -math.inf)
    torch.testing.assert_close(a, torch.softmax(e, -1), rtol=0, atol=1e-12)
    torch.testing.assert_close(c, (a[..., None] * h).sum(1), rtol=0, atol=1e-12)


def test_attention_gradients_pass_gradcheck():
    torch.manual_seed(0)
    attention = seq2seq.Attention(3, 4, 5).double()
    s = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    names = [name for name, _ in attention.named_parameters()]
    weights = [p.detach().clone().requires_grad_() for p in attention.parameters()]

    def f(s, h, *weights):
        return torch.func.functional_call(attention, dict(zip(names, weights)), (s, h, mask))

    assert torch.autograd.gradcheck(f, (s, h, *weights))


# ----------------------------------------------------------------------------- the model

def test_padding_changes_no_sentence_output_or_loss():
    model = tiny_model(dtype=torch.float64)
    logits, loss, targets = check_padding_invariance(seq2seq, model, random_examples(5))
    assert logits.shape[-1] == 9
    real = targets != seq2seq.PAD
    by_hand = torch.nn.functional.cross_entropy(logits[real], targets[real])
    torch.testing.assert_close(loss, by_hand, rtol=0, atol=1e-12)


def test_beam_size_1_equals_greedy_and_beams_return_aligned_attention():
    model = tiny_model(n_layer=1, seed=4)  # a seed whose translations end at various lengths
    examples = random_examples(8, seed=1)
    src = seq2seq.collate(examples, "cpu")[0]
    greedy = seq2seq.sample(model, src, 10)
    lengths = [len(ids) for ids, _ in greedy]
    assert min(lengths) > 0 and len(set(lengths)) > 3 and 10 in lengths  # <eos> or the limit
    for i, (ids, attention) in enumerate(greedy):
        n = len(examples[i][0])
        assert attention.shape == (len(ids), n)
        torch.testing.assert_close(attention.sum(-1), torch.ones(len(ids)))
        beam_ids, beam_attention = seq2seq.beam_search(model, src[i:i + 1, :n], 10, 1)
        end = len(ids)
        assert beam_ids.tolist()[:end] == ids and (len(beam_ids) == end or beam_ids[end] == 2)
        torch.testing.assert_close(beam_attention[:end], attention, rtol=0, atol=1e-6)
    beams = seq2seq.sample(model, src, 10, beam_size=4)
    again = seq2seq.sample(model, src, 10, beam_size=4)
    assert [ids for ids, _ in beams] == [ids for ids, _ in again]  # deterministic
    for (ids, attention), example in zip(beams, examples):
        assert attention.shape == (len(ids), len(example[0]))


def summary(h, mask):
    """The fixed summary c of --attention none, from the top layer's states h (B,S,2H): the
    forward state at each sentence's last real token, the backward one at its first."""
    last, H = mask.sum(1) - 1, h.shape[-1] // 2
    return torch.cat((h[torch.arange(len(h)), last, :H], h[:, 0, H:]), dim=-1)  # (B,2H)


def test_without_attention_only_the_summary_replaces_the_context():
    """--attention none is the attention model with c_t replaced by the summary c at every
    step: the same weights but the attention's, and the same logits once the attention model's
    context is forced to c."""
    full, none = tiny_model(dtype=torch.float64), tiny_model(dtype=torch.float64, attention="none")
    assert none.attention is None
    missing = none.load_state_dict(full.state_dict(), strict=False)
    assert not missing.missing_keys
    assert sorted(missing.unexpected_keys) == sorted(f"attention.{name}" for name, _ in
                                                     full.attention.named_parameters())
    src, idx, targets = seq2seq.collate(random_examples(6), "cpu")
    memory, _ = none.encode(src)
    torch.testing.assert_close(memory["c"], summary(full.encode(src)[0]["h"], src != 0),
                               rtol=0, atol=1e-12)
    logits, loss = none(src, idx, targets)
    full.attention.forward = lambda s, h, mask, Uh=None: (summary(h, mask), torch.zeros_like(
        mask, dtype=h.dtype))
    forced, forced_loss = full(src, idx, targets)
    torch.testing.assert_close(logits, forced, rtol=0, atol=1e-12)
    torch.testing.assert_close(loss, forced_loss, rtol=0, atol=1e-12)
    _, _, a = none.decode_step(idx[:, 0], none.encode(src)[1], memory)
    assert a.shape == src.shape and not a.any()  # no weight on any source token


def test_without_attention_the_states_between_the_ends_change_nothing(monkeypatch):
    """Change the encoder's states at every position but each sentence's first and last: the
    decoder without attention writes the same logits (it reads only the summary); with
    attention they change, so the change reached the encoder's output."""
    examples = [e for e in random_examples(12, seed=2) if len(e[0]) >= 4]  # 3+ tokens, <eos>
    src, idx, targets = seq2seq.collate(examples, "cpu")
    models = {kind: tiny_model(dtype=torch.float64, attention=kind) for kind in ("bahdanau",
                                                                                  "none")}
    before = {kind: model(src, idx)[0] for kind, model in models.items()}
    unpack = torch.nn.utils.rnn.pad_packed_sequence

    def disturbed(*args, **kwargs):
        h, lengths = unpack(*args, **kwargs)
        noise = torch.zeros_like(h)
        for row, n in zip(noise, lengths.tolist()):
            row[1:n - 1] = 10 * torch.randn_like(row[1:n - 1])  # not the first, not the last
        return h + noise, lengths

    monkeypatch.setattr(torch.nn.utils.rnn, "pad_packed_sequence", disturbed)
    after = {kind: model(src, idx)[0] for kind, model in models.items()}
    assert torch.equal(after["none"], before["none"])
    assert (after["bahdanau"] - before["bahdanau"]).abs().max() > 1e-3


def test_without_attention_greedy_and_beams_translate():
    model = tiny_model(n_layer=1, seed=4, attention="none")
    examples = random_examples(8, seed=1)
    src = seq2seq.collate(examples, "cpu")[0]
    greedy = seq2seq.sample(model, src, 10)
    for i, (ids, attention) in enumerate(greedy):
        n = len(examples[i][0])
        assert attention.shape == (len(ids), n) and not attention.any()
        beam_ids, _ = seq2seq.beam_search(model, src[i:i + 1, :n], 10, 1)
        assert beam_ids.tolist()[:len(ids)] == ids
    beams = seq2seq.sample(model, src, 10, beam_size=3)
    assert [ids for ids, _ in beams] == [ids for ids, _ in seq2seq.sample(model, src, 10,
                                                                           beam_size=3)]
    assert [len(ids) for ids, _ in greedy] != [0] * len(examples)


class PrefixModel(torch.nn.Module):
    """Next-token probabilities that depend on the whole prefix written so far, kept in the
    state: a search that gives a beam another beam's state reads the wrong row of TABLE."""
    TABLE = {(1,): {4: .5, 5: .4, 6: .1}, (1, 4): {2: .55, 7: .45}, (1, 5): {6: .8, 2: .1, 7: .1},
             (1, 5, 6): {7: .8, 2: .2}, (1, 5, 6, 7): {2: .8, 4: .2}}  # else <eos> (2) surely

    def encode(self, src):
        return {"src": src}, {"prefix": src.new_zeros(len(src), 0)}

    def decode_step(self, y, state, memory):
        prefix = torch.cat((state["prefix"], y[:, None]), 1)  # <bos> (1) first
        p = torch.full((len(y), 8), 1e-12)
        for row, ids in zip(p, prefix.tolist()):
            for token, q in self.TABLE.get(tuple(ids), {2: 1.0}).items():
                row[token] = q
        return p.log(), {"prefix": prefix}, torch.ones(len(y), memory["src"].shape[1])


def test_beam_search_pairs_beams_with_their_state_and_scores_per_token():
    """Greedy takes 4 (0.5) and ends: [4] (0.5 * 0.55). Two beams: [4] <eos> finishes at step 2
    (log 0.275 / 2 tokens = -0.65 per token), [5 6 7] <eos> at step 4 (log 0.2048 / 4 = -0.40):
    it wins per token, though not in total (-1.29 vs -1.59), and is only found if every beam
    continues from its own state (with beam [4]'s state, [5 6] reads a prefix TABLE lacks)."""
    src = torch.tensor([[4, 5, 2]])
    assert seq2seq.sample(PrefixModel(), src, 6)[0][0] == [4]
    ids, attention = seq2seq.sample(PrefixModel(), src, 6, beam_size=2)[0]
    assert ids == [5, 6, 7] and attention.shape == (3, 3)
    assert seq2seq.sample(PrefixModel(), src, 6, beam_size=3)[0][0] == [5, 6, 7]


# ----------------------------------------------------------------------------- metrics, data

def test_bleu_on_hand_computed_cases():
    # p1..p4 = 5/6, 3/5, 2/4, 1/3; c = 6 < r = 7, so the brevity penalty is exp(1 - 7/6)
    hyp, ref = "a b c d e f".split(), "a b c d x f g".split()
    assert seq2seq.bleu([hyp], [ref]) == pytest.approx(math.exp(1 - 7 / 6) * (1 / 12) ** 0.25)
    assert seq2seq.bleu([ref], [ref]) == pytest.approx(1.0)
    # clipping: "the" counts at most as often as the reference has it
    assert seq2seq.bleu([["the"] * 4], [["the", "cat"]], n_max=1) == pytest.approx(1 / 4)
    # corpus level: counts are summed over sentences, then combined (not a mean of sentences)
    hyps, refs = ["a b c d".split(), "a b c d e".split()], ["a b c d".split(), "a b c d f".split()]
    expected = (8 / 9 * 6 / 7 * 4 / 5 * 2 / 3) ** 0.25
    assert seq2seq.bleu(hyps, refs) == pytest.approx(expected)
    assert seq2seq.bleu([["a", "b", "c"]], [["a", "b", "c"]]) == 0.0  # no 4-gram to match


def test_dates_formats_conventions_and_splits():
    d = datetime.date(1993, 3, 9)
    assert [f(d) for f in seq2seq.DATE_FORMATS] == [
        "tuesday, march 9, 1993", "march 9, 1993", "9 mar 93", "03/09/1993", "1993 march 9th",
        "09.03.1993", "9 march 1993", "the 9th of march, 1993", "tue 9 mar 1993", "19930309"]
    assert [seq2seq.ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 31)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "31st"]
    pairs = seq2seq.generate_dates(3000, seed=5)
    assert pairs == seq2seq.generate_dates(3000, seed=5) != seq2seq.generate_dates(3000, seed=6)
    years = [int(target[:4]) for _, target in pairs]
    assert min(years) >= 1900 and max(years) <= 2099 and min(years) < 1920 and max(years) > 2080
    for source, target in pairs:
        date = datetime.date.fromisoformat(target)
        assert source in [f(date) for f in seq2seq.DATE_FORMATS]
        if source == seq2seq.DATE_FORMATS[2](date):  # two-digit years: 1969-2068 only
            assert 1969 <= date.year <= 2068
    assert len({k for s, t in pairs for k, f in enumerate(seq2seq.DATE_FORMATS)
                if f(datetime.date.fromisoformat(t)) == s}) == len(seq2seq.DATE_FORMATS) >= 8
    splits = seq2seq.load_pairs("", "char")
    assert len(splits["train"]) == 20_000 and 1_800 < len(splits["val"]) <= 2_000
    train_sources = {"".join(s) for s, _ in splits["train"]}
    assert not any("".join(s) in train_sources for s, _ in splits["val"])
    assert all(len(t) == 10 and t[4] == t[7] == "-" for _, t in splits["val"])  # characters


def test_tokens_vocabulary_and_tsv(tmp_path):
    assert seq2seq.TOKENIZERS["word"]("Hi, you! It's 9:30.") == [
        "hi", ",", "you", "!", "it", "'", "s", "9", ":", "30", "."]
    assert seq2seq.TOKENIZERS["char"]("Hi!") == ["H", "i", "!"]
    pairs = [(["b", "a", "a"], ["x"]), (["c", "a"], ["y", "x"])]
    vocab = seq2seq.build_vocab(pairs, min_freq=2)
    assert vocab == {"src": ["<pad>", "<bos>", "<eos>", "<unk>", "a"],
                     "tgt": ["<pad>", "<bos>", "<eos>", "<unk>", "x"]}
    assert seq2seq.encode(["a", "z"], {"a": 4}) == [4, 3, 2]
    assert seq2seq.make_examples([(["a", "z"], ["x"])], vocab) == [([4, 3, 2], [4, 2], ["x"])]
    assert seq2seq.decode([4, 3], vocab["src"], "word") == "a <unk>"
    path = tmp_path / "pairs.tsv"
    path.write_text("Go.\tVa !\tCC-BY 2.0 (France) #1\n\nHi.\tSalut.\n", encoding="utf-8")
    assert seq2seq.read_tsv(path) == [("Go.", "Va !"), ("Hi.", "Salut.")]
    splits = seq2seq.load_pairs(str(path), "word")
    assert sorted(splits["train"] + splits["val"]) == [(["go", "."], ["va", "!"]),
                                                        (["hi", "."], ["salut", "."])]


def test_batches_group_similar_lengths():
    examples = random_examples(200)
    torch.manual_seed(0)
    spreads = []
    for _ in range(20):
        src, idx, targets = seq2seq.get_batch(examples, 16, "cpu")
        assert src.shape[0] == 16 and idx.shape == targets.shape
        assert (idx[:, 0] == seq2seq.BOS).all() and torch.equal(idx[:, 1:], targets[:, :-1])
        lengths = (src != seq2seq.PAD).sum(1)
        spreads.append((lengths.max() - lengths.min()).item())
    assert max(spreads) <= 1  # 7 source lengths over 200 examples: a batch spans one or two


# ----------------------------------------------------------------------------- training

def reverse_task(n, seed):
    """Strings of 3-8 letters and the same string backwards."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 8))) for _ in range(n)]
    return [(list(w), list(w[::-1])) for w in words]


def test_learns_to_reverse_within_seconds(capsys):
    pairs = {"train": reverse_task(2000, 0), "val": reverse_task(200, 1)}
    vocab = seq2seq.build_vocab(pairs["train"], 1)
    data = {name: seq2seq.make_examples(p, vocab) for name, p in pairs.items()}
    cfg = seq2seq.Config(n_embd=16, n_hidden=48, batch_size=32, lr=1e-2, max_steps=300,
                         eval_interval=300, eval_steps=2, max_new_tokens=12)
    torch.manual_seed(0)
    model = seq2seq.Seq2Seq(len(vocab["src"]), len(vocab["tgt"]), 16, 48, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    seq2seq.train(model, optimizer, data, vocab, cfg)
    scores = seq2seq.evaluate(model, data["val"], vocab, cfg, "cpu")
    assert scores["exact"] >= 0.9, scores
    assert "step   300 | train loss" in capsys.readouterr().out


def test_lr_follows_the_cosine_from_lr_to_a_tenth_and_train_applies_it():
    cfg = seq2seq.Config(lr=1e-3, max_steps=40, eval_interval=40, eval_steps=1, batch_size=4,
                         max_new_tokens=4)
    cosine = [1e-4 + 0.9e-3 * (1 + math.cos(math.pi * step / 40)) / 2 for step in range(41)]
    assert [seq2seq.get_lr(step, cfg) for step in range(41)] == pytest.approx(cosine, rel=1e-12)
    assert seq2seq.get_lr(20, cfg) == pytest.approx(0.55e-3)
    assert seq2seq.get_lr(99, cfg) == pytest.approx(1e-4)  # after max_steps: stays at lr/10
    model = tiny_model().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0)
    lrs = []
    optimizer.register_step_pre_hook(lambda opt, *_: lrs.append(opt.param_groups[0]["lr"]))
    vocab = {"src": [str(i) for i in range(12)], "tgt": [str(i) for i in range(9)]}
    examples = random_examples(20)
    seq2seq.train(model, optimizer, {"train": examples, "val": examples}, vocab, cfg)
    assert lrs == pytest.approx(cosine[:40], rel=1e-12)


def test_eval_turns_dropout_off():
    model = tiny_model(dropout=0.5, dtype=torch.float64)  # n_layer 2: the GRUs' dropout too
    plain = tiny_model(dropout=0.0, dtype=torch.float64)
    plain.load_state_dict(model.state_dict())
    src, idx, targets = seq2seq.collate(random_examples(4), "cpu")
    torch.testing.assert_close(model.eval()(src, idx)[0], plain(src, idx)[0], rtol=0, atol=0)
    model.train()
    assert not torch.equal(model(src, idx)[0], model(src, idx)[0])


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
    seq2seq.main([])
    out = capsys.readouterr().out
    assert "░" in out or "█" in out  # the attention map is shown
    ckpt = torch.load(tmp_path / "out" / "seq2seq.pt", weights_only=True)
    cfg = seq2seq.Config(**ckpt["config"])
    vocab = ckpt["vocab"]
    model = seq2seq.make_model(vocab, cfg)
    model.load_state_dict(ckpt["model"])
    val = seq2seq.make_examples(seq2seq.load_pairs("", "char")["val"], vocab)
    scores = seq2seq.evaluate(model, val, vocab, cfg, "cpu")  # every val pair, not a subset
    print(f"exact on all {len(val)} val pairs: {scores['exact']:.2%}")  # shown by pytest -rP
    assert scores["exact"] >= 0.99, scores


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(capsys):
    examples = random_examples(40)
    vocab = {"src": [str(i) for i in range(12)], "tgt": [str(i) for i in range(9)]}
    cfg = seq2seq.Config(batch_size=4, max_steps=40, eval_interval=10, eval_steps=1,
                         max_new_tokens=4)
    model = tiny_model().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    forward, calls = model.forward, []

    def poisoned(src, idx, targets=None):  # the loss turns to NaN at the 16th training step
        logits, loss = forward(src, idx, targets)
        calls.extend([1] if torch.is_grad_enabled() else [])
        return logits, loss * float("nan") if len(calls) == 16 else loss

    model.forward = poisoned
    saved = {}
    with pytest.raises(FloatingPointError, match="loss nan, gradient norm nan at step 15"):
        seq2seq.train(model, optimizer, {"train": examples, "val": examples}, vocab, cfg,
                      save=lambda s: saved.update(step=s))
    assert saved["step"] == 10
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_infinite_gradient_under_a_finite_loss_stops_before_the_weights():
    examples = random_examples(40)
    vocab = {"src": [str(i) for i in range(12)], "tgt": [str(i) for i in range(9)]}
    cfg = seq2seq.Config(batch_size=4, max_steps=40, eval_interval=10, eval_steps=1,
                         max_new_tokens=4, grad_clip=0.0)  # no clipping: the check still runs
    model = tiny_model().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    calls = []  # the hook runs in every backward: from the 13th on, one gradient is infinite
    model.bridge.weight.register_hook(
        lambda g: calls.append(1) or (g * math.inf if len(calls) >= 13 else g))
    saved = {}
    with pytest.raises(FloatingPointError, match="gradient norm inf at step 12"):
        seq2seq.train(model, optimizer, {"train": examples, "val": examples}, vocab, cfg,
                      save=lambda s: saved.update(step=s, weights=model.bridge.weight.clone()))
    assert saved["step"] == 10 and torch.isfinite(saved["weights"]).all()
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ----------------------------------------------------------------------------- the CLI

PAIRS = reverse_task(120, 2)


@pytest.fixture
def tsv(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{' '.join(s)}\t{' '.join(t)}\tfrom tatoeba\n" for s, t in PAIRS),
                    encoding="utf-8")
    return path


def test_cli_trains_saves_translates_and_shows_attention(tmp_path, tsv, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    seq2seq.main(["--data", str(tsv), "--tokens", "word", "--max-steps", "20",
                  *map(str, TINY)])
    out = capsys.readouterr().out
    assert "step    20 | train loss" in out and "tokens/s" in out and "| exact" in out
    assert "BLEU" in out and "val ppl" in out and out.count("->") == 2
    for r in check_metrics(tmp_path / "out" / "seq2seq.jsonl", out, "val_loss", "tokens_per_s",
                           "val_ppl", "exact", "bleu"):
        assert f"exact {100 * r['exact']:5.1f}% | BLEU {100 * r['bleu']:5.2f}" in out
    ckpt = torch.load(tmp_path / "out" / "seq2seq.pt", weights_only=True)
    assert ckpt["script"] == "seq2seq" and ckpt["step"] == 20 and ckpt["config"]["tokens"] == "word"
    assert ckpt["vocab"]["src"][:4] == seq2seq.SPECIALS and "a" in ckpt["vocab"]["tgt"]
    translate = ["--sample-only", "--prompt", "a b c", "--beam-size", "3", "--show-attention"]
    seq2seq.main(translate)
    first = capsys.readouterr().out
    assert "step" not in first and "a b c  -> " in first
    header = [line.strip() for line in first.splitlines()]  # source along the top, <eos> last
    assert header.index("a b c <") + 4 == header.index(">")  # "<eos>" written downwards
    assert any(c in first for c in seq2seq.SHADES[1:])
    seq2seq.main(translate)
    assert capsys.readouterr().out == first  # translating is deterministic


def test_cli_without_attention_trains_resumes_and_translates_from_its_checkpoint(
        tmp_path, tsv, monkeypatch, capsys, refused):
    monkeypatch.chdir(tmp_path)
    args = ["--data", str(tsv), "--tokens", "word", *map(str, TINY)]
    seq2seq.main([*args, "--attention", "none", "--max-steps", "10"])
    out = capsys.readouterr().out
    assert "step    10 | train loss" in out
    translations = out.split("-" * 80 + "\n")[1:]  # each its one line: no map of no attention
    assert translations and all(t.count("\n") == 1 for t in translations)
    ckpt = torch.load(tmp_path / "out" / "seq2seq.pt", weights_only=True)
    assert ckpt["config"]["attention"] == "none"
    assert not any(name.startswith("attention.") for name in ckpt["model"])
    seq2seq.main([*args, "--max-steps", "20", "--resume"])  # its model, not the default's
    out = capsys.readouterr().out
    assert "resuming from step 10" in out and "step    20 | train loss" in out
    for beams in ("1", "3"):  # rebuilt from the checkpoint alone: its weights load strictly
        seq2seq.main(["--sample-only", "--prompt", "a b c", "--beam-size", beams])
        assert "a b c  -> " in capsys.readouterr().out
    refused(seq2seq, "--sample-only", "--attention", "bahdanau",
            says=["--attention bahdanau differs from the checkpoint's none"])
    refused(seq2seq, *args, "--resume", "--attention", "bahdanau", says=["--attention bahdanau"])
    refused(seq2seq, "--sample-only", "--show-attention",
            says=["--show-attention", "no attention to show"])
    refused(seq2seq, *args, "--attention", "none", "--show-attention", says=["no attention"])
    refused(seq2seq, *args, "--attention", "luong",
            says=["--attention must be bahdanau or none, got 'luong'"])


def test_a_checkpoint_from_before_attention_was_a_flag_is_bahdanaus(tmp_path, tsv, monkeypatch,
                                                                    capsys, refused):
    monkeypatch.chdir(tmp_path)
    seq2seq.main(["--data", str(tsv), "--tokens", "word", "--max-steps", "5", *map(str, TINY)])
    path = tmp_path / "out" / "seq2seq.pt"
    ckpt = torch.load(path, weights_only=True)
    del ckpt["config"]["attention"]
    torch.save(ckpt, path)
    capsys.readouterr()
    seq2seq.main(["--sample-only", "--prompt", "a b c"])
    assert "a b c  -> " in capsys.readouterr().out
    refused(seq2seq, "--sample-only", "--attention", "none",
            says=["--attention none differs from the checkpoint's bahdanau"])


def test_script_runs_from_the_command_line(tmp_path, tsv):
    r = run_script("seq2seq.py", "--data", tsv, "--tokens", "word", "--max-steps", 10, *TINY,
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "step    10 | train loss" in r.stdout and "->" in r.stdout


def test_cli_exits_1_on_a_non_finite_loss(tmp_path, tsv, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    forward = seq2seq.Seq2Seq.forward
    monkeypatch.setattr(seq2seq.Seq2Seq, "forward", lambda *a: (forward(*a)[0], torch.tensor(
        math.inf, requires_grad=True)))
    with pytest.raises(SystemExit) as exit_:
        seq2seq.main(["--data", str(tsv), "--tokens", "word", "--max-steps", "5", *map(str, TINY)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1 and len(err) == 1 and "loss inf" in err[0], err


def test_sample_only_translates_with_the_checkpoints_weights(tmp_path, tsv, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    seq2seq.main(["--data", str(tsv), "--tokens", "word", "--max-steps", "60", *map(str, TINY)])
    ckpt = torch.load(tmp_path / "out" / "seq2seq.pt", weights_only=True)
    cfg, vocab = seq2seq.Config(**ckpt["config"]), ckpt["vocab"]
    src = seq2seq.collate(seq2seq.make_examples([("a b c d".split(), [])], vocab), "cpu")[0]
    model = seq2seq.make_model(vocab, cfg)
    untrained = seq2seq.decode(seq2seq.sample(model, src, 12)[0][0], vocab["tgt"], "word")
    model.load_state_dict(ckpt["model"])
    trained = seq2seq.decode(seq2seq.sample(model, src, 12)[0][0], vocab["tgt"], "word")
    assert trained != untrained
    capsys.readouterr()
    seq2seq.main(["--sample-only", "--prompt", "a b c d", "--max-new-tokens", "12"])
    assert f"a b c d  ->  {trained}\n" in capsys.readouterr().out


@pytest.mark.parametrize("script", ["seq2seq", "transformer"])  # the same run(), verbatim
def test_the_checkpoint_fixes_min_freq_and_sample_only_translates_its_data(script, tmp_path,
                                                                           tsv, capsys, refused):
    m = __import__(script)
    rare = "".join(f"{' '.join(s)}\t{' '.join(t)} q{i}\n" for i, (s, t) in enumerate(PAIRS))
    (tmp_path / "rare.tsv").write_text(rare)  # every q<i> seen once: <unk> at --min-freq 2
    args = ["--data", "rare.tsv", "--tokens", "word", *map(str, TINY)]
    m.main([*args, "--min-freq", "2", "--max-steps", "2"])
    m.main([*args, "--max-steps", "4", "--resume"])  # its --min-freq, not the default
    refused(m, *args, "--resume", "--min-freq", 1, says=["--min-freq 1 differs from the"
                                                         " checkpoint's 2"])
    refused(m, "--sample-only", "--min-freq", 1, says=["--min-freq 1 differs"])

    def sources_translated(*flags):
        capsys.readouterr()
        m.main(["--sample-only", *flags])
        return {line.split("  ->  ")[0] for line in capsys.readouterr().out.splitlines()
                if "  ->  " in line}

    for path, flags in [("rare.tsv", []), (tsv, ["--data", str(tsv)])]:  # its data, or --data
        val = {" ".join(s) for s, _ in m.load_pairs(str(path), "word")["val"]}
        assert len(sources_translated(*flags) & val) == 4  # --num-samples 4, the default


def test_cli_resume_reaches_the_same_weights_and_ctrl_c_saves(tmp_path, tsv, monkeypatch,
                                                              capsys):
    monkeypatch.chdir(tmp_path)  # dropout on: its masks come from the generator saved too
    args = ["--data", str(tsv), "--tokens", "word", "--max-steps", "30", "--dropout", "0.2",
            *map(str, TINY)]
    seq2seq.main([*args, "--out-dir", "whole"])
    # Ctrl-C arrives while the 25th batch (training or evaluation) is drawn
    get_batch = ctrl_c_at_call(monkeypatch, seq2seq, "get_batch", 25)
    with pytest.raises(SystemExit) as exit_:
        seq2seq.main([*args, "--out-dir", "cut"])
    assert exit_.value.code == 130
    monkeypatch.setattr(seq2seq, "get_batch", get_batch)
    cut = torch.load(tmp_path / "cut" / "seq2seq.pt", weights_only=True)
    assert 10 < cut["step"] < 30 and set(cut["rng"]) == {"cpu"}
    assert f"interrupted at step {cut['step']}; saved" in capsys.readouterr().out
    seq2seq.main([*args, "--out-dir", "cut", "--resume"])
    out = capsys.readouterr().out
    assert f"resuming from step {cut['step']}" in out and f"step {cut['step']:5d} |" not in out
    whole = torch.load(tmp_path / "whole" / "seq2seq.pt", weights_only=True)
    resumed = torch.load(tmp_path / "cut" / "seq2seq.pt", weights_only=True)
    assert resumed["step"] == 30
    for name, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][name]), name


def test_rng_states_keep_the_devices_generator_too(monkeypatch):
    """On a GPU, dropout draws from the device's generator: it is saved and restored with the
    CPU's (faked here, so that the test runs anywhere)."""
    restored = {}
    for kind in ("cuda", "mps"):
        module = {"cuda": torch.cuda, "mps": torch.mps}[kind]
        monkeypatch.setattr(module, "get_rng_state",
                            lambda device, k=kind: torch.tensor([k == "mps"]))
        monkeypatch.setattr(module, "set_rng_state",
                            lambda state, device, k=kind: restored.update({k: (state, device)}))
        device = torch.device(kind)
        states = seq2seq.rng_states(device)
        assert set(states) == {"cpu", kind} and torch.equal(states["cpu"], torch.get_rng_state())
        seq2seq.set_rng_states(states, device)
        assert restored[kind][0] is states[kind] and restored[kind][1] == device
    assert set(seq2seq.rng_states(torch.device("cpu"))) == {"cpu"}


def test_device_is_picked_cuda_then_mps_then_cpu_and_a_missing_one_refused(tsv, monkeypatch,
                                                                           refused):
    for cuda, mps, expected in [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        assert seq2seq.pick_device("") == torch.device(expected)
    assert seq2seq.pick_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:0", "mps"):
        refused(seq2seq, "--data", tsv, "--device", name,
                says=[f"--device {name} is not available here"])
    refused(seq2seq, "--data", tsv, "--device", "tpu9", says=["unknown --device 'tpu9'"])


def test_cli_refuses_bad_data(tmp_path, tsv, refused):
    refused(seq2seq, "--data", "nope.tsv", says=["cannot read --data nope.tsv", "No such file"])
    (tmp_path / "empty.tsv").write_text("\n\n")
    refused(seq2seq, "--data", "empty.tsv", says=["no source<TAB>target pairs"])
    (tmp_path / "bad.tsv").write_text("a\tb\nc\td\nno tab here\ne\tf\n")
    refused(seq2seq, "--data", "bad.tsv", says=["line 3", "not source<TAB>target"])
    (tmp_path / "blank.tsv").write_text("a\tb\n \tc\n")
    refused(seq2seq, "--data", "blank.tsv", says=["line 2"])
    (tmp_path / "one.tsv").write_text("a\tb\n")
    refused(seq2seq, "--data", "one.tsv", says=["1 pair", "need 2"])
    (tmp_path / "latin1.tsv").write_bytes("café\tcoffee\n".encode("latin-1"))
    refused(seq2seq, "--data", "latin1.tsv", says=["not UTF-8"])
    refused(seq2seq, "--data", tsv, "--tokens", "word", "--prompt", "a zebra b", *TINY,
            says=["--prompt", "never seen", "'zebra'"])


def test_cli_refuses_impossible_settings(tsv, refused):
    for flag, value in [("--n-hidden", 0), ("--beam-size", 0), ("--min-freq", 0), ("--lr", 0),
                        ("--max-new-tokens", 0), ("--n-layer", 0), ("--dropout", -0.1)]:
        refused(seq2seq, "--data", tsv, flag, value, says=[flag, "must be"])
    refused(seq2seq, "--data", tsv, "--dropout", 1, says=["--dropout must be below 1"])
    refused(seq2seq, "--data", tsv, "--tokens", "bpe", says=["--tokens must be char or word"])


def test_cli_refuses_missing_or_foreign_checkpoints(tmp_path, tsv, refused):
    refused(seq2seq, "--sample-only", "--prompt", "x", says=["no checkpoint"])
    (tmp_path / "other").mkdir()
    torch.save({"script": "transformer", "config": {}}, tmp_path / "other" / "seq2seq.pt")
    refused(seq2seq, "--sample-only", "--out-dir", "other", says=["transformer.py, not of"])
    seq2seq.main(["--data", str(tsv), "--tokens", "word", "--max-steps", "5", *map(str, TINY)])
    refused(seq2seq, "--sample-only", "--prompt", "a", "--n-hidden", 64,
            says=["--n-hidden 64 differs from the checkpoint's 16"])
    refused(seq2seq, "--sample-only", "--prompt", "a", "--n-hidden", 128,  # the default, asked
            says=["--n-hidden 128 differs from the checkpoint's 16"])
    (tmp_path / "other.tsv").write_text("x y\tz\nw\tv\n")
    refused(seq2seq, "--resume", "--data", "other.tsv", "--tokens", "word", *TINY,
            says=["vocabulary differs"])
    check_refuses_earlier_checkpoints(refused, seq2seq, tmp_path / "out" / "seq2seq.pt",
                                      "--sample-only", "--prompt", "a")
