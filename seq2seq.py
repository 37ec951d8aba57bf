"""
seq2seq.py - an RNN encoder-decoder that learns to align: Bahdanau attention.

Sutskever, Vinyals & Le (2014), "Sequence to Sequence Learning with Neural Networks",
arXiv:1409.3215; Bahdanau, Cho & Bengio (2014), "Neural Machine Translation by Jointly Learning
to Align and Translate", arXiv:1409.0473. A bidirectional GRU encoder reads the source into
states h_j; a GRU decoder writes the target one token at a time, and before each step looks
back over all h_j with additive attention:

    e_j = v^T tanh(W s_{t-1} + U h_j)     a = softmax(e) over the real (unpadded) positions
    c_t = sum_j a_j h_j                   s_t = GRU([y_{t-1}; c_t], s_{t-1})
    o_t = tanh(W_o [s_t; c_t; y_{t-1}])   logits_t = W_V o_t + b_V

o_t is Bahdanau's deep output layer (tanh where the paper has maxout), of size C: the matrix
over the vocabulary, the costliest one, stays (V,C) instead of (V,H+2H+C).

--attention none is the encoder-decoder without attention (Cho et al. 2014, arXiv:1406.1078;
Sutskever et al. 2014): the decoder never sees the per-position states h_j, only one fixed
summary of the source, the encoder's final states (the forward one at the last token, the
backward one at the first), the same c at every step; all else is the same:

    c = [h_S^forward; h_1^backward]       s_t = GRU([y_{t-1}; c], s_{t-1})
    o_t = tanh(W_o [s_t; c; y_{t-1}])     logits_t = W_V o_t + b_V

What changes relative to rnn.py: the data are pairs (source, target), not one text; the
recurrence is torch's nn.GRU (gru.py writes the GRU out); what is written out here is the
attention, the decoder step, the bridge from encoder to decoder and the output layer; sample()
translates (greedy or beam search) instead of continuing a text; validation also decodes and
scores exact match and BLEU.

Run:
    python seq2seq.py                                          # learn to normalise dates
    python seq2seq.py --sample-only --prompt "march 9, 1993"   # translate with out/seq2seq.pt
    python seq2seq.py --data pairs.tsv --tokens word           # source<TAB>target, one a line
    python seq2seq.py --attention none                         # the same, without attention

Shapes: B batch, S source time, T target time, C embedding, H hidden, A attention,
V vocabulary, L layers, K beams.
"""

import argparse
import dataclasses
import datetime
import json
import math
import os
import random
import re
import signal
import sys
import time
from collections import Counter

import torch
import torch.nn as nn
import torch.nn.functional as F

SCRIPT = "seq2seq"  # written into checkpoints, so that a sibling script refuses this one's

# ----------------------------------------------------------------------------- model

PAD = 0  # the id of <pad>: padding, never attended to nor scored


class Attention(nn.Module):
    """Bahdanau's additive attention: score(s, h_j) = v^T tanh(W s + U h_j)."""

    def __init__(self, n_query, n_key, n_attn):
        super().__init__()
        self.W = nn.Linear(n_query, n_attn, bias=False)
        self.U = nn.Linear(n_key, n_attn)
        self.v = nn.Linear(n_attn, 1, bias=False)

    def forward(self, s, h, mask, Uh=None):
        """s (B,H) the decoder's state; h (B,S,2H) the encoder's; mask (B,S) True on real
        tokens; Uh = U h, the same at every decoding step, may come precomputed.
        Returns the context c (B,2H) and the weights a (B,S)."""
        if Uh is None:
            Uh = self.U(h)  # (B,S,A)
        e = self.v(torch.tanh(self.W(s)[:, None] + Uh)).squeeze(-1)  # (B,S)
        # exp(-inf) is exactly 0: padding gets no weight, and the rest still sums to 1
        a = F.softmax(e.masked_fill(~mask, float("-inf")), dim=-1)  # (B,S)
        c = torch.bmm(a[:, None], h).squeeze(1)  # (B,2H)
        return c, a


class Seq2Seq(nn.Module):
    """Bidirectional GRU encoder -> bridge -> GRU decoder attending over the encoder's states.

    The interface sample() uses (shared with transformer.py): encode(src) -> (memory, state);
    decode_step(y, state, memory) -> (logits, state, attention). memory and state hold tensors
    with the batch along dim 0 (in dicts and lists), so that beam search can reorder them."""

    def __init__(self, src_vocab_size, tgt_vocab_size, n_embd, n_hidden, n_layer, dropout=0.0,
                 attention="bahdanau"):
        super().__init__()
        self.src_emb = nn.Embedding(src_vocab_size, n_embd)
        self.encoder = nn.GRU(n_embd, n_hidden, n_layer, batch_first=True, bidirectional=True,
                              dropout=dropout if n_layer > 1 else 0.0)
        self.bridge = nn.Linear(2 * n_hidden, n_hidden)
        # "none": no attention, the decoder reads one fixed summary c of the source instead
        self.attention = Attention(n_hidden, 2 * n_hidden, n_hidden) if attention == "bahdanau" \
            else None
        self.tgt_emb = nn.Embedding(tgt_vocab_size, n_embd)
        self.decoder = nn.GRU(n_embd + 2 * n_hidden, n_hidden, n_layer, batch_first=True,
                              dropout=dropout if n_layer > 1 else 0.0)
        self.deep_out = nn.Linear(n_hidden + 2 * n_hidden + n_embd, n_embd)  # Bahdanau's t_i
        self.lm_head = nn.Linear(n_embd, tgt_vocab_size)
        self.drop = nn.Dropout(dropout)

    def encode(self, src):
        """src (B,S) -> memory {h, U h, mask} and the decoder's first state {s: s_0}."""
        mask = src != PAD  # (B,S)
        x = self.drop(self.src_emb(src))  # (B,S,C)
        # packed, so that the backward direction starts at each sentence's last real token
        packed = nn.utils.rnn.pack_padded_sequence(x, mask.sum(1).cpu(), batch_first=True,
                                                   enforce_sorted=False)
        h, h_n = self.encoder(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=src.shape[1])
        # the bridge: s_0 = tanh(W_b [h_forward_last; h_backward_first]), layer by layer
        L, B, H = self.encoder.num_layers, src.shape[0], self.encoder.hidden_size
        h_n = h_n.view(L, 2, B, H).transpose(1, 2).reshape(L, B, 2 * H)  # (L,B,2H)
        s = torch.tanh(self.bridge(h_n))  # (L,B,H)
        if self.attention is None:  # the summary c: the top layer's final states, nothing else
            memory = {"c": h_n[-1], "mask": mask}  # (B,2H), (B,S)
        else:
            memory = {"h": h, "Uh": self.attention.U(h), "mask": mask}  # (B,S,2H), (B,S,A), (B,S)
        return memory, {"s": s.transpose(0, 1)}  # s (B,L,H): the batch first, as beams need

    def decode_step(self, y, state, memory):
        """One step: y (B,) the last token written -> logits (B,V) of the next, the new state,
        and the attention weights (B,S) the step used (without attention: zero on every token)."""
        s = state["s"].transpose(0, 1).contiguous()  # (L,B,H)
        if self.attention is None:  # the same c at every step
            c, a = memory["c"], torch.zeros_like(memory["mask"], dtype=memory["c"].dtype)
        else:
            c, a = self.attention(s[-1], memory["h"], memory["mask"], memory["Uh"])  # (B,2H), (B,S)
        e = self.drop(self.tgt_emb(y))  # (B,C)
        out, s = self.decoder(torch.cat((e, c), dim=-1)[:, None], s)  # (B,1,H)
        o = torch.tanh(self.deep_out(torch.cat((out[:, 0], c, e), dim=-1)))  # (B,C)
        logits = self.lm_head(self.drop(o))  # (B,V)
        return logits, {"s": s.transpose(0, 1)}, a

    def forward(self, src, idx, targets=None):
        """Teacher forcing: src (B,S), idx (B,T) the target read so far -> logits (B,T,V);
        the loss averages over the real (non-<pad>) targets."""
        memory, state = self.encode(src)
        logits = []
        for y in idx.unbind(1):
            logits_t, state, _ = self.decode_step(y, state, memory)
            logits.append(logits_t)
        logits = torch.stack(logits, dim=1)  # (B,T,V)
        loss = None if targets is None else F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=PAD)
        return logits, loss


# ----------------------------------------------------------------------------- data

TOKENIZERS = {
    "char": list,
    "word": lambda text: re.findall(r"\w+|[^\w\s]", text.lower()),  # "Hi, you!" -> hi , you !
}
JOIN = {"char": "", "word": " "}  # tokens -> text
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
BOS, EOS, UNK = 1, 2, 3  # their ids (PAD, 0, is the model's), the same in every vocabulary

MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def ordinal(n):
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


# Each human format of a date, with one fixed convention (US month/day order for "/", European
# day.month for "."; two-digit years as POSIX strptime reads them, so only 1969-2068 use them).
DATE_FORMATS = [
    lambda d: f"{DAYS[d.weekday()]}, {MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.day} {MONTHS[d.month - 1][:3]} {d.year % 100:02d}",
    lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}",
    lambda d: f"{d.year} {MONTHS[d.month - 1]} {ordinal(d.day)}",
    lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"the {ordinal(d.day)} of {MONTHS[d.month - 1]}, {d.year}",
    lambda d: f"{DAYS[d.weekday()][:3]} {d.day} {MONTHS[d.month - 1][:3]} {d.year}",
    lambda d: f"{d.year}{d.month:02d}{d.day:02d}",
]
TWO_DIGIT_YEARS = (1969, 2068)  # the years format 2 may write as two digits
FIRST, LAST = datetime.date(1900, 1, 1).toordinal(), datetime.date(2099, 12, 31).toordinal()


def generate_dates(n, seed):
    """n pairs (a date as a person writes it, its ISO form), dates uniform in 1900-2099."""
    rng = random.Random(seed)
    pairs = []
    while len(pairs) < n:
        d = datetime.date.fromordinal(rng.randint(FIRST, LAST))
        k = rng.randrange(len(DATE_FORMATS))
        if k == 2 and not TWO_DIGIT_YEARS[0] <= d.year <= TWO_DIGIT_YEARS[1]:
            continue
        pairs.append((DATE_FORMATS[k](d), d.isoformat()))
    return pairs


DATES = {"train": (20_000, 0), "val": (2_000, 1)}  # (pairs, seed): separate seeds per split


def read_tsv(path):
    """(source, target) pairs from `path`: one a line, split at tabs, columns after the
    second ignored (the Tatoeba / manythings.org format), blank lines skipped."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        raise BadInput(f"cannot read --data {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise BadInput(f"--data {path} is not UTF-8 text (bad byte at offset {e.start})") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        columns = [column.strip() for column in line.split("\t")]
        require(len(columns) >= 2 and columns[0] and columns[1],
                f"--data {path} line {number} is not source<TAB>target: {line[:40]!r}")
        pairs.append((columns[0], columns[1]))
    require(pairs, f"--data {path} has no source<TAB>target pairs")
    return pairs


def load_pairs(path, tokens):
    """{"train": [(source tokens, target tokens)], "val": [...]}: the generated dates, or the
    pairs of the TSV at `path` shuffled with a fixed seed, the last 10% for validation."""
    if not path:
        splits = {name: generate_dates(n, seed) for name, (n, seed) in DATES.items()}
        seen = {source for source, _ in splits["train"]}  # score val on unseen inputs only
        splits["val"] = [(s, t) for s, t in splits["val"] if s not in seen]
    else:
        pairs = read_tsv(path)
        require(len(pairs) >= 2, f"--data {path} has {len(pairs)} pair; need 2: one to train"
                                 " on, one to validate on")
        random.Random(0).shuffle(pairs)
        n = len(pairs) - max(1, len(pairs) // 10)
        splits = {"train": pairs[:n], "val": pairs[n:]}
    tokenize = TOKENIZERS[tokens]
    return {name: [(tokenize(s), tokenize(t)) for s, t in part] for name, part in splits.items()}


def build_vocab(pairs, min_freq):
    """{"src": itos, "tgt": itos}: the specials, then the tokens seen at least min_freq times
    in training, sorted, so that ids are the same from run to run."""
    vocab = {}
    for side, name in enumerate(("src", "tgt")):
        counts = Counter(token for pair in pairs for token in pair[side])
        vocab[name] = SPECIALS + sorted(t for t, n in counts.items() if n >= min_freq)
    return vocab


def encode(tokens, stoi):
    """Tokens -> ids, <unk> for the unknown, <eos> appended; stoi maps token -> id."""
    return [stoi.get(t, UNK) for t in tokens] + [EOS]


def decode(ids, itos, tokens):
    return JOIN[tokens].join(itos[i] for i in ids)


def make_examples(pairs, vocab):
    """Pairs -> (source ids, target ids, target tokens) sorted by length, so that neighbours
    batch together with little padding; the target tokens are BLEU's reference, <unk>-free."""
    src, tgt = ({t: i for i, t in enumerate(vocab[side])} for side in ("src", "tgt"))
    examples = [(encode(s, src), encode(t, tgt), t) for s, t in pairs]
    return sorted(examples, key=lambda e: (len(e[0]), len(e[1])))


def pad(seqs):
    """Lists of ids -> LongTensor (B, longest), right-padded with <pad>."""
    return nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs], batch_first=True,
                                     padding_value=PAD)


def collate(examples, device):
    """Examples -> src (B,S), idx (B,T) the decoder's input (<bos> first), targets (B,T)."""
    src, tgt = pad([e[0] for e in examples]), pad([[BOS] + e[1] for e in examples])
    return src.to(device), tgt[:, :-1].to(device), tgt[:, 1:].to(device)


def get_batch(examples, batch_size, device):
    """A random example and its batch_size - 1 neighbours in length order: similar lengths."""
    i = torch.randint(len(examples), ()).item()
    start = min(max(i - batch_size // 2, 0), max(len(examples) - batch_size, 0))
    return collate(examples[start:start + batch_size], device)


# ----------------------------------------------------------------------------- train

@torch.no_grad()
def estimate_loss(model, data, cfg, device):
    """Mean loss over cfg.eval_steps random batches of each split."""
    model.eval()
    out = {}
    for name, part in data.items():
        losses = [model(*get_batch(part, cfg.batch_size, device))[1].item()
                  for _ in range(cfg.eval_steps)]
        out[name] = sum(losses) / len(losses)
    model.train()
    return out


def bleu(hypotheses, references, n_max=4):
    """Corpus BLEU (Papineni et al. 2002), one reference each: the geometric mean of the
    clipped n-gram precisions, n = 1..n_max, times the brevity penalty. In [0, 1]."""
    matched, total = [0] * n_max, [0] * n_max
    for hyp, ref in zip(hypotheses, references):
        for n in range(1, n_max + 1):
            h = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
            r = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
            matched[n - 1] += sum(min(k, r[g]) for g, k in h.items())  # clipped counts
            total[n - 1] += max(len(hyp) - n + 1, 0)
    if min(matched) == 0:
        return 0.0
    c, r = sum(map(len, hypotheses)), sum(map(len, references))
    brevity = 1.0 if c > r else math.exp(1 - r / c)
    return brevity * math.exp(sum(math.log(m / t) for m, t in zip(matched, total)) / n_max)


def evaluate(model, examples, vocab, cfg, device, beam_size=1):
    """Translate the examples: {"exact": share translated exactly, "bleu": corpus BLEU}."""
    hypotheses = []
    for i in range(0, len(examples), cfg.batch_size):
        src = collate(examples[i:i + cfg.batch_size], device)[0]
        hypotheses += [[vocab["tgt"][t] for t in ids] for ids, _ in
                       sample(model, src, cfg.max_new_tokens, beam_size)]
    references = [e[2] for e in examples]
    exact = sum(h == r for h, r in zip(hypotheses, references)) / len(examples)
    return {"exact": exact, "bleu": bleu(hypotheses, references)}


def get_lr(step, cfg):
    """Cosine decay from cfg.lr at step 0 to cfg.lr / 10 at cfg.max_steps."""
    return cfg.lr * (0.55 + 0.45 * math.cos(math.pi * min(step / cfg.max_steps, 1.0)))


def train(model, optimizer, data, vocab, cfg, step=0, save=None, log=None):
    """Train from `step` to cfg.max_steps on data = {"train": examples, "val": examples}. Every
    eval_interval steps and at the end: evaluate (loss, and greedy translation of
    eval_steps * batch_size val pairs spread over all lengths), print, and call log(the
    evaluation as a dict) and save(step) if given. Ctrl-C saves and raises KeyboardInterrupt;
    a non-finite loss or gradient raises FloatingPointError before it can reach the weights.
    Returns the last evaluation."""
    device = next(model.parameters()).device
    val = data["val"][::max(1, len(data["val"]) // (cfg.eval_steps * cfg.batch_size))]
    start, losses, tokens = step, {}, 0
    evaluated = step if step > 0 else None  # a resumed run evaluated its first step, then saved
    stop = []  # Ctrl-C lands here; the loop ends at the next step boundary, weights consistent
    handler = signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    t0 = t_log = time.time()
    try:
        while True:
            due = (step % cfg.eval_interval == 0 or step == cfg.max_steps) and step != evaluated
            if due:
                losses = estimate_loss(model, data, cfg, device)
                losses.update(evaluate(model, val, vocab, cfg, device))
                model.train()  # sample() turned dropout off
                now = time.time()
                eta = (now - t0) / (step - start) * (cfg.max_steps - step) if step > start else 0
                print(f"step {step:5d} | train loss {losses['train']:.4f} | val loss"
                      f" {losses['val']:.4f} | {tokens / (now - t_log) / 1e3:6.1f}k tokens/s"
                      f" | {now - t0:4.0f}s elapsed, ETA {eta:4.0f}s | val ppl"
                      f" {math.exp(min(losses['val'], 50)):.2f} | exact"
                      f" {100 * losses['exact']:5.1f}% | BLEU {100 * losses['bleu']:5.2f}",
                      flush=True)
                if log:
                    log({"step": step, "train_loss": losses["train"], "val_loss": losses["val"],
                         "seconds": now - t0, "tokens_per_s": tokens / (now - t_log),
                         "val_ppl": math.exp(min(losses["val"], 50)), "exact": losses["exact"],
                         "bleu": losses["bleu"]})
                t_log, tokens = now, 0
            if save and (due or stop):
                save(step)
            if step >= cfg.max_steps:
                break
            if stop:
                print(f"interrupted at step {step}; saved", flush=True)
                raise KeyboardInterrupt
            for group in optimizer.param_groups:
                group["lr"] = get_lr(step, cfg)
            src, idx, targets = get_batch(data["train"], cfg.batch_size, device)
            _, loss = model(src, idx, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # max_norm inf clips nothing (grad_clip 0), but the norm tells of any inf or NaN
            norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
            if not (torch.isfinite(loss) and torch.isfinite(norm)):  # stop before the weights
                raise FloatingPointError(f"loss {loss.item():.4g}, gradient norm {norm.item()} at"
                                         f" step {step}; stopped, the last good checkpoint is kept")
            optimizer.step()
            tokens += (src != PAD).sum().item() + (targets != PAD).sum().item()
            step += 1
    finally:
        signal.signal(signal.SIGINT, handler)
    return losses


# ----------------------------------------------------------------------------- sample

def select(x, index):
    """Rows `index` of every tensor in x: a tensor, or a dict or list of them, nested as deep as
    it is. Beam search reorders the decoder's state and memory with it."""
    if isinstance(x, dict):
        return {name: select(value, index) for name, value in x.items()}
    if isinstance(x, list):
        return [select(value, index) for value in x]
    return x[index]


@torch.no_grad()
def greedy(model, src, max_new_tokens):
    """Batched: at each step the likeliest token, until every row has written <eos>."""
    memory, state = model.encode(src)
    y = src.new_full((src.shape[0],), BOS)
    ys, attention = [], []
    for _ in range(max_new_tokens):
        logits, state, a = model.decode_step(y, state, memory)
        y = logits.argmax(-1)  # (B,)
        ys.append(y)
        attention.append(a)
        if (torch.stack(ys, 1) == EOS).any(1).all():
            break
    return torch.stack(ys, 1), torch.stack(attention, 1)  # (B,T), (B,T,S)


@torch.no_grad()
def beam_search(model, src, max_new_tokens, beam_size):
    """One sentence src (1,S): keep the beam_size likeliest partial translations; a hypothesis
    that writes <eos> is finished, scored by its log-probability per token (so that short ones
    are not favoured for being short). Returns the best one's tokens (T,) and attention (T,S)."""
    memory, state = model.encode(src)
    scores = src.new_zeros(1, dtype=torch.float)  # (K,) log-probabilities of the live beams
    ys = src.new_zeros(1, 0)  # (K,t)
    attention = src.new_zeros(1, 0, src.shape[1], dtype=torch.float)  # (K,t,S)
    finished = []  # (score per token, tokens, attention)
    for t in range(max_new_tokens):
        y = ys[:, -1] if t else src.new_full((1,), BOS)
        logits, state, a = model.decode_step(y, state, select(memory, [0] * len(ys)))
        logp = scores[:, None] + F.log_softmax(logits, dim=-1)  # (K,V)
        top, flat = logp.flatten().topk(min(beam_size - len(finished), logp.numel()))
        beam, token = flat // logp.shape[1], flat % logp.shape[1]
        ys = torch.cat((ys[beam], token[:, None]), dim=1)
        attention = torch.cat((attention[beam], a[beam, None]), dim=1)
        done = token == EOS
        finished += [(top[k].item() / (t + 1), ys[k], attention[k]) for k in done.nonzero()[:, 0]]
        live = (~done).nonzero()[:, 0]
        if len(finished) >= beam_size or len(live) == 0 or t == max_new_tokens - 1:
            finished += [(top[k].item() / (t + 1), ys[k], attention[k]) for k in live]
            break
        scores, ys, attention = top[live], ys[live], attention[live]
        state = select(state, beam[live])
    _, ys, attention = max(finished, key=lambda f: f[0])
    return ys, attention


def sample(model, src, max_new_tokens, beam_size=1):
    """Translate each row of src (B,S): a list of (ids without <eos>, attention weights
    (len(ids), real source length)), by greedy decoding or beam search."""
    model.eval()
    lengths = (src != PAD).sum(1).tolist()
    if beam_size == 1:
        rows = zip(*greedy(model, src, max_new_tokens))
    else:
        rows = (beam_search(model, src[i:i + 1, :n], max_new_tokens, beam_size)
                for i, n in enumerate(lengths))
    out = []
    for (ys, attention), n in zip(rows, lengths):
        ids = ys.tolist()
        end = ids.index(EOS) if EOS in ids else len(ids)
        out.append((ids[:end], attention[:end, :n]))
    return out


SHADES = " ░▒▓█"  # attention weight 0 .. 1


def attention_map(source, output, attention):
    """Text heatmap: the source tokens along the top (written downwards), the output tokens
    down the side, each cell shaded by how much that output step attended to that token."""
    source = source + ["<eos>"]
    width = max(map(len, output), default=0) + 1
    lines = [" " * width + "".join(f"{t[i] if i < len(t) else ' '} " for t in source)
             for i in range(max(map(len, source)))]
    for token, row in zip(output, attention.tolist()):
        shades = (SHADES[round(w * (len(SHADES) - 1))] * 2 for w in row)
        lines.append(token.ljust(width) + "".join(shades))
    return "\n".join(line.rstrip() for line in lines)


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
    data: str = arg("", "TSV file of source<TAB>target pairs; empty: generated dates")
    tokens: str = arg("char", "char: one token a character; word: lowercased words, punctuation"
                              " split off")
    min_freq: int = arg(1, "tokens seen fewer times in training become <unk>", "positive")
    # model
    n_embd: int = arg(32, "size of a token's embedding", "positive")
    n_hidden: int = arg(128, "size of each recurrent state (the encoder's, per direction)",
                        "positive")
    n_layer: int = arg(1, "recurrent layers stacked, in the encoder and the decoder", "positive")
    dropout: float = arg(0.0, "dropout on embeddings and the output layer's input",
                         "non-negative")
    attention: str = arg("bahdanau", "bahdanau: each step attends over every source state;"
                                     " none: every step sees one fixed summary of the source")
    # optimization
    batch_size: int = arg(64, "pairs per step", "positive")
    lr: float = arg(3e-3, "Adam learning rate, decayed along a cosine to lr/10", "positive")
    grad_clip: float = arg(1.0, "clip the gradient norm to this (0: off)", "non-negative")
    max_steps: int = arg(1000, "optimizer steps in all", "positive")
    eval_interval: int = arg(200, "steps between evaluations and checkpoints", "positive")
    eval_steps: int = arg(20, "batches averaged per evaluation (and decoded, of val)",
                          "positive")
    # system
    device: str = arg("", "cpu, cuda, mps, ...; empty: the best one available")
    seed: int = arg(1337, "seed for weights, batches and sampling")
    out_dir: str = arg("out", "where the checkpoint <script>.pt goes")
    resume: bool = arg(False, "continue training from the checkpoint in --out-dir")
    sample_only: bool = arg(False, "sample from the checkpoint in --out-dir without training")
    # sampling
    prompt: str = arg("", "source text to translate; empty: --num-samples validation pairs")
    num_samples: int = arg(4, "validation pairs translated at the end", "non-negative")
    max_new_tokens: int = arg(32, "longest translation, in tokens", "positive")
    beam_size: int = arg(1, "beams searched when translating (1: greedy)", "positive")
    show_attention: bool = arg(False, "print every translation's attention map (after"
                                      " training the first one's is printed anyway)")

    def __post_init__(self):  # refuse impossible values before any work is done
        for f in dataclasses.fields(self):
            value, rule = getattr(self, f.name), f.metadata["must_be"]
            if rule:
                ok = value > 0 if rule == "positive" else value >= 0
                require(ok, f"{flag(f.name)} must be {rule}, got {value}")
        require(self.tokens in TOKENIZERS,
                f"--tokens must be {' or '.join(TOKENIZERS)}, got {self.tokens!r}")
        require(self.dropout < 1, f"--dropout must be below 1, got {self.dropout}")
        require(self.attention in ("bahdanau", "none"),
                f"--attention must be bahdanau or none, got {self.attention!r}")


MODEL_ARGS = ("n_embd", "n_hidden", "n_layer", "attention", "tokens",
              "min_freq")  # what a checkpoint fixes: the model, its vocabulary


def make_model(vocab, cfg):
    """The model cfg describes, sized for vocab's source and target vocabularies."""
    # here, not in Config: a checkpoint may have set cfg.attention after the flags were checked
    require(not (cfg.show_attention and cfg.attention == "none"), "--show-attention: this"
            " model (--attention none) has no attention to show")
    return Seq2Seq(len(vocab["src"]), len(vocab["tgt"]), cfg.n_embd, cfg.n_hidden, cfg.n_layer,
                   cfg.dropout, cfg.attention)


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


def rng_states(device, batches=None):
    """Every random generator the run draws from: the CPU's (weights, batches, sampling on a
    CPU), `batches` where batches have a generator of their own, and the device's (dropout and
    sampling on a GPU), so that --resume goes on with the same draws. Under torchrun every
    process seeds the same, so rank 0's states stand for all."""
    states = {"cpu": torch.get_rng_state()}
    if batches is not None:
        states["batches"] = batches.get_state()
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    if device.type == "mps":
        states["mps"] = torch.mps.get_rng_state(device)
    return states


def set_rng_states(states, device, batches=None):
    """Put back what rng_states() saved (a GPU's state saved on another kind: left as seeded)."""
    torch.set_rng_state(states["cpu"])
    if batches is not None:
        batches.set_state(states["batches"])
    if device.type == "cuda" and "cuda" in states:
        cuda = states["cuda"]  # earlier versions saved a list, one state per GPU
        torch.cuda.set_rng_state(cuda[device.index or 0] if isinstance(cuda, list) else cuda,
                                 device)
    if device.type == "mps" and "mps" in states:
        torch.mps.set_rng_state(states["mps"], device)


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


def load_checkpoint(path, cfg, given):
    """read_checkpoint(path), refused if an earlier version wrote it; what it fixes
    (MODEL_ARGS) goes into cfg, and a flag in `given` that asks for another value is refused."""
    ckpt = read_checkpoint(path)
    require(isinstance(ckpt.get("rng"), dict), f"{path} was written by an earlier {SCRIPT}.py"
            " (its random state is one tensor); train anew")
    adopt(cfg, ckpt["config"], "the checkpoint", given)
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
    checkpoint (--sample-only); then translate --prompt or validation pairs. `given`: the
    flags on the command line."""
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    path = os.path.join(cfg.out_dir, f"{SCRIPT}.pt")
    ckpt = load_checkpoint(path, cfg, given) if cfg.resume or cfg.sample_only else None
    if cfg.sample_only and not cfg.data:  # translate pairs of the data it was trained on
        cfg.data = ckpt["config"]["data"]
    translating_prompt = cfg.sample_only and cfg.prompt  # the checkpoint and the prompt alone
    pairs = None if translating_prompt else load_pairs(cfg.data, cfg.tokens)
    if cfg.sample_only:
        vocab = ckpt["vocab"]
    else:
        vocab = build_vocab(pairs["train"], cfg.min_freq)
        if ckpt:
            trained_on = ckpt["config"]["data"] or "the default"
            require(ckpt["vocab"] == vocab, "this data's vocabulary differs from the checkpoint's;"
                    f" resume on the data it was trained on ({trained_on})")
    data = None if pairs is None else {name: make_examples(part, vocab)
                                       for name, part in pairs.items()}
    if cfg.prompt:
        unseen = sorted(set(TOKENIZERS[cfg.tokens](cfg.prompt)) - set(vocab["src"]))
        require(not unseen, f"--prompt has tokens never seen in training: {unseen}"[:200])
        chosen = make_examples([(TOKENIZERS[cfg.tokens](cfg.prompt), [])], vocab)
    else:
        chosen = data["val"][::max(1, len(data["val"]) // max(cfg.num_samples, 1))]
        chosen = chosen[:cfg.num_samples]
    model = make_model(vocab, cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step = 0
    if ckpt:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step = ckpt["step"]
        set_rng_states(ckpt["rng"], device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{SCRIPT}.py: {n_params / 1e6:.2f}M parameters, vocabulary {len(vocab['src'])} source"
          f" / {len(vocab['tgt'])} target, on {device}")
    if not cfg.sample_only:
        print(f"data: {len(data['train']):,} train / {len(data['val']):,} val pairs"
              + (f"; resuming from step {step}" if ckpt else ""))

        def save(step):
            save_checkpoint(path, {"script": SCRIPT, "config": dataclasses.asdict(cfg),
                                   "vocab": vocab, "step": step, "model": model.state_dict(),
                                   "optimizer": optimizer.state_dict(),
                                   "rng": rng_states(device)})

        log = open_metrics(os.path.join(cfg.out_dir, f"{SCRIPT}.jsonl"), cfg.resume)
        train(model, optimizer, data, vocab, cfg, step, save, log)
    translations = []
    if chosen:
        translations = sample(model, collate(chosen, device)[0], cfg.max_new_tokens,
                              cfg.beam_size)
    for k, (ids, attention) in enumerate(translations):
        source = [vocab["src"][i] for i in chosen[k][0][:-1]]
        output = [vocab["tgt"][i] for i in ids]
        print("-" * 80)
        print(f"{JOIN[cfg.tokens].join(source)}  ->  {JOIN[cfg.tokens].join(output)}")
        # the first translation's map after training, every one with --show-attention
        # (a model without attention has all-zero weights: no map)
        first_after_training = k == 0 and not cfg.sample_only and bool(attention.any())
        if cfg.show_attention or first_after_training:
            print(attention_map(source, output, attention))


if __name__ == "__main__":
    main()
