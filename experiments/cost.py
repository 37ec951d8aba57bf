"""Attention trades sequential steps for quadratic work: Vaswani et al. (2017), "Attention Is All
You Need", arXiv:1706.03762, Table 1. Per layer, on n positions of width d, self-attention costs
O(n^2 d) in O(1) sequential steps, recurrence O(n d^2) in O(n) steps; generating, a key/value
cache makes each new token O(n), where a recurrent state makes it O(1).

    python experiments/cost.py               # figures/cost.png and cost.json (a few minutes)
    python experiments/cost.py --quick       # the same code at toy sizes, into out/figures/
    python experiments/cost.py --plot-only   # redraw cost.png from cost.json

Measured with the project's own layers and torch's, one layer each at the same width d and
batch B, against the sequence length n. Timing: one untimed call of each model at each size,
then rounds in which every model at every size runs once in turn, so that a change in the
machine's load hits them all; the figure draws the median, the JSON keeps every round.
1. seconds per training step: forward on x (B,n,d), loss mean(y^2), backward to the weights and
   to x. The layers: rnn.RNN, lstm.LSTM, gru.GRU (hidden d) and torch's nn.RNN, nn.LSTM, nn.GRU;
   gpt.py's CausalSelfAttention (d/64 heads; its projections included), fused (torch's
   scaled_dot_product_attention, gpt.py's --kernels fused) and written out (--kernels written).
2. memory: the bytes of the tensors autograd saves for the backward pass in that forward, each
   storage counted once, the parameters left out: what a training step holds on to and what
   grows with n. Exact and the same on every machine (no timing).
3. seconds per generated token against the context already read: the call gpt.py's sample()
   makes for each new token, with its cache (the new token against the cached keys and values)
   and without (the whole window again), and the recurrent language models' call (the new token
   on from the carried state). One layer, width d, a batch of one.
Slopes: log-log least squares over the upper sizes (from FIT_FROM of the largest), where the
asymptote shows; printed, and in each legend entry.
"""
import math
import statistics
import time

import torch
import torch.nn as nn

import figure  # puts the project's root on sys.path
import gpt
import gru
import lstm
import rnn

SIZES = {  # the default run, and --quick's toy one (same code)
    "full": dict(batch=16, width=128, lengths=[2 ** i for i in range(4, 12)],  # 16 .. 2048
                 repeats=7, vocab=96, contexts=[2 ** i for i in range(4, 14)],  # 16 .. 8192
                 token_repeats=15),
    "quick": dict(batch=2, width=16, lengths=[8, 16, 32, 64], repeats=3,
                  vocab=16, contexts=[8, 16, 32, 64], token_repeats=3),
}
FIT_FROM = 8  # fit the slopes over the sizes >= the largest / FIT_FROM (the upper 4 doublings)

# the layers of panels 1 and 2: name -> (colour, torch's kernel: dashed)
LAYERS = {
    "rnn.RNN": ("rnn", False), "nn.RNN": ("rnn", True),
    "lstm.LSTM": ("lstm", False), "nn.LSTM": ("lstm", True),
    "gru.GRU": ("gru", False), "nn.GRU": ("gru", True),
    "attention, written out": ("gpt", False), "attention, fused": ("gpt", True),
}
# the models of panel 3: name -> (colour, line style)
GENERATORS = {"gpt, no cache": ("gpt", ":"), "gpt, kv cache": ("gpt", "-"),
              "rnn": ("rnn", "-"), "lstm": ("lstm", "-"), "gru": ("gru", "-")}


def make_layer(name, d):
    """One layer of width d, taking and giving (B,n,d); torch's seed fixed, so every run builds
    the same weights."""
    torch.manual_seed(0)
    recurrent = {"rnn.RNN": rnn.RNN, "lstm.LSTM": lstm.LSTM, "gru.GRU": gru.GRU,
                 "nn.RNN": nn.RNN, "nn.LSTM": nn.LSTM, "nn.GRU": nn.GRU}
    if name in recurrent:
        return recurrent[name](d, d, batch_first=True)
    layer = gpt.CausalSelfAttention(d, max(1, d // 64))  # GPT-2's 64-wide heads
    layer.fused = name == "attention, fused"
    return layer


def train_step(layer, x):
    """A function running one training step of `layer` on x: forward, loss, backward."""
    def step():
        for p in (*layer.parameters(), x):
            p.grad = None
        y, _ = layer(x)  # both kinds return (output, state or keys and values)
        y.square().mean().backward()
    return step


def saved_bytes(forward, parameters=()):
    """Bytes of the tensors autograd saves for backward while forward() runs, each storage
    counted once (views share theirs), those of `parameters` left out."""
    skip = {p.untyped_storage().data_ptr() for p in parameters}
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            storages[s.data_ptr()] = s  # kept alive here: no address is reused meanwhile
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(s.nbytes() for s in storages.values())


def timings(steps, repeats, what):
    """{key: [seconds of steps[key]() at each repeat]}: one untimed call each, then `repeats`
    rounds in which every step runs once, in turn, so that a change in the machine's load hits
    them all."""
    times = {key: [] for key in steps}
    for step in steps.values():
        step()
    for r in range(repeats):
        start = time.perf_counter()
        for key, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[key].append(time.perf_counter() - t0)
        print(f"{what}: round {r + 1}/{repeats}, {time.perf_counter() - start:.1f} s", flush=True)
    return times


def token_steps(models, S, vocab):
    """{name: a function generating one token after a context of S tokens}, as the samplers do:
    gpt.sample() with its cache (model.advance(new, cache of S)) and without (model.advance of
    the S+1 tokens), the recurrent samplers (model.advance(new, state after S))."""
    g = torch.Generator().manual_seed(S)
    context = torch.randint(vocab, (1, S), generator=g)  # (1,S)
    new = torch.randint(vocab, (1, 1), generator=g)  # (1,1)
    _, cache = models["gpt"].advance(context[:, :-1])
    # the last token through the cache, so that it is as sample() holds it after its first
    # token: grown by torch.cat, contiguous (straight after a prompt it is views of c_attn's)
    _, cache = models["gpt"].advance(context[:, -1:], cache)
    window = torch.cat((context, new), dim=1)  # (1,S+1)
    steps = {"gpt, no cache": lambda: models["gpt"].advance(window),
             "gpt, kv cache": lambda: models["gpt"].advance(new, cache)}
    for name in ("rnn", "lstm", "gru"):
        _, state = models[name].advance(context)
        steps[name] = lambda m=models[name], s=state: m.advance(new, s)
    return steps


def measure(args):
    size = SIZES["quick" if args.quick else "full"]
    B, d, lengths = size["batch"], size["width"], size["lengths"]
    memory, steps = {name: [] for name in LAYERS}, {}
    for n in lengths:
        x = torch.randn(B, n, d, generator=torch.Generator().manual_seed(n), requires_grad=True)
        for name in LAYERS:
            layer = make_layer(name, d)
            memory[name].append(saved_bytes(lambda: layer(x), list(layer.parameters())))
            steps[n, name] = train_step(layer, x)
    times = timings(steps, size["repeats"], "training steps")
    step_s = {name: [times[n, name] for n in lengths] for name in LAYERS}  # every repeat

    contexts, V = size["contexts"], size["vocab"]
    torch.manual_seed(0)
    models = {"gpt": gpt.GPT(V, contexts[-1] + 1, d, max(1, d // 64), 1),
              "rnn": rnn.LanguageModel(V, d, d, 1), "lstm": lstm.LanguageModel(V, d, d, 1),
              "gru": gru.LanguageModel(V, d, d, 1)}
    with torch.no_grad():
        for model in models.values():
            model.eval()
        steps = {(S, name): step for S in contexts
                 for name, step in token_steps(models, S, V).items()}
        times = timings(steps, size["token_repeats"], "generated tokens")
    token_s = {name: [times[S, name] for S in contexts] for name in GENERATORS}
    medians = {key: {name: [statistics.median(t) for t in ts] for name, ts in runs.items()}
               for key, runs in (("step_seconds", step_s), ("token_seconds", token_s))}
    return {"settings": {**size, "heads": max(1, d // 64), "layers": 1, "fit_from": FIT_FROM},
            "lengths": lengths, **medians, "saved_bytes": memory, "contexts": contexts,
            "repeats": {"step_seconds": step_s, "token_seconds": token_s}}


def slope(xs, ys):
    """Least-squares slope of log y against log x: the exponent k of y ~ x^k."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return (sum((a - mx) * (b - my) for a, b in zip(lx, ly))
            / sum((a - mx) ** 2 for a in lx))


def fitted(xs, ys, fit_from=FIT_FROM):
    """The slope over the upper sizes, xs >= max(xs) / fit_from."""
    upper = [(x, y) for x, y in zip(xs, ys) if x >= max(xs) / fit_from]
    return slope(*zip(*upper))


def slopes(data):
    """{panel: {model: fitted slope}} for the three panels, over the range the run chose."""
    f = data["settings"]["fit_from"]
    return {key: {name: fitted(data[sizes], ys, f) for name, ys in data[key].items()}
            for key, sizes in (("step_seconds", "lengths"), ("saved_bytes", "lengths"),
                               ("token_seconds", "contexts"))}


def power(base, k):
    """base^k in mathtext, k to one decimal."""
    return f"${base}^{{{k:.1f}}}$"


def draw(data):
    s, k, m = data["settings"], slopes(data), data["machine"]
    step, mem, tok = k["step_seconds"], k["saved_bytes"], k["token_seconds"]
    fig = figure.plt.figure(figsize=(10, 7.6))
    grid = fig.add_gridspec(2, 2)
    time_ax, memory_ax, token_ax, key_ax = (fig.add_subplot(grid[i, j])
                                            for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))
    for ax, key, scale in ((time_ax, "step_seconds", 1e3), (memory_ax, "saved_bytes", 2 ** -20)):
        for name, (colour, builtin) in LAYERS.items():
            ax.plot(data["lengths"], [v * scale for v in data[key][name]],
                    "s--" if builtin else "o-", ms=3, color=figure.COLORS[colour], label=name)
    time_ax.set(ylabel="ms per training step (forward + backward)",
                title=f"time: one layer, batch {s['batch']}, width {s['width']}")
    memory_ax.set(ylabel="MiB saved for backward",
                  title="memory: the activations autograd keeps")
    for name, (colour, style) in GENERATORS.items():
        token_ax.plot(data["contexts"], [1e3 * v for v in data["token_seconds"][name]], style,
                      marker="o", ms=3, color=figure.COLORS[colour],
                      label=f"{name:14s}{tok[name]:5.2f}")
    token_ax.set(ylabel="ms per generated token",
                 title=f"generating: one-layer models, width {s['width']}, batch 1")
    token_ax.legend(prop={"family": "monospace", "size": 8}, title="model          slope",
                    alignment="left", title_fontproperties={"family": "monospace", "size": 8})
    for ax, xs, name in ((time_ax, data["lengths"], "sequence length n"),
                         (memory_ax, data["lengths"], "sequence length n"),
                         (token_ax, data["contexts"], "context already read S")):
        ax.set(xscale="log", yscale="log", xlabel=f"{name} (log scale)")
        ax.set_xticks(xs, [str(x) for x in xs], fontsize=8)  # the sizes measured, as numbers
        ax.minorticks_off()
        ax.tick_params(axis="y", labelsize=8)
    # the layers' key: each line with its two slopes, fitted over the upper sizes
    key_ax.axis("off")
    key_ax.legend(time_ax.get_lines(), [f"{name:23s}{step[name]:5.2f}{mem[name]:7.2f}"
                                        for name in LAYERS],
                  loc="upper left", prop={"family": "monospace", "size": 9}, frameon=False,
                  alignment="left",
                  title=f"{'slope of':>31s}\n{'layer':23s} time memory",
                  title_fontproperties={"family": "monospace", "size": 9})
    lengths, contexts = data["lengths"], data["contexts"]
    key_ax.text(0.03, 0.0, "solid: written out in this project; dashed: torch's kernels\n"
                f"slopes: log-log fit over n >= {max(lengths) // s['fit_from']},"
                f" S >= {max(contexts) // s['fit_from']}; median of {s['repeats']} repeats"
                f" (tokens {s['token_repeats']})\n{m['date']}, torch {m['torch']},"
                f" threads {m['threads']}" + (" (--quick)" if data["quick"] else ""),
                fontsize=8, va="bottom")
    fig.suptitle(
        f"Written-out attention's step time grows as {power('n', step['attention, written out'])}"
        f" and its memory as {power('n', mem['attention, written out'])}; the LSTM's as"
        f" {power('n', step['lstm.LSTM'])} and {power('n', mem['lstm.LSTM'])}\n"
        f"a generated token costs {power('S', tok['gpt, no cache'])} without gpt's cache,"
        f" {power('S', tok['gpt, kv cache'])} with it, {power('S', tok['lstm'])} with an LSTM's"
        " state", fontsize=11)
    fig.tight_layout()
    return fig


def report(data):
    """The numbers and slopes on stdout, as tables."""
    k, fit_from = slopes(data), data["settings"]["fit_from"]
    for key, xs, unit, scale in (("step_seconds", data["lengths"], "ms", 1e3),
                                 ("saved_bytes", data["lengths"], "MiB", 2 ** -20),
                                 ("token_seconds", data["contexts"], "ms", 1e3)):
        print(f"\n{key} ({unit}), slope over the sizes >= {max(xs) // fit_from}")
        print("| model | " + " | ".join(str(x) for x in xs) + " | slope |")
        print("|---" * (len(xs) + 2) + "|")
        for name, ys in data[key].items():
            print(f"| {name} | " + " | ".join(f"{y * scale:.4g}" for y in ys)
                  + f" | {k[key][name]:.2f} |")


def main(argv=None):
    args = figure.parser(__doc__).parse_args(argv)
    report(figure.run("cost", args, measure, draw))


if __name__ == "__main__":
    main()
