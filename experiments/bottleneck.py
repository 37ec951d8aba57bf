"""A fixed-size vector is a bottleneck; attention removes it. Cho et al. (2014), "On the
Properties of Neural Machine Translation: Encoder-Decoder Approaches", arXiv:1409.1259: the
encoder-decoder's translations degrade as the sentences grow longer; Bahdanau et al. (2014),
arXiv:1409.0473, Figure 2: RNNencdec's BLEU falls with the source length, RNNsearch's does not.

seq2seq.py's model twice, the same size, steps, batches and seed, differing only in --attention:
bahdanau (each decoder step attends over every source state h_j) or none (every step sees one
summary c, the encoder's final states). Both scored on held-out pairs by source length, greedy:
A. reversal: random strings of 5 to 60 lowercase letters, the target the string backwards,
   generated here (train and test from separate seeds; test strings unseen in training).
   Per length bucket: exact match, and character accuracy = characters right at their position
   / max(len(output), len(target)) (a too-long or too-short output loses the difference).
B. Multi30k de->en (../shared/data/multi30k, read by benchmarks/multi30k.py's read_split; the
   script's word tokens, min-freq 2): corpus BLEU-4 (seq2seq.bleu) of test_2016_flickr per
   bucket of German source length in tokens, and over the whole test set. Skipped, with a
   message, when the data is absent (--quick reads only a few hundred pairs of it).
The budget is a number of steps, not of seconds, so that the numbers do not depend on the
machine's load; the seconds are recorded beside them.

    python experiments/bottleneck.py --threads 1      # figures/bottleneck.{png,json}, ~17 min
    python experiments/bottleneck.py --quick          # the same code at toy sizes, out/figures/
    python experiments/bottleneck.py --plot-only      # redraw bottleneck.png from its JSON
"""
import os
import random
import string
import time

import torch

import figure  # puts the project's root on sys.path
import seq2seq
from benchmarks import multi30k

MODELS = {"bahdanau": "seq2seq", "none": "seq2seq-none"}  # --attention -> colour
LABELS = {"bahdanau": "attention (bahdanau)", "none": "no attention (fixed summary c)"}
REVERSAL_LENGTHS = (5, 60)
REVERSAL_BUCKETS = [(5, 10), (11, 20), (21, 30), (31, 40), (41, 50), (51, 60)]
MULTI30K_BUCKETS = [(1, 8), (9, 10), (11, 12), (13, 14), (15, 17), (18, 99)]  # >= 100 each

SIZES = {  # the default run, and --quick's toy one (same code)
    "full": {
        "reversal": dict(train=20_000, test=2_000, max_steps=400, n_embd=32, n_hidden=128,
                         batch_size=64, lr=3e-3, dropout=0.0, max_new_tokens=64, tokens="char"),
        "multi30k": dict(limit=0, max_steps=1500, n_embd=128, n_hidden=256, batch_size=64,
                         lr=2e-3, dropout=0.0, min_freq=2, max_new_tokens=60, tokens="word"),
    },
    "quick": {
        "reversal": dict(train=300, test=60, max_steps=4, n_embd=8, n_hidden=16,
                         batch_size=16, lr=3e-3, dropout=0.0, max_new_tokens=64, tokens="char"),
        "multi30k": dict(limit=300, max_steps=3, n_embd=8, n_hidden=16, batch_size=16,
                         lr=2e-3, dropout=0.0, min_freq=2, max_new_tokens=40, tokens="word"),
    },
}
DATA_SIZES = ("train", "test", "limit")  # the rest of a size is seq2seq.Config's
EVAL_STEPS = 2  # batches averaged (and val pairs decoded, times batch_size) by train()'s logs


def reversal_pairs(n, seed, lengths=REVERSAL_LENGTHS, alphabet=string.ascii_lowercase):
    """n (source, target) string pairs: a random string of lengths[0]..lengths[1] letters
    (each length equally likely) and the same string backwards."""
    rng = random.Random(seed)
    sources = ["".join(rng.choice(alphabet) for _ in range(rng.randint(*lengths)))
               for _ in range(n)]
    return [(s, s[::-1]) for s in sources]


def bucket_of(n, buckets):
    return next(i for i, (lo, hi) in enumerate(buckets) if lo <= n <= hi)


def train_both(data, vocab, size, seed):
    """seq2seq.py's model with each --attention, trained by seq2seq.train on the same batches
    (the generator reseeded after building each model): {attention: (model, cfg, record)}."""
    out = {}
    for attention in MODELS:
        cfg = seq2seq.Config(**{k: v for k, v in size.items() if k not in DATA_SIZES},
                             attention=attention, eval_interval=size["max_steps"],
                             eval_steps=EVAL_STEPS, seed=seed)
        torch.manual_seed(seed)
        model = seq2seq.make_model(vocab, cfg)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        torch.manual_seed(seed)
        print(f"--- --attention {attention}: {size['max_steps']} steps", flush=True)
        t0 = time.perf_counter()
        last = seq2seq.train(model, optimizer, data, vocab, cfg)
        seconds = time.perf_counter() - t0
        out[attention] = (model, cfg, {
            "params": sum(p.numel() for p in model.parameters()), "steps": cfg.max_steps,
            "train_seconds": seconds, "last_evaluation": last})
    return out


def translate(model, examples, vocab, cfg):
    """Greedy translations (target tokens) of the examples, a batch at a time."""
    out = []
    for i in range(0, len(examples), cfg.batch_size):
        src = seq2seq.collate(examples[i:i + cfg.batch_size], "cpu")[0]
        out += [[vocab["tgt"][t] for t in ids]
                for ids, _ in seq2seq.sample(model, src, cfg.max_new_tokens)]
    return out


def char_accuracy(output, target):
    """Characters right at their position / max(len(output), len(target))."""
    right = sum(a == b for a, b in zip(output, target))
    return right / max(len(output), len(target))


def reversal(size, seed):
    """Task A: train both models on reversal, score the test strings per length bucket."""
    splits = {"train": reversal_pairs(size["train"], seed),
              "test": reversal_pairs(size["test"], seed + 1)}
    seen = {s for s, _ in splits["train"]}
    splits["test"] = [(s, t) for s, t in splits["test"] if s not in seen]
    pairs = {name: [(list(s), list(t)) for s, t in part] for name, part in splits.items()}
    vocab = seq2seq.build_vocab(pairs["train"], 1)
    data = {name: seq2seq.make_examples(part, vocab) for name, part in pairs.items()}
    trained = train_both({"train": data["train"], "val": data["test"]}, vocab, size, seed)
    lengths = [len(e[2]) for e in data["test"]]
    counts = [sum(bucket_of(n, REVERSAL_BUCKETS) == b for n in lengths)
              for b in range(len(REVERSAL_BUCKETS))]
    result = {"buckets": REVERSAL_BUCKETS, "counts": counts, "train_pairs": len(pairs["train"]),
              "test_pairs": len(pairs["test"]), "models": {}}
    for attention, (model, cfg, record) in trained.items():
        t0 = time.perf_counter()
        outputs = translate(model, data["test"], vocab, cfg)
        exact, chars = [[] for _ in counts], [[] for _ in counts]
        for output, example in zip(outputs, data["test"]):
            b = bucket_of(len(example[2]), REVERSAL_BUCKETS)
            exact[b].append(output == example[2])
            chars[b].append(char_accuracy(output, example[2]))
        everything = [x for part in exact for x in part]
        result["models"][attention] = {
            **record, "eval_seconds": time.perf_counter() - t0,
            "exact": [sum(e) / max(len(e), 1) for e in exact],
            "char_accuracy": [sum(c) / max(len(c), 1) for c in chars],
            "exact_overall": sum(everything) / len(everything)}
    return result


def multi30k_task(size, seed, folder):
    """Task B: train both models on Multi30k's train split, BLEU on test per source length."""
    tokenize = seq2seq.TOKENIZERS["word"]
    pairs = {name: [(tokenize(s), tokenize(t))
                    for s, t in multi30k.read_split(folder, multi30k.SPLITS[name],
                                                    size["limit"])]
             for name in ("train", "val", "test")}
    vocab = seq2seq.build_vocab(pairs["train"], size["min_freq"])
    data = {name: seq2seq.make_examples(part, vocab) for name, part in pairs.items()}
    trained = train_both({"train": data["train"], "val": data["val"]}, vocab, size, seed)
    buckets = [bucket_of(len(e[0]) - 1, MULTI30K_BUCKETS) for e in data["test"]]  # no <eos>
    counts = [buckets.count(b) for b in range(len(MULTI30K_BUCKETS))]
    result = {"buckets": MULTI30K_BUCKETS, "counts": counts, "decoding": "greedy",
              "pairs": {name: len(part) for name, part in data.items()},
              "vocabulary": {side: len(itos) for side, itos in vocab.items()}, "models": {}}
    for attention, (model, cfg, record) in trained.items():
        t0 = time.perf_counter()
        outputs = translate(model, data["test"], vocab, cfg)
        references = [e[2] for e in data["test"]]
        per_bucket = [seq2seq.bleu([o for o, k in zip(outputs, buckets) if k == b],
                                   [r for r, k in zip(references, buckets) if k == b])
                      for b in range(len(MULTI30K_BUCKETS))]
        result["models"][attention] = {
            **record, "eval_seconds": time.perf_counter() - t0, "bleu": per_bucket,
            "bleu_overall": seq2seq.bleu(outputs, references),
            "epochs": cfg.max_steps * cfg.batch_size / len(data["train"])}
    return result


def measure(args):
    size = SIZES["quick" if args.quick else "full"]
    if args.multi30k_steps:  # a longer (or shorter) translation run than the default's
        size = {**size, "multi30k": {**size["multi30k"], "max_steps": args.multi30k_steps}}
    out = {"settings": {**size, "seed": args.seed, "decoding": "greedy",
                        "reversal_lengths": REVERSAL_LENGTHS}}
    out["reversal"] = reversal(size["reversal"], args.seed)
    if os.path.isdir(args.multi30k):
        out["multi30k"] = multi30k_task(size["multi30k"], args.seed, args.multi30k)
    else:
        out["multi30k"] = {"skipped": "Multi30k is not in ../shared/data/multi30k (or"
                                      " --multi30k): task B skipped"}
        print(out["multi30k"]["skipped"], flush=True)
    print(tables(out))
    return out


def label(bucket):
    lo, hi = bucket
    return f"{lo}" if lo == hi else f"{lo}-{hi}" if hi < 99 else f"{lo}+"


def tables(data):
    """Markdown tables of every number drawn."""
    r = data["reversal"]
    lines = ["| reversal: source length | pairs | " + " | ".join(
        f"{a} exact | {a} chars" for a in MODELS) + " |", "|---" * (2 + 2 * len(MODELS)) + "|"]
    for b, bucket in enumerate(r["buckets"]):
        lines.append(f"| {label(bucket)} | {r['counts'][b]} | " + " | ".join(
            f"{100 * r['models'][a]['exact'][b]:.1f}% | "
            f"{100 * r['models'][a]['char_accuracy'][b]:.1f}%" for a in MODELS) + " |")
    for a in MODELS:
        m = r["models"][a]
        lines.append(f"reversal, --attention {a}: {m['params']:,} parameters, {m['steps']}"
                     f" steps in {m['train_seconds']:.0f} s, test exact"
                     f" {100 * m['exact_overall']:.1f}%")
    m30 = data["multi30k"]
    if "skipped" in m30:
        return "\n".join(lines + [m30["skipped"]])
    lines += ["", "| Multi30k: source tokens | pairs | " + " | ".join(
        f"{a} BLEU" for a in MODELS) + " |", "|---" * (2 + len(MODELS)) + "|"]
    for b, bucket in enumerate(m30["buckets"]):
        lines.append(f"| {label(bucket)} | {m30['counts'][b]} | " + " | ".join(
            f"{100 * m30['models'][a]['bleu'][b]:.2f}" for a in MODELS) + " |")
    lines.append(f"| all | {sum(m30['counts'])} | " + " | ".join(
        f"{100 * m30['models'][a]['bleu_overall']:.2f}" for a in MODELS) + " |")
    for a in MODELS:
        m = m30["models"][a]
        lines.append(f"Multi30k, --attention {a}: {m['params']:,} parameters, {m['steps']} steps"
                     f" ({m['epochs']:.2f} epochs) in {m['train_seconds']:.0f} s")
    return "\n".join(lines)


def draw(data):
    r, m30 = data["reversal"], data["multi30k"]
    fig, axes = figure.plt.subplots(1, 3, figsize=(14, 4.4))
    x = range(len(r["buckets"]))
    for ax, key, what in ((axes[0], "exact", "exact match"),
                          (axes[1], "char_accuracy", "character accuracy")):
        for a in MODELS:
            ax.plot(x, [100 * v for v in r["models"][a][key]], "o-",
                    color=figure.COLORS[MODELS[a]], label=LABELS[a])
        ax.set_xticks(list(x), [f"{label(b)}\n({n})" for b, n in zip(r["buckets"], r["counts"])])
        ax.set(xlabel="source length, characters (test strings)", ylabel=f"{what}, %",
               ylim=(-3, 103), title=f"reversal: {what} (greedy)")
        ax.legend(loc="center right", fontsize=8)
    ax = axes[2]
    if "skipped" in m30:
        ax.text(0.5, 0.5, m30["skipped"], ha="center", va="center", wrap=True,
                transform=ax.transAxes)
        ax.set(title="Multi30k de->en: skipped", xticks=[], yticks=[])
        summary = "Multi30k skipped"
    else:
        x = range(len(m30["buckets"]))
        for a in MODELS:
            m = m30["models"][a]
            ax.plot(x, [100 * v for v in m["bleu"]], "o-", color=figure.COLORS[MODELS[a]],
                    label=f"{LABELS[a]}: all {100 * m['bleu_overall']:.1f}")
        ax.set_xticks(list(x), [f"{label(b)}\n({n})"
                                for b, n in zip(m30["buckets"], m30["counts"])])
        ax.set(xlabel="source length, German tokens (test sentences)",
               ylabel="corpus BLEU-4 of the bucket", ylim=(0, None),
               title="Multi30k de->en test: BLEU (greedy)\nafter"
                     f" {m['steps']} steps ({m['epochs']:.2f} epochs)")
        ax.legend(loc="lower left", fontsize=8)
        b, n = m30["models"]["bahdanau"]["bleu"], m30["models"]["none"]["bleu"]
        summary = (f"Multi30k BLEU, shortest to longest: attention {100 * b[0]:.1f} to"
                   f" {100 * b[-1]:.1f}, none {100 * n[0]:.1f} to {100 * n[-1]:.1f}")
    e = {a: r["models"][a]["exact"] for a in MODELS}
    fig.suptitle("seq2seq.py with attention vs with one fixed summary of the source (same size,"
                 " steps and batches). Reversal exact match, shortest to longest strings:"
                 f" attention {100 * e['bahdanau'][0]:.0f}% to {100 * e['bahdanau'][-1]:.0f}%,"
                 f" none {100 * e['none'][0]:.0f}% to {100 * e['none'][-1]:.0f}%\n{summary}."
                 " (n): test pairs in the bucket", fontsize=10)
    fig.tight_layout()
    return fig


def main(argv=None):
    p = figure.parser(__doc__)
    p.add_argument("--seed", type=int, default=0, help="seed for the data, weights and batches")
    p.add_argument("--multi30k", default=multi30k.DATA,
                   help="folder of Multi30k's {train,val,test_2016_flickr}.{de,en}.gz"
                        " (default ../shared/data/multi30k); absent: task B is skipped")
    p.add_argument("--multi30k-steps", type=figure.positive(int), default=0, metavar="N",
                   help="train each Multi30k model N steps (default: 1500, --quick 3)")
    args = p.parse_args(argv)
    data = figure.run("bottleneck", args, measure, draw)
    if args.plot_only:
        print(tables(data))


if __name__ == "__main__":
    main()
