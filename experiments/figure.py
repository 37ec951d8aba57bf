"""What every experiment shares: its command line (--quick, --out, --plot-only), one-line
refusals, each model's colour, and writing a figure beside the JSON of the numbers it draws.

An experiment is two functions: measure(args) -> a dict of plain numbers (JSON), and
draw(data) -> a matplotlib figure drawn from that dict alone. run() calls them:

    python experiments/NAME.py               # measure, write figures/NAME.json and NAME.png
    python experiments/NAME.py --quick       # the same code at toy sizes, into out/figures/
    python experiments/NAME.py --plot-only   # redraw NAME.png from the NAME.json already there
"""
import argparse
import datetime
import json
import os
import platform
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the scripts sit at the top level: `import rnn`
FIGURES = os.path.join(ROOT, "figures")  # the committed figures
QUICK = os.path.join(ROOT, "out", "figures")  # where --quick writes: never over the committed
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")

# One colour per model in every figure, so that a reader learns them once.
COLORS = {
    "mlp": "#7f7f7f", "rnn": "#1f77b4", "lstm": "#ff7f0e", "gru": "#2ca02c", "gpt": "#d62728",
    "word2vec": "#17becf", "seq2seq": "#9467bd", "seq2seq-none": "#bcbd22",
    "transformer": "#8c564b", "bert": "#e377c2",
    "minilm": "#393b79", "minilm-tuned": "#6b6ecf",  # the real all-MiniLM-L6-v2 in bert.py
    "baseline": "#000000",
}

plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "font.size": 10,
                     "axes.spines.top": False, "axes.spines.right": False,
                     "axes.grid": True, "grid.alpha": 0.3})


class Parser(argparse.ArgumentParser):
    """argparse, refusing bad flags as the scripts do: one line on stderr, exit status 2."""

    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def refuse(message):
    """Refuse the input in one line, exit status 2 (for checks argparse cannot make)."""
    print(f"{os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr)
    sys.exit(2)


def positive(cast):
    """An argparse type: `cast`, and above zero."""
    def check(text):
        value = cast(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    check.__name__ = cast.__name__  # argparse names the type in its message
    return check


def parser(doc):
    """The experiment's argument parser, with the flags every experiment has."""
    p = Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="the same code at toy sizes (seconds); writes under out/figures/")
    p.add_argument("--out", default="", help="folder for NAME.png and NAME.json (default:"
                   " figures/, or out/figures/ with --quick)")
    p.add_argument("--plot-only", action="store_true",
                   help="redraw the figure from the JSON already in the folder; measure nothing")
    p.add_argument("--threads", type=positive(int), default=None,
                   help="torch intra-op threads (default: torch's own choice)")
    return p


def machine():
    """Where and when the numbers were measured, kept in every JSON."""
    return {"date": datetime.date.today().isoformat(), "command": " ".join(sys.argv),
            "python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads()}


def run(name, args, measure, draw):
    """Measure (unless --plot-only), then write NAME.json and draw NAME.png from it."""
    folder = args.out or (QUICK if args.quick else FIGURES)
    path = os.path.join(folder, name)
    if args.plot_only:
        if not os.path.exists(path + ".json"):
            refuse(f"no {path}.json to redraw; run without --plot-only first")
        with open(path + ".json") as f:
            data = json.load(f)
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        data = {"machine": machine(), "quick": args.quick, **measure(args)}
        os.makedirs(folder, exist_ok=True)
        with open(path + ".json.tmp", "w") as f:
            json.dump(data, f, indent=1)
        os.replace(path + ".json.tmp", path + ".json")
    fig = draw(data)
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path + ".png", bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}.png and {path}.json")
    return data
