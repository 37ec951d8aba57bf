"""The word map: word2vec.py's vectors of countries and their capitals projected on their first
two principal components, an arrow from each country to its capital, as in Mikolov et al.
(2013b, arXiv:1310.4546) Figure 2; beside it the man/woman/king/queen parallelogram ->
figures/word2vec.png and word2vec.json. (Not experiments/word2vec.py: on sys.path that name
would hide the script.)

The words: the eleven countries and capitals of the paper's Figure 2 (China, Russia, Japan,
Turkey, Poland, Germany, France, Italy, Greece, Spain, Portugal), so that the two pictures
compare; a pair is used when both its words are among the --eval-vocab most frequent, the
words analogies search (the JSON lists any left out). The vectors are the script's input
vectors scaled to length 1 (the ones its analogies and neighbours use); each panel is the PCA
of its own words. The numbers behind the title come from the full vectors, not the projection:
the mean cosine between the country→capital offsets (parallel arrows: near 1), the same for
mismatched pairs (each country to the previous pair's capital) as a control, and how many of the
analogies "country_i : capital_i :: country_j : ?" the script's 3CosAdd answers with capital_j.

The model is word2vec.py trained on the shared Wikipedia sample with README.md's command
(out/word2vec-wiki/word2vec.pt, about 13 minutes at one thread); then:

    python experiments/wordmap.py --checkpoint out/word2vec-wiki
    python experiments/wordmap.py --plot-only       # redraw from figures/word2vec.json
"""
import argparse
import itertools
import os

import torch

import figure
import word2vec

# Mikolov et al. 2013b, Figure 2: (country, capital)
PAIRS = [("china", "beijing"), ("russia", "moscow"), ("japan", "tokyo"), ("turkey", "ankara"),
         ("poland", "warsaw"), ("germany", "berlin"), ("france", "paris"), ("italy", "rome"),
         ("greece", "athens"), ("spain", "madrid"), ("portugal", "lisbon")]
GENDER = ("man", "woman", "king", "queen")  # man -> king as woman -> queen


def load(folder):
    """word2vec.py's model in folder/word2vec.pt, as its --sample-only loads it."""
    cfg = word2vec.Config()
    try:
        ckpt = word2vec.read_checkpoint(os.path.join(folder, "word2vec.pt"))
        word2vec.adopt(cfg, ckpt["config"], "the checkpoint", given=frozenset())
    except word2vec.BadInput as e:
        figure.refuse(str(e))
    model = word2vec.Word2Vec(len(ckpt["vocab"]), cfg.dim)
    model.load_state_dict(ckpt["model"])
    return model, ckpt


def pca(x):
    """x (n,C) -> its coordinates (n,2) on the top two principal components, and the share of
    the variance they hold. Signs fixed: each component's largest coordinate is positive."""
    x = x.double() - x.double().mean(0)
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    xy = u[:, :2] * s[:2]
    xy *= torch.sign(xy.gather(0, xy.abs().argmax(0, keepdim=True)))  # (n,2)
    return xy, (s[:2] ** 2).sum().item() / (s ** 2).sum().item()


def mean_cosine(offsets):
    """The mean cosine over all pairs of rows of offsets (n,C)."""
    unit = offsets / offsets.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    n = len(unit)
    return ((cos.sum() - cos.diagonal().sum()) / (n * (n - 1))).item()


def measure(args):
    model, ckpt = load(args.checkpoint)
    stoi = {w: i for i, w in enumerate(ckpt["vocab"])}

    def known(word):
        return stoi.get(word, args.eval_vocab) < args.eval_vocab

    pairs = [p for p in args.pairs if known(p[0]) and known(p[1])]
    if len(pairs) < 3:
        figure.refuse(f"only {len(pairs)} of the pairs have both words among the"
                      f" {args.eval_vocab} most frequent of {args.checkpoint}'s vocabulary;"
                      " need 3")
    missing = [w for w in GENDER if not known(w)]
    if missing:
        figure.refuse(f"{', '.join(missing)} not among the {args.eval_vocab} most frequent words"
                      f" of {args.checkpoint}'s vocabulary")
    w = word2vec.unit_vectors(model, len(stoi))  # (V,C)
    country = w[[stoi[c] for c, _ in pairs]]
    capital = w[[stoi[c] for _, c in pairs]]
    xy, share = pca(torch.cat((country, capital)))
    gender_xy, gender_share = pca(w[[stoi[g] for g in GENDER]])
    # country_i : capital_i :: country_j : ? for every i != j, answered as the script does
    questions = [[stoi[pairs[i][0]], stoi[pairs[i][1]], stoi[pairs[j][0]]]
                 for i, j in itertools.permutations(range(len(pairs)), 2)]
    answers = word2vec.sample(model, torch.tensor(questions), 1, args.eval_vocab)[:, 0]
    right = sum(a == stoi[pairs[j][1]] for a, (i, j) in
                zip(answers.tolist(), itertools.permutations(range(len(pairs)), 2)))
    king = word2vec.sample(model, torch.tensor([[stoi[g] for g in ("man", "king", "woman")]]),
                           5, args.eval_vocab)[0]
    n = len(pairs)
    return {"checkpoint": os.path.join(args.checkpoint, "word2vec.pt"),
            "trained_on": ckpt["config"]["data"] or "default", "step": ckpt["step"],
            "vocab": len(stoi), "dim": w.shape[1], "eval_vocab": args.eval_vocab,
            "pairs": pairs, "left_out": [p for p in args.pairs if p not in pairs],
            "xy": xy.tolist(), "variance_shown": share,
            "gender": list(GENDER), "gender_xy": gender_xy.tolist(),
            "gender_variance_shown": gender_share,
            "offset_cosine": mean_cosine(capital - country),
            "mismatched_cosine": mean_cosine(capital.roll(1, 0) - country),
            "gender_cosine": mean_cosine(torch.stack((w[stoi["king"]] - w[stoi["man"]],
                                                      w[stoi["queen"]] - w[stoi["woman"]]))),
            "analogies_right": right, "analogies_asked": n * (n - 1),
            "man_king_woman": [ckpt["vocab"][i] for i in king.tolist()]}


def spread(labels, gap, char, right):
    """Heights for labels [(word, x, y)] written beside their dots (to the right if `right`,
    else to the left): a label that would overlap one placed before it (within `gap` in
    height, sharing some width at `char` a character) moves down below it."""
    placed, heights = [], [y for _, _, y in labels]
    for k in sorted(range(len(labels)), key=lambda k: -labels[k][2]):
        word, x, y = labels[k]
        span = (x, x + char * len(word)) if right else (x - char * len(word), x)
        for (a, b), y2 in sorted(placed, key=lambda p: -p[1]):
            if span[0] < b and a < span[1] and abs(y - y2) < gap:
                y = y2 - gap
        placed.append((span, y))
        heights[k] = y
    return heights


def draw(data):
    fig, (ax, ax_g) = figure.plt.subplots(1, 2, figsize=(9, 4.8), layout="constrained",
                                          gridspec_kw={"width_ratios": [1.6, 1]})
    color = figure.COLORS["word2vec"]
    n = len(data["pairs"])
    xy = data["xy"]
    width = max(x for x, _ in xy) - min(x for x, _ in xy)
    gap = 0.04 * (max(y for _, y in xy) - min(y for _, y in xy))
    # the arrows run from the countries to the capitals: labels on their far sides
    left = sum(x for x, _ in xy[:n]) > sum(x for x, _ in xy[n:])  # countries on the right
    countries = spread([(c, *xy[k]) for k, (c, _) in enumerate(data["pairs"])], gap,
                       0.016 * width, right=left)
    capitals = spread([(c, *xy[n + k]) for k, (_, c) in enumerate(data["pairs"])], gap,
                      0.016 * width, right=not left)
    for k, (country, capital) in enumerate(data["pairs"]):
        (x0, y0), (x1, y1) = xy[k], xy[n + k]
        ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", color=color,
                                                            lw=1.2, shrinkA=3, shrinkB=3))
        ax.text(x0, countries[k], f" {country} ", fontsize=8, va="center",
                ha="left" if left else "right")
        ax.text(x1, capitals[k], f" {capital} ", fontsize=8, va="center",
                ha="right" if left else "left", style="italic")
    ax.scatter([p[0] for p in xy], [p[1] for p in xy], s=8, color="black", zorder=3)
    ax.set_title(f"countries → capitals (italic), {100 * data['variance_shown']:.0f}% of the"
                 " variance shown", fontsize=9)
    g = dict(zip(data["gender"], data["gender_xy"]))
    for a, b, style in (("man", "king", "-"), ("woman", "queen", "-"), ("man", "woman", ":"),
                        ("king", "queen", ":")):
        ax_g.annotate("", g[b], g[a], arrowprops=dict(arrowstyle="->", color=color, lw=1.2,
                                                      linestyle=style, shrinkA=3, shrinkB=3))
    for word, (x, y) in g.items():
        ax_g.scatter([x], [y], s=8, color="black", zorder=3)
        ax_g.text(x, y, f" {word}", fontsize=9, va="bottom")
    answers = ", ".join(data["man_king_woman"][:3])
    ax_g.set_title(f"man : king :: woman : ? → {answers}\n"
                   f"{100 * data['gender_variance_shown']:.0f}% of the variance shown",
                   fontsize=9)
    for a in (ax, ax_g):
        a.set_xlabel("first principal component (vectors of length 1)")
        a.set_ylabel("second principal component")
        a.set_aspect("equal", adjustable="datalim")  # directions drawn as they are
        a.margins(0.12)
    fig.suptitle(f"word2vec.py: the country→capital offsets share a direction (mean cosine"
                 f" {data['offset_cosine']:.2f}; mismatched pairs {data['mismatched_cosine']:.2f})"
                 f"\n3CosAdd finds the capital in {data['analogies_right']} of"
                 f" {data['analogies_asked']} analogies; king − man vs queen − woman: cosine"
                 f" {data['gender_cosine']:.2f}" + (" [quick]" if data.get("quick") else ""),
                 fontsize=10)
    return fig


def pair(text):
    """--pairs' COUNTRY:CAPITAL -> (country, capital), lowercased as the vocabulary is."""
    country, sep, capital = text.partition(":")
    if not (sep and country and capital):
        raise argparse.ArgumentTypeError(f"expected COUNTRY:CAPITAL, got {text!r}")
    return country.lower(), capital.lower()


def main(argv=None):
    p = figure.parser(__doc__)
    p.add_argument("--checkpoint", default=os.path.join("out", "word2vec-wiki"),
                   help="folder with word2vec.pt")
    p.add_argument("--pairs", nargs="+", type=pair, default=PAIRS, metavar="COUNTRY:CAPITAL",
                   help="the pairs to draw (default: the eleven of Mikolov et al.'s Figure 2)")
    p.add_argument("--eval-vocab", type=figure.positive(int), default=30000,
                   help="use words among this many most frequent (word2vec.py's default)")
    args = p.parse_args(argv)
    figure.run("word2vec", args, measure, draw)


if __name__ == "__main__":
    main()
