"""
word2vec.py - word vectors by skip-gram with negative sampling (or CBOW), as word2vec.c trains them.

Mikolov et al. (2013), "Efficient Estimation of Word Representations in Vector Space"
(arXiv:1301.3781) and "Distributed Representations of Words and Phrases and their
Compositionality" (arXiv:1310.4546). Each word w has an input vector v_w (the word vector kept
at the end) and an output vector u_w. Skip-gram asks the input vector of a context word c to
tell the word o at the centre of its window from K noise words k drawn from the unigram
distribution raised to 3/4, maximising per pair

    log σ(u_o · v_c) + Σ_k log σ(−u_k · v_c)

CBOW (--cbow) replaces v_c by the mean of the window's input vectors. The C tool's details
are kept: min-count vocabulary, subsampling of frequent words (redrawn each epoch), dynamic
window, learning rate decaying linearly over all words, small uniform input and zero output
vectors, plain SGD touching only the rows in use, and --workers threads updating the shared
vectors without locks (Hogwild, as the C tool's -threads). Two things differ, for speed: a step
updates batch_size centre words at once (the C tool updates after every pair), and the K noise
words are drawn once per centre word and shared by its context words (the C tool draws them per
pair; Ji et al. 2016, arXiv:1604.04661, share them the same way) - the expected gradient is
the same, and a window becomes one small matrix product.

Run:
    python word2vec.py                               # train on the Python stdlib source, query it
    python word2vec.py --data text.txt --analogies questions-words.txt
    python word2vec.py --workers 2                   # a thread per core: faster, not reproducible
    python word2vec.py --sample-only --prompt "def list:dict::tuple"   # query out/word2vec.pt

A query word shows its nearest neighbours; "a:b::c" solves a is to b as c is to ?.
Relative to rnn.py: words, not characters; no sequence model, just two embedding tables; plain
SGD with sparse updates instead of Adam; sample() queries the vectors instead of generating.

Shapes: B batch (centre words), J context slots per centre (2 * window), K noise words,
C vector size (--dim), V vocabulary, Q queries.
"""

import argparse
import collections
import concurrent.futures
import dataclasses
import json
import math
import os
import re
import signal
import sys
import sysconfig
import time

import torch
import torch.nn as nn

SCRIPT = "word2vec"  # written into checkpoints, so that a sibling script refuses this one's


# ----------------------------------------------------------------------------- model

def logsigmoid(x):
    """log σ(x) = -log(1 + e^-x), written so that e^|x| is never formed (no overflow)."""
    return x.clamp(max=0) - torch.log1p(torch.exp(-x.abs()))


def scores(v, u):
    """u · v for every (input, output) pair: v (B,J,C), u (B,1+K,C) -> (B,J,1+K). The value is
    v @ u^T; it is formed twice, each product carrying one side's gradient, because autograd's
    backward of v @ u^T alone forms u's gradient as a (C,1+K) product per centre, which runs
    several times slower than the (1+K,C) product here. Same numbers, same gradients."""
    s_v = v @ u.detach().transpose(1, 2)  # gradient to v as (J,1+K) @ (1+K,C)
    s_u = (u @ v.detach().transpose(1, 2)).transpose(1, 2)  # to u as (1+K,J) @ (J,C)
    return s_v + (s_u - s_u.detach())  # s_v's value, both gradients


def negative_sampling_loss(v, u, weight):
    """-[log σ(u_o · v) + Σ_k log σ(-u_k · v)], summed over the pairs that count.
    v (B,J,C): input vectors; u (B,1+K,C): the target's output vector, then the noise words';
    weight (B,J,1+K): 1 where a (context, output) pair counts, 0 where it does not."""
    s = scores(v, u)  # (B,J,1+K) u · v for every pair
    sign = torch.ones(u.shape[1], dtype=s.dtype, device=s.device)
    sign[1:] = -1  # the target is to be told apart from the noise: σ(+s) vs σ(-s)
    return -(logsigmoid(s * sign) * weight).sum()


class Word2Vec(nn.Module):
    """Two tables of vectors: emb_in holds v_w (the word vectors kept at the end), emb_out
    holds u_w (used only in training). Sparse embeddings: backward() gives gradients for the
    rows in use only, and SGD updates those rows only, as word2vec.c does."""

    def __init__(self, vocab_size, dim):
        super().__init__()
        self.emb_in = nn.Embedding(vocab_size, dim, sparse=True)
        self.emb_out = nn.Embedding(vocab_size, dim, sparse=True)
        with torch.no_grad():  # word2vec.c: inputs ~ U(-0.5/C, 0.5/C), outputs zero
            self.emb_in.weight.uniform_(-0.5 / dim, 0.5 / dim)
            self.emb_out.weight.zero_()

    def forward(self, context, mask, targets, noise, cbow=False):
        """The loss summed over the batch (so that SGD moves each pair as word2vec.c does), and
        the number of terms summed: (context, centre) pairs, or centres for CBOW."""
        out = torch.cat((targets[:, None], noise), 1)  # (B,1+K)
        real = torch.ones(out.shape, device=out.device)
        real[:, 1:] = (noise != targets[:, None]).float()  # word2vec.c skips noise == target
        m = mask.float()[:, :, None]  # (B,J,1)
        v = self.emb_in(context)  # (B,J,C)
        u = self.emb_out(out)  # (B,1+K,C)
        if not cbow:  # slots outside the window weigh 0, so they get no gradient either
            return negative_sampling_loss(v, u, m * real[:, None, :]), mask.sum()
        n = m.sum(1, keepdim=True)  # (B,1,1) context words per centre
        total = (v * m).sum(1, keepdim=True)  # (B,1,C)
        # the mean of the context vectors; word2vec.c hands each of them the mean's whole
        # gradient (it never divides by n), so the gradient flows back as through the sum
        h = total + (total / n.clamp(min=1) - total).detach()  # (B,1,C)
        weight = real[:, None, :] * (n > 0).float()  # (B,1,1+K) centres with no context skipped
        return negative_sampling_loss(h, u, weight), (n > 0).sum()


# ----------------------------------------------------------------------------- data

SKIP = ("site-packages", "test", "tests", "idle_test")  # folders left out of the default corpus


def stdlib_source():
    """The default corpus, on every machine with Python: the standard library's .py files,
    sorted by relative path, tests and site-packages left out, joined with newlines."""
    root = sysconfig.get_paths()["stdlib"]
    paths = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in SKIP]
        paths += [os.path.relpath(os.path.join(folder, f), root)
                  for f in files if f.endswith(".py")]
    texts = []
    for path in sorted(paths, key=lambda p: p.split(os.sep)):
        with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
    return "\n".join(texts)


def load_text(path="", flag="data"):
    """The UTF-8 text at `path` (given as --flag), or the default corpus if path is empty."""
    if not path:
        return stdlib_source()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise BadInput(f"cannot read --{flag} {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise BadInput(f"--{flag} {path} is not UTF-8 text (bad byte at offset"
                       f" {e.start})") from None
    require(text, f"--{flag} {path} is empty")
    return text


LETTERS = re.compile(r"[^\W\d_]+")  # the default corpus is code: split `self.max_len` into words


def tokenize(text, letters_only=False):
    """Lowercased words, one list per line: a line is a sentence, and windows stay inside it
    (word2vec.c ends a sentence at each newline). Words are whitespace-separated, or, with
    letters_only, the runs of letters."""
    split = LETTERS.findall if letters_only else str.split
    return [split(line) for line in text.lower().split("\n")]


def build_vocab(sentences, min_count):
    """Words seen at least min_count times, most frequent first (ties alphabetical, so the same
    text always gives the same ids); returns (itos, counts)."""
    counts = collections.Counter(w for s in sentences for w in s)
    kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    require(kept, f"no word occurs --min-count {min_count} times ({len(counts)} distinct"
            " words); give a longer text or a lower --min-count")
    return kept, torch.tensor([counts[w] for w in kept], dtype=torch.float64)


def encode(sentences, stoi):
    """The corpus as ids (N,) and the sentence each belongs to (N,); unknown words are dropped,
    as word2vec.c drops them (they do not count as words read either)."""
    ids, sent = [], []
    for i, s in enumerate(sentences):
        known = [stoi[w] for w in s if w in stoi]
        ids += known
        sent += [i] * len(known)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(sent, dtype=torch.long)


def keep_probability(counts, sample):
    """word2vec.c's subsampling: a word seen f times among T keeps each occurrence with
    probability (sqrt(f / (s T)) + 1) (s T) / f, capped at 1 (s = --sample; 0: keep all)."""
    if not sample:
        return torch.ones_like(counts)
    sT = sample * counts.sum()
    return ((counts / sT).sqrt() + 1).mul(sT / counts).clamp(max=1.0)


def noise_distribution(counts, power=0.75):
    """The noise words' distribution: unigram counts raised to 3/4 (word2vec.c's table)."""
    p = counts ** power
    return p / p.sum()


def subsample(ids, sent, keep_prob, generator):
    """One epoch's corpus: each occurrence kept with its word's probability, redrawn every
    epoch as word2vec.c does. Returns the kept ids and their sentences."""
    keep = torch.rand(len(ids), generator=generator, dtype=torch.float64) < keep_prob[ids]
    return ids[keep], sent[keep]


def window_offsets(window):
    """The J = 2 * window context slots around a centre: -window..-1, 1..window. (J,)"""
    return torch.cat((torch.arange(-window, 0), torch.arange(1, window + 1)))


def get_batch(ids, sent, centre, cfg, noise_p, device):
    """The centre words at positions `centre` (B,) with their windows: context ids (B,J), which
    slots count (B,J), targets (B,) and noise words (B,K). Each centre draws its window b from
    1..window; a slot counts if it lies within b, inside the corpus and in the same sentence."""
    b = torch.randint(1, cfg.window + 1, (len(centre), 1))  # (B,1) the dynamic window
    offsets = window_offsets(cfg.window)
    where = centre[:, None] + offsets  # (B,J)
    inside = (where >= 0) & (where < len(ids))
    where = where.clamp(0, len(ids) - 1)
    mask = inside & (offsets.abs() <= b) & (sent[where] == sent[centre, None])
    noise = torch.multinomial(noise_p, len(centre) * cfg.negative, replacement=True)
    batch = ids[where], mask, ids[centre], noise.view(len(centre), cfg.negative)
    return [t.to(device) for t in batch]  # drawn on the CPU on every device


# ----------------------------------------------------------------------------- train

def get_lr(words, total_words, cfg):
    """word2vec.c's schedule: linear in the words read so far (subsampled ones included), from
    cfg.lr down to a floor of cfg.lr * 1e-4."""
    return cfg.lr * max(1 - words / (total_words + 1), 1e-4)


ROUND = 8  # with --workers > 1, each worker takes this many batches between two meetings


def sgd_step(model, batch, lr, cbow=False):
    """One batch: the loss, then plain SGD on the rows it used - autograd gives sparse
    gradients (those rows only), and each is added in place, as word2vec.c updates. A
    non-finite loss leaves the weights alone (train() stops on it). Returns (loss, terms)."""
    loss, n = model(*batch, cbow=cbow)
    if torch.isfinite(loss):
        params = list(model.parameters())
        with torch.no_grad():
            for p, grad in zip(params, torch.autograd.grad(loss, params)):
                p.add_(grad, alpha=-lr)
    return loss.item(), n.item()


def train(model, corpus, counts, cfg, state=None, save=None, report=None, log=None):
    """SGD over cfg.epochs passes of corpus = (ids, sent), from `state` = {step, epoch, pos,
    words} (pos: the next centre in the epoch's subsampled corpus). With cfg.workers > 1,
    that many threads each take ROUND batches and update the shared vectors without locks
    (Hogwild, as word2vec.c's threads do); one worker: every run the same. Every
    eval_interval steps (rounded up to a round), at the end and on Ctrl-C: print, call
    report() (it shows the prompt's neighbours), log(the evaluation as a dict) and
    save(state), if given; then Ctrl-C raises
    KeyboardInterrupt. A non-finite loss raises FloatingPointError before it can reach the
    weights. Returns the mean loss of the last stretch between evaluations."""
    ids, sent = corpus
    device = next(model.parameters()).device
    state = dict(state or {"step": 0, "epoch": 0, "pos": 0, "words": 0})
    keep_p, noise_p = keep_probability(counts, cfg.sample), noise_distribution(counts)
    total_words = cfg.epochs * len(ids)
    max_steps = cfg.max_steps or math.inf  # 0: no limit
    start, loss_sum, terms, mean_loss = state["words"], 0.0, 0, float("nan")
    stop = []  # Ctrl-C lands here; the loop ends at the next step boundary, weights consistent
    handler = signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    threads, pool = torch.get_num_threads(), None
    if cfg.workers > 1:  # a core per worker: torch's own threads would only fight them
        torch.set_num_threads(1)
        pool = concurrent.futures.ThreadPoolExecutor(cfg.workers)
    t0 = t_log = time.time()
    words_log = state["words"]
    try:
        while state["epoch"] < cfg.epochs and state["step"] < max_steps:
            # the epoch's own generator: a resumed run redraws the same subsampled corpus
            g = torch.Generator().manual_seed(cfg.seed * 1000 + state["epoch"])
            kept, kept_sent = subsample(ids, sent, keep_p, g)
            # centres in random order: neighbouring words repeat one another (above all in
            # code), and a step that sums many updates of the same rows would overshoot
            order = torch.randperm(len(kept), generator=g)
            while state["pos"] < len(kept) and state["step"] < max_steps:
                lr = get_lr(state["words"], total_words, cfg)
                n_batches = min(cfg.workers * ROUND if pool else 1, max_steps - state["step"])
                centres = order[state["pos"]:state["pos"] + n_batches * cfg.batch_size]
                chunks = centres.split(cfg.batch_size)

                def work(k):  # worker k: batches k, k + workers, ...; windows, noise words, SGD
                    return [sgd_step(model, get_batch(kept, kept_sent, c, cfg, noise_p, device),
                                     lr, cbow=cfg.cbow) for c in chunks[k::cfg.workers]]

                results = sum(pool.map(work, range(cfg.workers)), []) if pool else work(0)
                for loss, n in results:
                    if not math.isfinite(loss):
                        raise FloatingPointError(f"loss is {loss} at step {state['step']};"
                                                 " stopped, the last good checkpoint is kept")
                    loss_sum, terms = loss_sum + loss, terms + n
                state["step"] += len(results)
                state["pos"] += len(centres)
                # words read: the epochs done, and the share of this one done so far
                state["words"] = state["epoch"] * len(ids) + len(ids) * state["pos"] // len(kept)
                last = state["step"] == max_steps or state["words"] == total_words
                # a multiple of eval_interval was passed in this round, the end, or Ctrl-C
                if state["step"] % cfg.eval_interval < len(results) or last or stop:
                    mean_loss = loss_sum / max(terms, 1)
                    now = time.time()
                    eta = (now - t0) / max(state["words"] - start, 1) * (
                        total_words - state["words"])
                    print(f"step {state['step']:5d} | train loss {mean_loss:.4f} | lr {lr:.6f}"
                          f" | {(state['words'] - words_log) / (now - t_log) / 1e3:6.1f}k"
                          f" words/s | {now - t0:4.0f}s elapsed, ETA {eta:4.0f}s", flush=True)
                    if report:
                        report()
                    if log:
                        log({"step": state["step"], "train_loss": mean_loss, "seconds": now - t0,
                             "words_per_s": (state["words"] - words_log) / (now - t_log),
                             "lr": lr, "epoch": state["epoch"], "words": state["words"]})
                    if save:
                        save(state)
                    if stop:
                        print(f"interrupted at step {state['step']}; saved", flush=True)
                        raise KeyboardInterrupt
                    loss_sum, terms = 0.0, 0
                    t_log, words_log = time.time(), state["words"]
            if state["pos"] == len(kept):
                state["epoch"], state["pos"] = state["epoch"] + 1, 0
    finally:
        signal.signal(signal.SIGINT, handler)
        if pool:
            pool.shutdown()
        torch.set_num_threads(threads)
    return mean_loss


# ----------------------------------------------------------------------------- sample

def parse_queries(prompt, stoi, eval_vocab):
    """--prompt -> queries (Q,3): "a:b::c" asks for the d in a : b :: c : d, and a lone word w
    for its neighbours, as [w, w, w] (b - a + c = w). Unknown words are refused by name."""
    queries = []
    for token in prompt.lower().split():
        words = token.replace("::", ":").split(":")
        require(len(words) in (1, 3), f"--prompt query {token!r} is neither a word nor a:b::c")
        for w in words:
            require(stoi.get(w, eval_vocab) < eval_vocab, f"--prompt word {w!r} is not among the"
                    f" {min(eval_vocab, len(stoi))} most frequent words of the vocabulary")
        queries.append([stoi[w] for w in words] * (3 // len(words)))
    return torch.tensor(queries, dtype=torch.long).view(-1, 3)


def unit_vectors(model, eval_vocab):
    """The word vectors of the eval_vocab most frequent words, scaled to length 1. (V,C)"""
    w = model.emb_in.weight[:eval_vocab].detach()
    return w / w.norm(dim=1, keepdim=True).clamp(min=1e-12)


@torch.no_grad()
def sample(model, queries, top_k=8, eval_vocab=30000):
    """The top_k answers to each query (Q,3) = [a, b, c], best first: the words nearest by
    cosine to b - a + c (3CosAdd on unit vectors; for [w, w, w], w's neighbours), the query
    words themselves left out, as word2vec.c's compute-accuracy does. (Q,top_k)"""
    w = unit_vectors(model, eval_vocab)
    q = queries.to(w.device)
    target = w[q[:, 1]] - w[q[:, 0]] + w[q[:, 2]]  # (Q,C)
    sims = target @ w.t()  # (Q,V) cosine times |target|, which is the same for a whole row
    sims.scatter_(1, q, float("-inf"))
    return sims.topk(min(top_k, len(w) - 1), dim=1).indices


def show(model, queries, itos, cfg):
    """Print each query's answers, one line a query."""
    for (a, b, c), answers in zip(queries.tolist(), sample(model, queries, cfg.top_k,
                                                           cfg.eval_vocab).tolist()):
        name = itos[a] if a == b == c else f"{itos[a]}:{itos[b]}::{itos[c]}:?"
        print(f"  {name:>20} -> {' '.join(itos[i] for i in answers)}", flush=True)


def evaluate_analogies(model, path, stoi, eval_vocab=30000):
    """Top-1 accuracy on a questions-words.txt file (": section" headers, then "a b c d" lines),
    as word2vec.c's compute-accuracy: words lowercased, a question asked only if its four words
    are among the eval_vocab most frequent. Returns {section: [correct, asked, in file]}."""
    sections, questions, where = {}, [], []
    for n, line in enumerate(load_text(path, "analogies").splitlines(), 1):
        words = line.lower().split()
        if line.startswith(":"):
            sections[line[1:].strip()] = [0, 0, 0]
        elif words:
            require(len(words) == 4 and sections, f"--analogies {path} line {n}: expected a"
                    f" ': section' header, then four words a line, got {line!r}")
            name = next(reversed(sections))
            sections[name][2] += 1
            if all(stoi.get(w, eval_vocab) < eval_vocab for w in words):
                questions.append([stoi[w] for w in words])
                where.append(name)
    if questions:
        q = torch.tensor(questions)
        right = torch.cat([sample(model, part[:, :3], 1, eval_vocab)[:, 0].cpu() == part[:, 3]
                           for part in q.split(4096)])
        for name, ok in zip(where, right.tolist()):
            sections[name][0] += ok
            sections[name][1] += 1
    return sections


def analogy_summary(sections):
    """semantic (sections not named gram*), syntactic (gram*) and total: [correct, asked, in
    file], as word2vec.c's compute-accuracy splits questions-words.txt."""
    out = {kind: [0, 0, 0] for kind in ("semantic", "syntactic", "total")}
    for name, counts in sections.items():
        for kind in ("syntactic" if name.startswith("gram") else "semantic", "total"):
            out[kind] = [a + b for a, b in zip(out[kind], counts)]
    return out


def ranks(x):
    """Ranks 1..n of x (n,), tied values sharing the mean of their ranks."""
    r = torch.empty_like(x)
    r[x.argsort()] = torch.arange(1, len(x) + 1, dtype=x.dtype)
    values, group = torch.unique(x, return_inverse=True)
    mean = x.new_zeros(len(values)).index_add_(0, group, r) / torch.bincount(group).to(x.dtype)
    return mean[group]


def spearman(x, y):
    """Spearman's rho: the Pearson correlation of the ranks."""
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return ((rx * ry).sum() / (rx.norm() * ry.norm())).item()


def evaluate_similarity(model, path, stoi):
    """Spearman correlation between human scores ("word word score" lines, tab- or
    space-separated, '#' comments skipped) and the cosine of the two words' vectors, over the
    pairs whose words are both in the vocabulary. Returns (rho, pairs used, pairs in file)."""
    pairs, scores, total = [], [], 0
    for n, line in enumerate(load_text(path, "similarity").splitlines(), 1):
        fields = line.lower().split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            a, b, score = fields[0], fields[1], float(fields[2])
        except (IndexError, ValueError):
            raise BadInput(f"--similarity {path} line {n}: expected 'word word score',"
                           f" got {line!r}") from None
        total += 1
        if a in stoi and b in stoi:
            pairs.append([stoi[a], stoi[b]])
            scores.append(score)
    if len(pairs) < 2:
        return float("nan"), len(pairs), total
    w = unit_vectors(model, len(stoi)).cpu().double()
    p = torch.tensor(pairs)
    cosine = (w[p[:, 0]] * w[p[:, 1]]).sum(1)
    return spearman(cosine, torch.tensor(scores, dtype=torch.float64)), len(pairs), total


def export(model, itos, path):
    """word2vec.c's text format: "V C", then one "word v_1 ... v_C" line per word."""
    w = model.emb_in.weight.detach().cpu().tolist()
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(f"{len(itos)} {model.emb_in.embedding_dim}\n")
        for word, row in zip(itos, w):
            f.write(word + " " + " ".join(f"{x:.6f}" for x in row) + "\n")
    os.replace(path + ".tmp", path)


# ----------------------------------------------------------------------------- config

class BadInput(ValueError):
    """Input we refuse: main() prints it as one line and exits with status 2."""


def require(ok, message):
    """Refuse the input, with `message`, unless ok."""
    if not ok:
        raise BadInput(message)


def flag(name):
    """The command-line flag of a config field: block_size -> --block-size."""
    return "--" + name.replace("_", "-")


def arg(default, help, must_be=None):
    """A config field: its default, its --help text, and "positive" or "non-negative" if so."""
    return dataclasses.field(default=default, metadata={"help": help, "must_be": must_be})


@dataclasses.dataclass
class Config:
    # data
    data: str = arg("", "UTF-8 text file to train on; empty: the Python standard library's source")
    min_count: int = arg(5, "words seen fewer times are dropped from the vocabulary", "positive")
    sample: float = arg(1e-3, "subsampling threshold s for frequent words (0: off)", "non-negative")
    # model
    dim: int = arg(100, "size C of a word vector", "positive")
    window: int = arg(5, "largest distance to a context word; each centre draws 1..window",
                      "positive")
    negative: int = arg(5, "noise words K per centre word", "positive")
    cbow: bool = arg(False, "CBOW: predict the centre from the mean of its context")
    # optimization
    epochs: int = arg(5, "passes over the corpus", "positive")
    batch_size: int = arg(1024, "centre words per step", "positive")
    workers: int = arg(1, "threads that train at once, each on its own batches, sharing the"
                       " vectors without locks, as word2vec.c's -threads (1: reproducible)",
                       "positive")
    lr: float = arg(0.0, "starting SGD learning rate, decayed linearly to lr * 1e-4; 0: the C"
                    " tool's, 0.025 skip-gram / 0.05 CBOW", "non-negative")
    max_steps: int = arg(0, "stop after this many steps (0: when the epochs are done)",
                         "non-negative")
    eval_interval: int = arg(500, "steps between evaluations and checkpoints", "positive")
    # system
    device: str = arg("", "cpu, cuda, mps, ...; empty: the best one available")
    seed: int = arg(1337, "seed for weights, subsampling, windows and noise words")
    out_dir: str = arg("out", "where the checkpoint <script>.pt goes")
    resume: bool = arg(False, "continue training from the checkpoint in --out-dir")
    sample_only: bool = arg(False, "query the checkpoint in --out-dir without training")
    # querying and evaluation
    prompt: str = arg("def list true file return string", "query words; a:b::c is an analogy")
    top_k: int = arg(8, "neighbours shown per query", "positive")
    eval_vocab: int = arg(30000, "queries and analogies search the most frequent words only",
                          "positive")
    analogies: str = arg("", "questions-words.txt-style file: report analogy accuracy")
    similarity: str = arg("", "'word word score' lines: report Spearman correlation")
    export: str = arg("", "write the vectors to this file in word2vec text format")

    def __post_init__(self):  # refuse impossible values before any work is done
        for f in dataclasses.fields(self):
            value, rule = getattr(self, f.name), f.metadata["must_be"]
            if rule:
                ok = value > 0 if rule == "positive" else value >= 0
                require(ok, f"{flag(f.name)} must be {rule}, got {value}")
        if not self.lr:
            self.lr = 0.05 if self.cbow else 0.025  # word2vec.c's -alpha defaults


MODEL_ARGS = ("dim", "min_count")  # what a checkpoint fixes: its vectors' size, its vocabulary
# ... and, on --resume, what its training was run with, so that the run goes on as it began
TRAIN_ARGS = ("sample", "window", "negative", "cbow", "epochs", "batch_size", "lr", "seed")


# ----------------------------------------------------------------------------- main

def pick_device(name):
    """The device `name`, refused unless this machine has it; empty: the best one available,
    cuda, then mps, then cpu."""
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not name:
        name = "cuda" if available["cuda"] else "mps" if available["mps"] else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BadInput(f"unknown --device {name!r}") from None
    # kinds other than cuda and mps (xpu, ...) are left for torch to refuse
    require(available.get(device.type, True), f"--device {name} is not available here")
    return device


def adopt(cfg, fixed, source, given, names=MODEL_ARGS):
    """Take the values of `names` from `fixed` (a checkpoint's config, a pretrained model's)
    into cfg, refusing a flag in `given` (the command line's, even at its default) that asks
    for another; a name `fixed` lacks (a flag newer than it) keeps its default."""
    for name in names:
        value = fixed.get(name, getattr(Config, name))
        require(name not in given or getattr(cfg, name) == value,
                f"{flag(name)} {getattr(cfg, name)} differs from {source}'s {value}")
        setattr(cfg, name, value)


def read_checkpoint(path):
    """The checkpoint at `path`, refused unless it is one of this script's."""
    require(os.path.exists(path), f"no checkpoint at {path}; train one first"
            " (or point --out-dir at it)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BadInput(f"{path} is not a readable checkpoint ({type(e).__name__})") from None
    who = ckpt.get("script", "?") if isinstance(ckpt, dict) else "?"
    require(who == SCRIPT, f"{path} is a checkpoint of {who}.py, not of {SCRIPT}.py")
    return ckpt


def save_checkpoint(path, ckpt):
    """Write atomically: a crash mid-write leaves the previous checkpoint whole."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save(ckpt, path + ".tmp")
    os.replace(path + ".tmp", path)


def open_metrics(path, resume):
    """The metrics file at `path`, beside the checkpoint: returns a function that appends one
    evaluation to it, a dict (step, the losses, seconds since this process began, the script's
    own metrics), as a line of JSON, to plot or compare runs by. A run from scratch starts the
    file anew and --resume appends to it, so that the file describes the run the checkpoint
    holds; --sample-only opens none."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if not resume:
        open(path, "w").close()

    def append(record):
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")

    return append


def parse_args(argv=None):
    """The command line -> (cfg, given): the Config, and the names of the flags on the command
    line, which a checkpoint must agree with even where they equal the default."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(Config):
        if f.type is bool:
            parser.add_argument(flag(f.name), action="store_true", default=argparse.SUPPRESS,
                                help=f.metadata["help"])
        else:
            parser.add_argument(flag(f.name), type=f.type, default=argparse.SUPPRESS,
                                help=f"{f.metadata['help']} (default {f.default!r})")
    given = vars(parser.parse_args(argv))  # the flags on the command line, no others
    return Config(**given), frozenset(given)


def main(argv=None):
    try:
        run(*parse_args(argv))
    except BadInput as e:
        print(f"{SCRIPT}.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    except FloatingPointError as e:
        print(f"{SCRIPT}.py: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def run(cfg, given=frozenset()):
    """Train as cfg says (from scratch, or --resume from the checkpoint), or load the
    checkpoint (--sample-only); then query the vectors. `given`: the flags on the command
    line."""
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    path = os.path.join(cfg.out_dir, f"{SCRIPT}.pt")
    ckpt = None
    if cfg.resume or cfg.sample_only:  # its vectors' shape, and on --resume how it trained
        ckpt = read_checkpoint(path)
        adopt(cfg, ckpt["config"], "the checkpoint", given,
              MODEL_ARGS + (TRAIN_ARGS if cfg.resume else ()))
    if cfg.sample_only:
        require(not cfg.data or cfg.data == ckpt["config"]["data"], f"--data {cfg.data} is not"
                f" the text {path} was trained on; --sample-only needs no --data")
        itos, counts = ckpt["vocab"], ckpt["counts"]
    else:
        sentences = tokenize(load_text(cfg.data), letters_only=not cfg.data)
        itos, counts = build_vocab(sentences, cfg.min_count)
        if ckpt:
            trained_on = ckpt["config"]["data"] or "the default"
            require(ckpt["vocab"] == itos, "this text's vocabulary differs from the checkpoint's;"
                    f" resume on the text it was trained on ({trained_on})")
    stoi = {w: i for i, w in enumerate(itos)}
    queries = parse_queries(cfg.prompt, stoi, cfg.eval_vocab)
    model = Word2Vec(len(itos), cfg.dim).to(device)
    state = None
    if ckpt:
        model.load_state_dict(ckpt["model"])
        state = {k: ckpt[k] for k in ("step", "epoch", "pos", "words")}
        torch.set_rng_state(ckpt["rng"])
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{SCRIPT}.py: {n_params / 1e6:.2f}M parameters, vocabulary {len(itos)}, on {device}")
    if not cfg.sample_only:
        corpus = encode(sentences, stoi)
        print(f"data: {len(corpus[0]):,} words in the vocabulary, {len(sentences):,} lines;"
              f" {cfg.epochs} epochs of {'CBOW' if cfg.cbow else 'skip-gram'}")

        def save(state):  # every draw is made on the CPU: its generator is the only one used
            save_checkpoint(path, {"script": SCRIPT, "config": dataclasses.asdict(cfg),
                                   "vocab": itos, "counts": counts, **state,
                                   "model": model.state_dict(),
                                   "rng": torch.get_rng_state()})

        log = open_metrics(os.path.join(cfg.out_dir, f"{SCRIPT}.jsonl"), cfg.resume)
        train(model, corpus, counts, cfg, state, save, lambda: show(model, queries, itos, cfg),
              log)
    else:
        show(model, queries, itos, cfg)
    if cfg.analogies:
        sections = evaluate_analogies(model, cfg.analogies, stoi, cfg.eval_vocab)
        print(f"analogies, top-1 among the {min(cfg.eval_vocab, len(itos))} most frequent words:")
        for name, (right, asked, total) in {**sections, **analogy_summary(sections)}.items():
            print(f"  {name:>28} {100 * right / max(asked, 1):5.1f}% of {asked:5d} asked"
                  f" ({100 * asked / max(total, 1):5.1f}% of {total} covered)")
    if cfg.similarity:
        rho, used, total = evaluate_similarity(model, cfg.similarity, stoi)
        print(f"similarity: Spearman {rho:.4f} over {used} of {total} pairs")
    if cfg.export:
        export(model, itos, cfg.export)
        print(f"exported {len(itos)} vectors to {cfg.export}")


if __name__ == "__main__":
    main()
