"""Topics of the standard library: what LDA finds, where it finds it, and how it compares with
its neural descendant. Blei, Ng & Jordan (2003); Srivastava & Sutton (2017), Table 1-3: ProdLDA
against LDA by variational Bayes on topic coherence (NPMI) and perplexity.

lda.py's two models on its default corpus (one document per stdlib module: its docstrings and
comments), the same vocabulary, training documents and held-out tenth, each over a few seeds:
VB (batch, 10 passes, sklearn's priors) and ProdLDA (200 passes of Adam). Per run: held-out
perplexity by document completion (theta from the first half of each held-out document, its
second half scored), NPMI of each topic's top 10 words (document co-occurrence over the whole
corpus), topic diversity (distinct words among the top 25); beside them, the NPMI of random
10-word sets drawn from the vocabulary, the floor a topic must beat. The figure: the first VB
run's most coherent topics as bars of their top words, a package x topic map (the share of a
package's words each topic explains), and the NPMI of VB, ProdLDA and random sets side by side.

    python experiments/topics.py --threads 1     # figures/lda.{png,json}
    python experiments/topics.py --quick         # the same code at toy sizes, out/figures/
    python experiments/topics.py --plot-only     # redraw lda.png from its JSON
"""
import os
import sysconfig
import time

import numpy as np
import torch

import figure  # puts the project's root on sys.path
import lda

SIZES = {"full": dict(n_topics=20, vb_passes=10, prodlda_passes=200, seeds=[1337, 1, 2],
                      packages=None, min_df=5, random_sets=50),
         "quick": dict(n_topics=5, vb_passes=2, prodlda_passes=3, seeds=[1337],
                       packages=["json", "email", "asyncio", "http"], min_df=2, random_sets=5)}
COLORS = {"vb": "#1f77b4", "prodlda": "#ff7f0e", "random": "#7f7f7f"}
LABELS = {"vb": "LDA, variational Bayes", "prodlda": "ProdLDA", "random": "random word sets"}
SHOWN = 6  # topics drawn as bars
PACKAGES = 24  # rows of the map: the packages with the most words


def corpus(packages=None):
    """lda.py's default documents, or (quick) those of a few packages only."""
    if packages is None:
        return lda.stdlib_modules()
    root = sysconfig.get_paths()["stdlib"]
    docs = []
    for package in packages:
        for folder, subfolders, files in os.walk(os.path.join(root, package)):
            subfolders[:] = sorted(d for d in subfolders if d not in lda.SKIP)
            for f in sorted(files):
                if f.endswith(".py"):
                    with open(os.path.join(folder, f), encoding="utf-8", errors="replace") as fh:
                        rel = os.path.relpath(os.path.join(folder, f), root)[:-3]
                        docs.append((rel.replace(os.sep, "."), package, lda.prose(fh.read())))
    return docs


def fit(model_name, size, seed, data):
    """lda.py's model trained as its run() trains it, silently: the model and its seconds."""
    cfg = lda.Config(model=model_name, n_topics=size["n_topics"], seed=seed, eval_interval=10 ** 6,
                     max_iter=size[f"{model_name}_passes"], min_df=size["min_df"])
    torch.manual_seed(seed)
    model = lda.build(cfg, data["V"])
    optimizer = (torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.99, 0.999))
                 if model_name == "prodlda" else None)
    X = data["train"]
    t0 = time.time()
    lda.train(model, optimizer, {**data, "train": X if model_name == "vb" else X.float()}, cfg)
    model.eval()
    return model, time.time() - t0


def measure(args):
    size = SIZES["quick" if args.quick else "full"]
    vocab, split = lda.make_corpus(corpus(size["packages"]), size["min_df"], 0.5)
    X = lda.counts([ids for _, _, ids in split["train"]], len(vocab))
    everything = [ids for part in split.values() for _, _, ids in part]
    data = {"train": X, "V": len(vocab), "held_out": [ids for _, _, ids in split["held_out"]],
            "occurs": lda.counts(everything, len(vocab)) > 0}
    out = {"settings": {**size, "vocabulary": len(vocab), "train_documents": len(X),
                        "held_out_documents": len(data["held_out"]),
                        "training_words": int(X.sum())}, "runs": {"vb": [], "prodlda": []}}
    for seed in size["seeds"]:
        for name in ("vb", "prodlda"):
            model, seconds = fit(name, size, seed, data)
            with torch.no_grad():
                tw = model.topic_word().detach()
                scores = lda.npmi(lda.top_words(tw), data["occurs"])
                run = {"seed": seed, "seconds": seconds, "npmi": scores.tolist(),
                       "held_out_perplexity": lda.completion_perplexity(model, data["held_out"],
                                                                        data["V"]),
                       "diversity": lda.diversity(lda.top_words(tw, 25))}
                if name == "vb" and not out["runs"]["vb"]:
                    out["topics"] = topic_words(tw, scores, vocab)
                    out["map"] = package_map(model, X, [g for _, g, _ in split["train"]])
            out["runs"][name].append(run)
            print(f"{name:8s} seed {seed:5d} | held-out perplexity"
                  f" {run['held_out_perplexity']:7.1f} | NPMI {np.mean(scores):.3f} | diversity {run['diversity']:.2f} |"
                  f" {seconds:.0f}s", flush=True)
    rng = np.random.default_rng(0)
    sets = [rng.choice(len(vocab), 10, replace=False) for _ in range(size["random_sets"])]
    out["runs"]["random"] = [{"npmi": lda.npmi(sets, data["occurs"]).tolist()}]
    return out


def topic_words(tw, scores, vocab, n=8):
    """Every topic's top n words and their probabilities, most coherent topic first."""
    order = np.argsort(-scores)
    top = lda.top_words(tw, n)
    return [{"topic": int(k), "npmi": float(scores[k]), "words": [vocab[i] for i in top[k]],
             "p": [float(tw[k, i]) for i in top[k]]} for k in order]


def package_map(model, X, groups):
    """The share of each package's words that each topic explains (theta weighted by a
    document's length, summed over the package's modules, each row normalised)."""
    with torch.no_grad():
        words = model.transform(X) * X.sum(1, keepdim=True)  # (D,K)
    names = sorted(set(groups))
    rows = torch.zeros(len(names), words.shape[1], dtype=words.dtype)
    rows.index_add_(0, torch.tensor([names.index(g) for g in groups]), words)
    biggest = torch.argsort(rows.sum(1), descending=True)[:PACKAGES]
    share = rows[biggest] / rows[biggest].sum(1, keepdim=True)
    return {"packages": [names[i] for i in biggest], "share": share.tolist()}


def mean_npmi(runs):
    return [float(np.mean(r["npmi"])) for r in runs]


def draw(data):
    runs, topics = data["runs"], data["topics"]
    fig = figure.plt.figure(figsize=(16, 9.5))
    grid = fig.add_gridspec(3, 4, width_ratios=[1, 1, 1.6, 0.9], hspace=0.45, wspace=0.35)
    for i, t in enumerate(topics[:SHOWN]):
        ax = fig.add_subplot(grid[i // 2, i % 2])
        ax.barh(range(len(t["words"]))[::-1], t["p"], color=COLORS["vb"])
        ax.set_yticks(range(len(t["words"]))[::-1], t["words"], fontsize=8)
        ax.set_title(f"topic {t['topic']}, NPMI {t['npmi']:.2f}", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        if i // 2 == 2:
            ax.set_xlabel("p(word | topic)", fontsize=8)
    ax = fig.add_subplot(grid[:, 2])
    m = np.array(data["map"]["share"])
    im = ax.imshow(m, aspect="auto", cmap="Blues", vmin=0, vmax=1)
    ax.set_yticks(range(len(m)), data["map"]["packages"], fontsize=8)
    ax.set_xticks(range(m.shape[1]), range(m.shape[1]), fontsize=7)
    ax.set(title="VB topic: share of each package's words")
    ax.xaxis.tick_top()
    ax.grid(False)
    fig.colorbar(im, ax=ax, location="bottom", fraction=0.03, pad=0.06,
                 label="share of the package's words")
    ax = fig.add_subplot(grid[:, 3])
    names = ["vb", "prodlda", "random"]
    values = [[s for r in runs[n] for s in r["npmi"]] for n in names]
    parts = ax.violinplot(values, showmeans=True, showextrema=False)
    for body, n in zip(parts["bodies"], names):
        body.set_color(COLORS[n])
    for x, (n, v) in enumerate(zip(names, values), 1):
        jitter = np.random.default_rng(x).uniform(-0.08, 0.08, len(v))
        ax.scatter(x + jitter, v, s=5, color=COLORS[n], alpha=0.6)
    ax.set_xticks([1, 2, 3], ["VB", "ProdLDA", "random"])
    ax.axhline(0, color="black", lw=0.6)
    ax.set(ylabel="NPMI of a topic's top 10 words", title="coherence, every topic of every run")
    vb, prod = runs["vb"], runs["prodlda"]
    ppl = {n: [r["held_out_perplexity"] for r in runs[n]] for n in ("vb", "prodlda")}
    s = data["settings"]
    fig.suptitle(
        f"lda.py on the standard library's modules ({s['train_documents']} documents,"
        f" {s['vocabulary']:,} words, K = {s['n_topics']}, seeds {s['seeds']}). Mean NPMI: VB"
        f" {min(mean_npmi(vb)):.3f}-{max(mean_npmi(vb)):.3f}, ProdLDA"
        f" {min(mean_npmi(prod)):.3f}-{max(mean_npmi(prod)):.3f}, random word sets"
        f" {np.mean(runs['random'][0]['npmi']):.3f}.\nHeld-out perplexity by document completion"
        f" ({s['held_out_documents']} documents): VB {min(ppl['vb']):.0f}-{max(ppl['vb']):.0f},"
        f" ProdLDA {min(ppl['prodlda']):.0f}-{max(ppl['prodlda']):.0f}. Left: the first VB run's"
        f" {SHOWN} most coherent topics.", fontsize=10)
    return fig


def tables(data):
    """Markdown table of the runs' numbers."""
    lines = ["| model | seed | held-out perplexity | mean NPMI | diversity | seconds |",
             "|---|---|---|---|---|---|"]
    for name in ("vb", "prodlda"):
        for r in data["runs"][name]:
            lines.append(f"| {name} | {r['seed']} | {r['held_out_perplexity']:.1f} |"
                         f" {np.mean(r['npmi']):.3f} | {r['diversity']:.2f} |"
                         f" {r['seconds']:.1f} |")
    lines.append(f"| random 10-word sets | | | {np.mean(data['runs']['random'][0]['npmi']):.3f}"
                 " | | |")
    return "\n".join(lines)


def main(argv=None):
    args = figure.parser(__doc__).parse_args(argv)
    data = figure.run("lda", args, measure, draw)
    print(tables(data))


if __name__ == "__main__":
    main()
