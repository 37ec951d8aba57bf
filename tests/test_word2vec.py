"""word2vec.py: the objective against F.logsigmoid, word2vec.c's formulas, planted structure,
evaluation on hand-computed files, export, CLI and refusals."""
import dataclasses
import math
import os
import random
import signal

import pytest
import torch
import torch.nn.functional as F

import word2vec as w2v
from conftest import check_metrics, ctrl_c_at_call

TINY = ["--dim", 8, "--window", 2, "--negative", 3, "--min-count", 1, "--batch-size", 16,
        "--eval-interval", 5, "--epochs", 1, "--top-k", 3]


# ----------------------------------------------------------------------------- the objective

def direct_loss(v, u, weight):
    """The objective pair by pair, with torch's own logsigmoid."""
    total = 0
    for b in range(v.shape[0]):
        for j in range(v.shape[1]):
            terms = [F.logsigmoid(u[b, 0] @ v[b, j])]
            terms += [F.logsigmoid(-u[b, k] @ v[b, j]) for k in range(1, u.shape[1])]
            total = total - sum(t * weight[b, j, k] for k, t in enumerate(terms))
    return total


def test_logsigmoid_matches_torch_without_overflow():
    x = torch.tensor([-1000.0, -30.0, -1.0, 0.0, 1e-3, 2.0, 30.0, 1000.0], dtype=torch.float64)
    torch.testing.assert_close(w2v.logsigmoid(x), F.logsigmoid(x), rtol=0, atol=1e-12)


def test_loss_and_gradients_match_direct_computation_float64():
    torch.manual_seed(0)
    v = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    u = torch.randn(3, 3, 5, dtype=torch.float64, requires_grad=True)
    weight = (torch.rand(3, 4, 3) < 0.7).double()
    ours = w2v.negative_sampling_loss(v, u, weight)
    grads = torch.autograd.grad(ours, (v, u))
    ref = direct_loss(v, u, weight)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)
    for g, g_ref in zip(grads, torch.autograd.grad(ref, (v, u))):
        torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-10)
    assert torch.autograd.gradcheck(lambda a, b: w2v.negative_sampling_loss(a, b, weight), (v, u))


def toy_batch():
    """B=2 centres, J=4 slots, K=3 noise words (one of them equal to its target)."""
    context = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 1]])
    mask = torch.tensor([[True, True, False, True], [False, True, True, True]])
    targets = torch.tensor([7, 8])
    noise = torch.tensor([[2, 7, 9], [3, 4, 5]])  # 7 is the first centre's target: skipped
    return context, mask, targets, noise


def test_skip_gram_forward_is_the_objective_over_the_window():
    torch.manual_seed(1)
    model = w2v.Word2Vec(10, 6).double()
    torch.nn.init.normal_(model.emb_out.weight)
    context, mask, targets, noise = toy_batch()
    loss, n = model(context, mask, targets, noise)
    ref = 0
    for b in range(2):
        for j in range(4):
            if mask[b, j]:
                v = model.emb_in.weight[context[b, j]]
                ref = ref - F.logsigmoid(model.emb_out.weight[targets[b]] @ v)
                ref = ref - sum(F.logsigmoid(-model.emb_out.weight[k] @ v)
                                for k in noise[b] if k != targets[b])
    torch.testing.assert_close(loss, ref, rtol=0, atol=1e-10)
    assert n == 6


def test_cbow_uses_the_mean_and_gives_each_context_word_the_whole_gradient():
    torch.manual_seed(2)
    model = w2v.Word2Vec(10, 6).double()
    torch.nn.init.normal_(model.emb_out.weight)
    context, mask, targets, noise = toy_batch()
    loss, n = model(context, mask, targets, noise, cbow=True)
    loss.backward()
    grad_in = model.emb_in.weight.grad.to_dense()
    ref, grad_ref = 0, torch.zeros_like(grad_in)
    for b in range(2):
        h = model.emb_in.weight[context[b][mask[b]]].mean(0).detach().requires_grad_()
        out = [(targets[b], 1)] + [(k, -1) for k in noise[b] if k != targets[b]]
        term = -sum(F.logsigmoid(sign * model.emb_out.weight[k] @ h) for k, sign in out)
        (g,) = torch.autograd.grad(term, h, retain_graph=True)
        for i in context[b][mask[b]]:
            grad_ref[i] += g  # word2vec.c: neu1e added to each context word, not divided by n
        ref = ref + term
    torch.testing.assert_close(loss, ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(grad_in, grad_ref, rtol=0, atol=1e-10)
    assert n == 2


def test_gradients_are_sparse_and_sgd_touches_only_rows_in_use():
    torch.manual_seed(3)
    model = w2v.Word2Vec(10, 6)
    torch.nn.init.normal_(model.emb_out.weight)
    before = [p.detach().clone() for p in model.parameters()]
    batch = context, mask, targets, noise = toy_batch()
    grads = torch.autograd.grad(model(*batch)[0], list(model.parameters()))
    assert all(g.is_sparse for g in grads)
    w2v.sgd_step(model, batch, 0.1)
    for p, old, g in zip(model.parameters(), before, grads):  # plain SGD: w - lr * dL/dw
        torch.testing.assert_close(p.detach(), old - 0.1 * g.to_dense(), rtol=0, atol=1e-7)
    in_used = set(context[mask].tolist())
    out_used = set(targets.tolist()) | set(noise.flatten().tolist())
    for p, old, used in zip(model.parameters(), before, (in_used, out_used)):
        changed = set((p != old).any(1).nonzero().flatten().tolist())
        assert changed == used


# ----------------------------------------------------------------------------- the C tool's details

def test_initialisation_is_small_uniform_inputs_and_zero_outputs():
    torch.manual_seed(4)
    model = w2v.Word2Vec(2000, 50)
    w = model.emb_in.weight
    assert w.abs().max() <= 0.5 / 50 and w.abs().max() > 0.49 / 50
    assert abs(w.mean().item()) < 1e-4 and abs(w.std().item() - 1 / 50 / math.sqrt(12)) < 1e-4
    assert not model.emb_out.weight.any()


def test_vocabulary_min_count_and_deterministic_order():
    sentences = w2v.tokenize("b a c a\nb d a e e\n\nc x")
    assert sentences == [["b", "a", "c", "a"], ["b", "d", "a", "e", "e"], [], ["c", "x"]]
    itos, counts = w2v.build_vocab(sentences, min_count=2)
    assert itos == ["a", "b", "c", "e"] and counts.tolist() == [3, 2, 2, 2]  # ties: a-z
    ids, sent = w2v.encode(sentences, {w: i for i, w in enumerate(itos)})
    assert ids.tolist() == [1, 0, 2, 0, 1, 0, 3, 3, 2] and sent.tolist() == [0] * 4 + [1] * 4 + [3]
    assert w2v.tokenize("Self.max_len = x2 + Ünïcode", letters_only=True) == [
        ["self", "max", "len", "x", "ünïcode"]]


def test_keep_probability_is_word2vec_c_formula():
    counts = torch.tensor([5000.0, 800.0, 50.0, 3.0], dtype=torch.float64)
    s, T = 1e-2, 5853.0
    expected = [min(1.0, (math.sqrt(f / (s * T)) + 1) * (s * T) / f) for f in counts.tolist()]
    torch.testing.assert_close(w2v.keep_probability(counts, s).tolist(), expected)
    assert expected[0] < expected[1] < 1 and expected[2] == expected[3] == 1
    assert w2v.keep_probability(counts, 0).tolist() == [1.0] * 4
    ids = torch.tensor([0, 1] * 50000)  # subsampling draws each occurrence with that chance
    kept, _ = w2v.subsample(ids, torch.zeros_like(ids), w2v.keep_probability(counts, s),
                            torch.Generator().manual_seed(0))
    for word in (0, 1):
        assert abs((kept == word).sum().item() / 50000 - expected[word]) < 0.01


def test_noise_distribution_is_unigram_to_the_three_quarters():
    counts = torch.tensor([1000.0, 100.0, 10.0, 1.0], dtype=torch.float64)
    p = w2v.noise_distribution(counts)
    expected = [c ** 0.75 / sum(c ** 0.75 for c in counts.tolist()) for c in counts.tolist()]
    torch.testing.assert_close(p.tolist(), expected)
    cfg = w2v.Config(batch_size=20000, negative=5, window=2)
    ids = torch.zeros(20000, dtype=torch.long)
    torch.manual_seed(5)
    noise = w2v.get_batch(ids, torch.zeros_like(ids), torch.arange(20000), cfg, p, "cpu")[3]
    freq = torch.bincount(noise.flatten(), minlength=4) / noise.numel()
    torch.testing.assert_close(freq, p.float(), rtol=0, atol=0.005)


def test_dynamic_window_is_uniform_and_stays_inside_sentences():
    cfg = w2v.Config(batch_size=30000, window=3)
    ids = torch.arange(30000)
    noise_p = torch.full((4,), 0.25)
    torch.manual_seed(6)
    context, mask, targets, _ = w2v.get_batch(ids, torch.zeros_like(ids), ids, cfg, noise_p, "cpu")
    b = mask[cfg.window:-cfg.window].sum(1) // 2  # each centre's window, away from the edges
    torch.testing.assert_close(torch.bincount(b, minlength=4)[1:] / len(b),
                               torch.full((3,), 1 / 3), rtol=0, atol=0.01)
    offsets = w2v.window_offsets(cfg.window)
    assert torch.equal(context[mask], (targets[:, None] + offsets).expand_as(mask)[mask])
    sent = torch.arange(30000) // 4  # sentences of 4 words: no slot may reach another
    context, mask, targets, _ = w2v.get_batch(ids, sent, ids, cfg, noise_p, "cpu")
    assert mask.any() and torch.equal(sent[context[mask]],
                                      sent[targets[:, None].expand_as(mask)[mask]])


def test_learning_rate_decays_linearly_over_all_words_to_a_floor():
    cfg = w2v.Config(lr=0.025)
    assert w2v.get_lr(0, 1000, cfg) == 0.025
    assert math.isclose(w2v.get_lr(500, 1000, cfg), 0.025 * (1 - 500 / 1001))
    assert math.isclose(w2v.get_lr(1000, 1000, cfg), 0.025 / 1001)  # still above the floor
    assert w2v.get_lr(10 ** 6, 10 ** 6, cfg) == 0.025 * 1e-4
    assert w2v.Config().lr == 0.025 and w2v.Config(cbow=True).lr == 0.05  # the C tool's


# ----------------------------------------------------------------------------- learning

def planted_corpus(n_lines=3000, seed=0):
    """Six entities e0..e5, each in two forms (-m with marker "he", -f with "she"), seen with
    their own context words: forms share neighbours, and f - m is one direction for all."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        e, form = rng.randrange(6), rng.choice("mf")
        words = rng.sample([f"c{e}{k}" for k in range(4)], 3)
        words += [f"e{e}{form}", "he" if form == "m" else "she"]
        rng.shuffle(words)
        lines.append(" ".join(words))
    return "\n".join(lines)


# workers 2: Hogwild threads sharing the vectors
@pytest.mark.parametrize("workers, cbow", [(1, False), (2, False), (1, True)])
def test_planted_neighbours_and_analogy_are_recovered(tmp_path, capsys, workers, cbow):
    (tmp_path / "planted.txt").write_text(planted_corpus(1000))
    cfg = w2v.Config(data=str(tmp_path / "planted.txt"), dim=16, window=5, negative=5,
                     sample=0, min_count=1, epochs=10, batch_size=32, eval_interval=25,
                     workers=workers, cbow=cbow)
    threads = torch.get_num_threads()  # 1 in the tests
    # 2 around the workers, so that undoing their one thread each shows (not around one worker:
    # two threads of its own would only fight over a busy machine)
    outside = 2 if workers > 1 else threads
    sentences = w2v.tokenize(w2v.load_text(cfg.data))
    itos, counts = w2v.build_vocab(sentences, cfg.min_count)
    stoi = {w: i for i, w in enumerate(itos)}
    torch.manual_seed(0)
    model = w2v.Word2Vec(len(itos), cfg.dim)
    torch.set_num_threads(outside)
    try:
        loss = w2v.train(model, w2v.encode(sentences, stoi), counts, cfg)
    finally:
        after, _ = torch.get_num_threads(), torch.set_num_threads(threads)
    assert after == outside
    assert loss < 0.6 * 6 * math.log(2)  # the loss at the start: (1 + K) log 2
    forms = [f"e{e}{f}" for e in range(6) for f in "mf"]
    q = w2v.parse_queries(" ".join(forms), stoi, cfg.eval_vocab)
    answers = w2v.sample(model, q, top_k=len(itos) - 1)
    for word, row in zip(forms, answers.tolist()):
        nearest_form = next(itos[i] for i in row if itos[i] in forms)
        if cbow:  # CBOW's vectors group the forms by their marker: e0m's nearest is another -m
            assert nearest_form[2] == word[2] and nearest_form != word, word
        else:
            assert nearest_form == word[:2] + ("f" if word[2] == "m" else "m"), word
    for a, b, c, d in [("e0m", "e0f", "e1m", "e1f"), ("e2f", "e2m", "e3f", "e3m")]:
        q = w2v.parse_queries(f"{a}:{b}::{c}", stoi, cfg.eval_vocab)
        assert itos[w2v.sample(model, q, top_k=1)[0, 0]] == d
    logged = [int(line.split()[1]) for line in capsys.readouterr().out.splitlines()]
    # a log line each time a multiple of eval_interval is passed (two workers take 16 batches a
    # round, so the line comes at the end of that round), and one at the end
    assert [step // 25 for step in logged[:-1]] == list(range(1, len(logged)))


def hand_model(vectors):
    """A Word2Vec whose word vectors are `vectors` {word: list}, in that order."""
    model = w2v.Word2Vec(len(vectors), len(next(iter(vectors.values()))))
    with torch.no_grad():
        model.emb_in.weight.copy_(torch.tensor(list(vectors.values())))
    return model, {w: i for i, w in enumerate(vectors)}


# all of length sqrt(2): queen - king + man = woman exactly, after normalising
HAND = {"king": [1, 1, 0], "queen": [1, -1, 0], "man": [0, 1, 1], "woman": [0, -1, 1],
        "apple": [1, 0, 1], "pear": [1, 0, -1]}


def test_analogy_evaluation_on_a_hand_written_file(tmp_path):
    model, stoi = hand_model(HAND)
    (tmp_path / "q.txt").write_text(
        ": capital-royals\nKing Queen Man Woman\nking queen man apple\nking queen man unknown\n"
        ": gram1-fruit\nman woman king queen\nqueen king woman pear\n")
    sections = w2v.evaluate_analogies(model, tmp_path / "q.txt", stoi, eval_vocab=6)
    # woman - man + king = queen: right; king - queen + woman = man, not pear: wrong
    assert sections == {"capital-royals": [1, 2, 3], "gram1-fruit": [1, 2, 2]}
    assert w2v.analogy_summary(sections) == {"semantic": [1, 2, 3], "syntactic": [1, 2, 2],
                                             "total": [2, 4, 5]}
    # only the 5 most frequent words count: "pear" (the 6th) leaves its question out
    assert w2v.evaluate_analogies(model, tmp_path / "q.txt", stoi, 5)["gram1-fruit"] == [1, 1, 2]


def test_spearman_with_ties_and_similarity_evaluation(tmp_path):
    x, y = torch.tensor([1.0, 2, 2, 3]).double(), torch.tensor([1.0, 3, 2, 4]).double()
    assert w2v.ranks(x).tolist() == [1, 2.5, 2.5, 4]
    assert math.isclose(w2v.spearman(x, y), 4.5 / math.sqrt(4.5 * 5))  # worked out by hand
    model, stoi = hand_model(HAND)
    # cosines: king-queen 0, man-woman 0, king-man 1/2, queen-pear 1/2, king-apple 1/2,
    # apple-pear 0: scores that rank the same way give rho 1 (ties included)
    (tmp_path / "s.txt").write_text("# word1\tword2\tscore\nking\tqueen\t1\nman woman 1\n"
                                    "king man 5\nqueen\tpear 5\nking apple 5\napple pear 1\n"
                                    "king dragon 9\n")
    rho, used, total = w2v.evaluate_similarity(model, tmp_path / "s.txt", stoi)
    assert (used, total) == (6, 7) and math.isclose(rho, 1.0)


def test_export_round_trips(tmp_path):
    torch.manual_seed(7)
    model = w2v.Word2Vec(5, 4)
    itos = ["the", "cat", "sät", "on", "mat"]
    w2v.export(model, itos, str(tmp_path / "v.txt"))
    lines = (tmp_path / "v.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "5 4" and len(lines) == 6
    words = [line.split(" ")[0] for line in lines[1:]]
    vectors = torch.tensor([[float(x) for x in line.split(" ")[1:]] for line in lines[1:]])
    assert words == itos
    torch.testing.assert_close(vectors, model.emb_in.weight.detach(), rtol=0, atol=5e-7)


# ----------------------------------------------------------------------------- training loop

def tiny_setup(tmp_path, **overrides):
    (tmp_path / "planted.txt").write_text(planted_corpus(400))
    cfg = w2v.Config(**{**dict(dim=8, min_count=1, batch_size=16, eval_interval=5, epochs=1,
                               sample=0), **overrides})
    sentences = w2v.tokenize(planted_corpus(400))
    itos, counts = w2v.build_vocab(sentences, 1)
    corpus = w2v.encode(sentences, {w: i for i, w in enumerate(itos)})
    torch.manual_seed(0)
    model = w2v.Word2Vec(len(itos), cfg.dim)
    return cfg, counts, corpus, model


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg, counts, corpus, model = tiny_setup(tmp_path)
    saved, forward, calls = {}, model.forward, [0]

    def poisoned(*args, **kwargs):  # the loss turns to NaN at step 7
        calls[0] += 1
        loss, n = forward(*args, **kwargs)
        return (loss * float("nan") if calls[0] == 8 else loss), n

    model.forward = poisoned
    with pytest.raises(FloatingPointError, match="at step 7"):
        w2v.train(model, corpus, counts, cfg, save=lambda s: saved.update(s))
    assert saved["step"] == 5 and all(torch.isfinite(p).all() for p in model.parameters())


def test_ctrl_c_saves_at_a_step_boundary(tmp_path, capsys):
    cfg, counts, corpus, model = tiny_setup(tmp_path)
    saved, before = {}, signal.getsignal(signal.SIGINT)  # SIG_IGN when run in the background
    with pytest.raises(KeyboardInterrupt):
        w2v.train(model, corpus, counts, cfg, save=lambda s: saved.update(s),
                  report=lambda: os.kill(os.getpid(), signal.SIGINT))
    assert saved["step"] == 5 and "interrupted at step 5; saved" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is before  # train() puts the caller's handler back


@pytest.mark.parametrize("cbow", [False, True])
def test_each_step_gets_cbow_and_the_linearly_decaying_lr(tmp_path, monkeypatch, cbow):
    cfg, counts, corpus, model = tiny_setup(tmp_path, cbow=cbow)
    seen, sgd_step = [], w2v.sgd_step

    def spy(model, batch, lr, cbow=False):
        seen.append((lr, cbow))
        return sgd_step(model, batch, lr, cbow)

    monkeypatch.setattr(w2v, "sgd_step", spy)
    w2v.train(model, corpus, counts, cfg)
    n, b = len(corpus[0]), cfg.batch_size  # sample 0: all n words are read, b a step
    assert len(seen) == math.ceil(n / b) and cfg.lr == (0.05 if cbow else 0.025)
    assert [c for _, c in seen] == [cbow] * len(seen)
    expected = [cfg.lr * max(1 - i * b / (n + 1), 1e-4) for i in range(len(seen))]
    assert [lr for lr, _ in seen] == pytest.approx(expected, rel=1e-12)
    assert seen[-1][0] < 0.01 * cfg.lr  # nearly zero at the end of the one epoch


# ----------------------------------------------------------------------------- the CLI

@pytest.fixture
def planted_file(tmp_path):
    path = tmp_path / "planted.txt"
    path.write_text(planted_corpus(300))
    return path


def test_cli_trains_queries_evaluates_and_resumes_exactly(tmp_path, planted_file, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--data", str(planted_file), *map(str, TINY), "--prompt", "he"]
    w2v.main(args + ["--out-dir", "whole", "--prompt", "e0m he:she::e1m"])
    out = capsys.readouterr().out
    assert "step    10 | train loss" in out and "words/s" in out and "e0m ->" in out
    assert "he:she::e1m:? ->" in out
    check_metrics(tmp_path / "whole" / "word2vec.jsonl", out, "lr", "words_per_s")
    whole = torch.load(tmp_path / "whole" / "word2vec.pt", weights_only=True)
    n_words = len(planted_corpus(300).split())  # min-count 1: every word is in the vocabulary
    assert whole["script"] == "word2vec" and whole["words"] == n_words
    assert whole["vocab"][:2] == ["he", "she"]
    w2v.main(args + ["--out-dir", "cut", "--max-steps", "5"])
    cut = torch.load(tmp_path / "cut" / "word2vec.pt", weights_only=True)
    assert cut["step"] == 5 and cut["epoch"] == 0
    capsys.readouterr()
    w2v.main(args + ["--out-dir", "cut", "--resume"])
    assert "step     5 |" not in capsys.readouterr().out
    resumed = torch.load(tmp_path / "cut" / "word2vec.pt", weights_only=True)
    assert resumed["step"] == whole["step"]
    for name, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    (tmp_path / "q.txt").write_text(": family\ne0m e0f e1m e1f\n")
    (tmp_path / "s.txt").write_text("e0m e0f 9\ne0m c00 5\ne0m e1f 1\n")
    w2v.main(["--sample-only", "--out-dir", "whole", "--prompt", "he", "--analogies", "q.txt",
              "--similarity", "s.txt", "--export", "v.txt"])
    out = capsys.readouterr().out
    assert "he ->" in out and "step" not in out and "total" in out and "of     1 asked" in out
    assert "Spearman" in out and "over 3 of 3 pairs" in out
    assert (tmp_path / "v.txt").read_text().splitlines()[0] == f"{len(whole['vocab'])} 8"


def test_cli_refuses_bad_input(tmp_path, planted_file, refused):
    refused(w2v, "--data", "nope.txt", says=["cannot read --data nope.txt"])
    (tmp_path / "empty.txt").write_text("")
    refused(w2v, "--data", "empty.txt", says=["is empty"])
    (tmp_path / "latin1.txt").write_bytes("the caf\xe9 is open".encode("latin-1"))
    refused(w2v, "--data", "latin1.txt", says=["not UTF-8 text (bad byte at offset 7)"])
    (tmp_path / "blank.txt").write_text(" \n\n  \t\n")
    refused(w2v, "--data", "blank.txt", says=["no word occurs", "0 distinct words"])
    refused(w2v, "--data", planted_file, *TINY, "--min-count", 10 ** 6,
            says=["no word occurs --min-count 1000000 times"])
    refused(w2v, "--data", planted_file, *TINY, "--prompt", "e0m zebra",
            says=["--prompt word 'zebra'"])
    refused(w2v, "--data", planted_file, *TINY, "--prompt", "a:b", says=["'a:b'"])
    for flag, value in [("--dim", 0), ("--window", 0), ("--negative", -1), ("--sample", -1e-3),
                        ("--epochs", 0), ("--batch-size", 0), ("--min-count", 0)]:
        refused(w2v, "--data", planted_file, flag, value, says=[flag, "must be"])


def test_cli_refuses_bad_eval_files_and_foreign_checkpoints(tmp_path, planted_file, refused):
    refused(w2v, "--sample-only", says=["no checkpoint"])
    (tmp_path / "other").mkdir()
    torch.save({"script": "rnn", "config": {}}, tmp_path / "other" / "word2vec.pt")
    refused(w2v, "--sample-only", "--out-dir", "other", says=["rnn.py, not of word2vec.py"])
    w2v.main(["--data", str(planted_file), *map(str, TINY), "--max-steps", "2",
              "--prompt", "he"])
    refused(w2v, "--sample-only", "--dim", 16, says=["--dim 16 differs from the checkpoint's 8"])
    refused(w2v, "--sample-only", "--dim", 100,  # asked for, though it is the default
            says=["--dim 100 differs from the checkpoint's 8"])
    refused(w2v, "--sample-only", "--min-count", 5,  # the vocabulary is the checkpoint's
            says=["--min-count 5 differs from the checkpoint's 1"])
    refused(w2v, "--sample-only", "--data", "other.txt",
            says=["--data other.txt is not the text", "--sample-only needs no --data"])
    w2v.main(["--sample-only", "--data", str(planted_file), "--prompt", "he"])  # its own: taken
    refused(w2v, "--sample-only", "--prompt", "he", "--analogies", "none.txt",
            says=["cannot read --analogies none.txt"])
    (tmp_path / "q.txt").write_text(": family\nhe she e0m\n")
    refused(w2v, "--sample-only", "--prompt", "he", "--analogies", "q.txt",
            says=["q.txt line 2", "four words"])
    (tmp_path / "s.txt").write_text("he she high\n")
    refused(w2v, "--sample-only", "--prompt", "he", "--similarity", "s.txt",
            says=["s.txt line 1", "word word score"])


def no_accelerators(monkeypatch, cuda=False, mps=False):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


def test_device_is_the_best_available_cuda_then_mps_then_cpu(monkeypatch):
    for cuda, mps, best in [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]:
        no_accelerators(monkeypatch, cuda, mps)
        assert w2v.pick_device("") == torch.device(best)
        assert w2v.pick_device("cpu") == torch.device("cpu")


def test_cli_refuses_a_device_this_machine_lacks(monkeypatch, planted_file, refused):
    no_accelerators(monkeypatch)
    for name, kind in [("cuda", "cuda"), ("cuda:0", "cuda"), ("mps", "mps")]:
        refused(w2v, "--data", planted_file, *TINY, "--prompt", "he", "--device", name,
                says=[f"--device {name} is not available here"])
    refused(w2v, "--data", planted_file, *TINY, "--device", "gpu", says=["unknown --device 'gpu'"])


def test_cli_ctrl_c_saves_and_resume_goes_on_from_that_step(tmp_path, planted_file, capsys,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--data", str(planted_file), *map(str, TINY), "--cbow", "--prompt", "he"]
    w2v.main(args + ["--out-dir", "whole"])
    whole = torch.load(tmp_path / "whole" / "word2vec.pt", weights_only=True)
    assert whole["config"]["cbow"] and whole["config"]["lr"] == 0.05  # word2vec.c's CBOW lr
    get_batch = ctrl_c_at_call(monkeypatch, w2v, "get_batch", 4)  # Ctrl-C during step 3
    with pytest.raises(SystemExit) as exit_:
        w2v.main(args + ["--out-dir", "cut"])
    assert exit_.value.code == 130
    assert "interrupted at step 4; saved" in capsys.readouterr().out
    assert torch.load(tmp_path / "cut" / "word2vec.pt", weights_only=True)["step"] == 4
    drawn = []
    monkeypatch.setattr(w2v, "get_batch", lambda *a: drawn.append(1) or get_batch(*a))
    # no training flag repeated: --cbow, --window, ... come from the checkpoint
    w2v.main(["--data", str(planted_file), "--out-dir", "cut", "--resume", "--prompt", "he"])
    assert "epochs of CBOW" in capsys.readouterr().out
    assert len(drawn) == whole["step"] - 4  # it went on from step 4
    resumed = torch.load(tmp_path / "cut" / "word2vec.pt", weights_only=True)
    assert resumed["step"] == whole["step"] and torch.equal(resumed["rng"], whole["rng"])
    for name, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][name]), name


def test_cli_resume_refuses_training_flags_other_than_the_checkpoints(planted_file, refused):
    w2v.main(["--data", str(planted_file), *map(str, TINY), "--max-steps", "2",
              "--prompt", "he"])
    resume = ["--data", planted_file, "--resume", "--prompt", "he"]
    for flag, value, saved in [("--window", 5, 2), ("--epochs", 2, 1), ("--negative", 5, 3),
                               ("--batch-size", 32, 16), ("--min-count", 2, 1),
                               ("--sample", 0.01, 0.001), ("--lr", 0.1, 0.025),
                               ("--seed", 1, 1337)]:
        refused(w2v, *resume, flag, value,
                says=[f"{flag} {value} differs from the checkpoint's {saved}"])
    refused(w2v, *resume, "--cbow", says=["--cbow True differs from the checkpoint's False"])
    w2v.main(["--sample-only", "--window", "5", "--prompt", "he"])  # querying trains nothing


def test_cli_stops_on_a_non_finite_loss_with_exit_status_1(tmp_path, planted_file, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    loss_fn, calls = w2v.negative_sampling_loss, []

    def poisoned(*args):  # NaN at the 8th batch: step 7
        calls.append(1)
        return loss_fn(*args) * (float("nan") if len(calls) == 8 else 1)

    monkeypatch.setattr(w2v, "negative_sampling_loss", poisoned)
    with pytest.raises(SystemExit) as exit_:
        w2v.main(["--data", str(planted_file), *map(str, TINY), "--prompt", "he"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1 and len(err) == 1 and "loss is nan at step 7" in err[0]
    assert torch.load("out/word2vec.pt", weights_only=True)["step"] == 5  # the last good one


def hand_checkpoint(out_dir, vectors):
    """A checkpoint whose word vectors are `vectors` {word: list}, as hand_model builds them."""
    model, _ = hand_model(vectors)
    cfg = w2v.Config(dim=model.emb_in.embedding_dim)
    w2v.save_checkpoint(str(out_dir / "word2vec.pt"), {
        "script": "word2vec", "config": dataclasses.asdict(cfg), "vocab": list(vectors),
        "counts": torch.ones(len(vectors), dtype=torch.float64), "step": 0, "epoch": 0,
        "pos": 0, "words": 0, "model": model.state_dict(), "rng": torch.get_rng_state()})


def test_cli_sample_only_answers_from_the_checkpoints_vectors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    swapped = {**HAND, "queen": HAND["pear"], "pear": HAND["queen"]}
    for name, vectors, answer in [("hand", HAND, "queen"), ("swapped", swapped, "pear")]:
        hand_checkpoint(tmp_path / name, vectors)
        w2v.main(["--sample-only", "--out-dir", name, "--prompt", "man:woman::king",
                  "--top-k", "1"])
        assert "man:woman::king:? -> " + answer in capsys.readouterr().out.splitlines()[-1]
