"""Gated cells remember over long spans where the plain RNN cannot: the adding problem of
Hochreiter & Schmidhuber (1997), "Long Short-Term Memory", as set by Arjovsky, Shah & Bengio
(2016), "Unitary Evolution Recurrent Neural Networks", arXiv:1511.06464.

    python experiments/memory.py --threads 1   # figures/memory.png and memory.json (~25 min)
    python experiments/memory.py --threads 1 --lengths 10 25 50 100   # ~10 min, without 200
    python experiments/memory.py --quick       # the same code at toy sizes, into out/figures/
    python experiments/memory.py --plot-only   # redraw memory.png from memory.json

The task: a sequence of T steps, each two numbers: a value drawn uniformly from [0, 1] and a
marker, 1 at exactly two steps (one in the first half, t < T/2, one in the second) and 0
elsewhere. The target is the sum of the two marked values. Predicting the mean, 1, whatever the
input gives the variance of a sum of two U(0,1), MSE = 2/12 = 1/6: the baseline a model must beat,
and it can only do so by carrying the first marked value across at least T/2 steps.

The models: the project's rnn.RNN, lstm.LSTM and gru.GRU (input 2, hidden 128), and a linear
readout of the last hidden state, y = W h_T + b. Each is trained on fresh random batches with
the mean squared error, Adam, the gradient's norm clipped to 1, the same step budget and seeds;
the learning rate per cell (LR: the RNN does not learn at the gated cells' 1e-2, the LSTM sits at
the baseline at the RNN's 1e-3). Training stops early when the running train MSE, the mean of
the batches' MSE over the last EVERY steps (checked every EVERY steps), falls below TARGET.
Measured: the MSE on a fixed held-out set of sequences per T, the steps and seconds taken, and
the running train MSE every EVERY steps.

The mechanism: how much the final loss L = (y - target)^2 of a sequence depends on the input
x_t, |dL/dx_t| (the norm over x_t's two numbers, averaged over a batch of sequences), against
the distance T - t back from the end, at the largest T, for each cell untrained (its initial
weights) and trained (the main run's model at that T). In float64: the plain RNN's falls below
float32's smallest number.
"""
import copy
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import figure  # puts the project's root on sys.path
import gru
import lstm
import rnn

CELLS = {"rnn": rnn.RNN, "lstm": lstm.LSTM, "gru": gru.GRU}
LR = {"rnn": 1e-3, "lstm": 1e-2, "gru": 1e-2}  # Adam's learning rate per cell (docstring)
SIZES = {  # the default run, and --quick's toy one (same code)
    "full": dict(lengths=[10, 25, 50, 100, 200], hidden=128, batch=64, max_steps=3000,
                 every=50, test=1000, grad_batch=64),
    "quick": dict(lengths=[6, 12], hidden=16, batch=16, max_steps=40, every=10, test=200,
                  grad_batch=8),
}
TARGET = 0.01  # stop when the running train MSE falls below this
CLIP = 1.0  # the gradient's norm is clipped to this
SEED = 0  # the models' initial weights and the training batches
TEST_SEED = 1000  # the held-out sequences of length T: seed TEST_SEED + T
GRAD_SEED = 2000  # the mechanism panel's batch
BASELINE = 1 / 6  # MSE of predicting the mean, 1: the variance of a sum of two U(0,1)
SOLVED = BASELINE / 10  # a test MSE below this counts as learned, in the title


def adding(n, T, generator):
    """n sequences of the adding problem: x (n,T,2), the values and the markers, and the
    targets (n,), the sum of the two marked values."""
    values = torch.rand(n, T, generator=generator)  # (n,T)
    first = torch.randint(T // 2, (n,), generator=generator)  # in the first half
    second = T // 2 + torch.randint(T - T // 2, (n,), generator=generator)  # in the second
    markers = torch.zeros(n, T)
    markers[torch.arange(n), first] = 1.0
    markers[torch.arange(n), second] = 1.0
    return torch.stack((values, markers), dim=-1), (values * markers).sum(1)


class Model(nn.Module):
    """A recurrent layer over the sequence and a linear readout of its last hidden state."""

    def __init__(self, cell, hidden):
        super().__init__()
        self.cell = CELLS[cell](2, hidden, batch_first=True)
        self.readout = nn.Linear(hidden, 1)

    def forward(self, x):
        h, _ = self.cell(x)  # (B,T,H)
        return self.readout(h[:, -1]).squeeze(-1)  # (B,)


def train(cell, T, size):
    """Train a fresh model on length-T sequences. Returns the trained model, its initial
    weights, and {steps, seconds, curve: running train MSE every `every` steps, diverged}."""
    torch.manual_seed(SEED)
    model = Model(cell, size["hidden"])
    initial = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=LR[cell])
    batches = torch.Generator().manual_seed(SEED)
    curve, window, diverged, step = [], [], False, 0
    start = time.perf_counter()
    while step < size["max_steps"]:
        x, y = adding(size["batch"], T, batches)
        loss = F.mse_loss(model(x), y)
        if not torch.isfinite(loss):
            diverged = True
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        step += 1
        window.append(loss.item())
        if len(window) == size["every"]:
            curve.append(sum(window) / len(window))
            window = []
            if curve[-1] < TARGET:
                break
    seconds = time.perf_counter() - start
    print(f"{cell} T={T}: {step} steps, {seconds:.0f} s, running train MSE"
          f" {curve[-1] if curve else float('nan'):.4f}", flush=True)
    return model, initial, {"steps": step, "seconds": seconds, "curve": curve,
                            "diverged": diverged}


@torch.no_grad()
def test_mse(model, T, n):
    """MSE on n held-out sequences of length T, the same for every model (seed TEST_SEED+T)."""
    x, y = adding(n, T, torch.Generator().manual_seed(TEST_SEED + T))
    mse = F.mse_loss(model(x), y).item()
    return mse if mse == mse and abs(mse) != float("inf") else None  # JSON: no NaN


def input_gradients(model, T, n):
    """|dL/dx_t| for t = T-1 .. 0, i.e. at distances 1 .. T from the end: the norm over x_t's
    two numbers of the gradient of each sequence's own loss, averaged over n sequences.
    In float64 (a copy of the model)."""
    model = copy.deepcopy(model).double()
    x, y = adding(n, T, torch.Generator().manual_seed(GRAD_SEED))
    x, y = x.double().requires_grad_(), y.double()
    losses = (model(x) - y) ** 2  # (n,): the sum's gradient at x[i] is losses[i]'s
    (grad,) = torch.autograd.grad(losses.sum(), x)  # (n,T,2)
    return grad.norm(dim=-1).mean(0).flip(0).tolist()  # (T,), the last step first


def measure(args):
    size = {**SIZES["quick" if args.quick else "full"]}
    if args.lengths:
        size["lengths"] = args.lengths
    lengths, T_max = size["lengths"], size["lengths"][-1]
    runs, gradients = {}, {}
    for cell in CELLS:
        runs[cell] = {"test_mse": [], "steps": [], "seconds": [], "curve": [], "diverged": []}
        for T in lengths:
            model, initial, run = train(cell, T, size)
            for key, value in run.items():
                runs[cell][key].append(value)
            runs[cell]["test_mse"].append(test_mse(model, T, size["test"]))
            print(f"{cell} T={T}: test MSE {runs[cell]['test_mse'][-1]}", flush=True)
        gradients[cell] = {"trained": input_gradients(model, T_max, size["grad_batch"])}
        model.load_state_dict(initial)
        gradients[cell]["untrained"] = input_gradients(model, T_max, size["grad_batch"])
    return {"settings": {**size, "lr": LR, "target": TARGET, "clip": CLIP, "seed": SEED,
                         "test_seed": TEST_SEED, "grad_seed": GRAD_SEED,
                         "optimizer": "Adam", "running_mse": "mean over the last `every` steps"},
            "baseline": BASELINE, "lengths": lengths, "runs": runs,
            "gradient_length": T_max, "gradients": gradients}


def reach(lengths, mses, below=SOLVED):
    """The largest T up to which every test MSE is below `below` (None: not even the first)."""
    best = None
    for T, mse in zip(lengths, mses):
        if mse is None or mse >= below:
            break
        best = T
    return best


def listed(names):
    """"a", "a and b", "a, b and c"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def finding(data):
    """The title's sentences, from the numbers: up to which T each cell learned the task (test
    MSE below SOLVED), and each trained cell's |dL/dx_t| from the farthest step back."""
    lengths, T = data["lengths"], data["gradient_length"]
    groups = {}
    for cell, run in data["runs"].items():
        groups.setdefault(reach(lengths, run["test_mse"]), []).append(cell.upper())
    parts = []
    for reached, cells in sorted(groups.items(), key=lambda g: -1 if g[0] is None else g[0],
                                 reverse=True):
        if reached is None:
            parts.append(f"{listed(cells)} at no T")
        elif reached == lengths[-1]:
            parts.append(f"{listed(cells)} at every T up to {reached}")
        else:
            parts.append(f"{listed(cells)} only up to T = {reached}")
    far = ", ".join(f"{cell.upper()} {grads['trained'][-1]:.0e}"
                    for cell, grads in data["gradients"].items())
    return (f"The adding problem is learned (test MSE < baseline/10) by {'; '.join(parts)}\n"
            f"what the trained models' loss feels of the input {T} steps back,"
            f" |dL/dx_t|: {far}")


def draw(data):
    s, m = data["settings"], data["machine"]
    lengths, T = data["lengths"], data["gradient_length"]
    fig, (mse_ax, grad_ax) = figure.plt.subplots(1, 2, figsize=(11, 4.6))
    for cell, run in data["runs"].items():
        points = [(L, v) for L, v in zip(lengths, run["test_mse"]) if v is not None]
        mse_ax.plot(*zip(*points), "o-", color=figure.COLORS[cell],
                    label=f"{cell} (lr {s['lr'][cell]:g})")
    mse_ax.axhline(data["baseline"], color=figure.COLORS["baseline"], ls="--", lw=1,
                   label=f"predict the mean: {data['baseline']:.3f}")
    mse_ax.set(xscale="log", yscale="log", xlabel="sequence length T (steps, log scale)",
               ylabel="test MSE (log scale)",
               title=f"test MSE on {s['test']} held-out sequences per T")
    mse_ax.axhline(SOLVED, color=figure.COLORS["baseline"], ls=":", lw=1,
                   label=f"a tenth of that: {SOLVED:.3f}")
    mse_ax.set_xticks(lengths, [str(L) for L in lengths])
    mse_ax.set_xticks([], minor=True)  # the lengths measured only
    mse_ax.legend(fontsize=8)
    distance = list(range(1, T + 1))
    for cell, grads in data["gradients"].items():
        for state, style in (("trained", "-"), ("untrained", ":")):
            grad_ax.plot(distance, grads[state], style, color=figure.COLORS[cell],
                         label=f"{cell}, {state}")
    grad_ax.set(yscale="log", xlabel=f"distance from the end T - t (steps), T = {T}",
                ylabel="|dL/dx_t| (log scale)",
                title=f"how much the loss feels x_t; mean of {s['grad_batch']} sequences")
    grad_ax.legend(fontsize=8, ncol=2)
    fig.text(0.01, 0.0, f"hidden {s['hidden']}, batch {s['batch']}, Adam, clip {s['clip']:g},"
             f" at most {s['max_steps']} steps, stop at running train MSE < {s['target']:g};"
             f" seed {s['seed']}; {m['date']}, torch {m['torch']}, threads {m['threads']}"
             + (" (--quick)" if data["quick"] else ""), fontsize=8, va="bottom")
    fig.suptitle(finding(data), fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def report(data):
    """The table on stdout: test MSE, steps and seconds per cell and T."""
    print("| model | T | test MSE | steps | seconds |\n|---|---|---|---|---|")
    for cell, run in data["runs"].items():
        for T, mse, steps, sec in zip(data["lengths"], run["test_mse"], run["steps"],
                                      run["seconds"]):
            print(f"| {cell} | {T} | {mse if mse is None else f'{mse:.4f}'} | {steps} |"
                  f" {sec:.0f} |")


def main(argv=None):
    p = figure.parser(__doc__)
    p.add_argument("--lengths", type=figure.positive(int), nargs="+", default=None,
                   help="the sequence lengths T, increasing (default: 10 25 50 100 200;"
                   " --quick: 6 12); the mechanism panel at the last")
    args = p.parse_args(argv)
    if args.lengths and (min(args.lengths) < 2 or args.lengths != sorted(set(args.lengths))):
        figure.refuse(f"--lengths must increase, each at least 2 (a marker per half); got"
                      f" {' '.join(map(str, args.lengths))}")
    report(figure.run("memory", args, measure, draw))


if __name__ == "__main__":
    main()
