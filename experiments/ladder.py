"""The ladder's curves: every character-level script (mlp, rnn, lstm, gru, gpt) trained on one
corpus through its own command line for the same wall-clock budget, its validation loss drawn
against seconds and against characters seen -> figures/ladder.png and ladder.json.

1. Trial: each script runs --trial-steps steps (one batch per evaluation), which times its step.
2. Run: each script runs again with max_steps set so that its steps fill --seconds (so that its
   learning-rate schedule ends with the budget), evaluating --evals times (and at step 0) on
   --eval-steps batches of each split. The evaluations come on top of the budget: 16 x 2 x 8
   forward passes, each about a third of a training step, or some 85 steps' worth, a few
   percent of a 300-second run (more for the slow-stepping LSTM). The JSON keeps each run's
   share ("eval_share": 1 - its steps x the trial's seconds a step / the seconds it took).

Sequence models (rnn, lstm, gru, gpt) all get --block-size 128 --batch-size 32, rnn.py's
defaults, so that a step sees the same characters; mlp.py keeps its own (context 16, 64 windows
of 16 scored characters a step). Everything else is each script's default. Each script writes
every evaluation to its metrics file, <out-dir>/<script>.jsonl (step, train_loss, val_loss,
seconds, chars_per_s), which is what this reads, with the parameter count of the checkpoint
beside it; their logs, metrics files and checkpoints go to --runs-dir. The dashed
line is a unigram model: each character's frequency in the training split, scored on the
validation split. It also prints the table the benchmark this replaces printed, from the same
runs: each script's val loss at the end of the budget and at equal characters seen.

Timing-sensitive (the budget is wall-clock): run it alone on the machine. About 30 minutes:

    python experiments/ladder.py                  # 300 s each, one thread: figures/ladder.png
    python experiments/ladder.py --plot-only      # redraw it from figures/ladder.json
    python experiments/ladder.py --quick          # 2 s each: out/figures/ladder.png
"""
import importlib
import json
import os
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import torch

import figure
import rnn

SCRIPTS = ("mlp", "rnn", "lstm", "gru", "gpt")  # bottom to top of the ladder
SEQUENCE = {"block_size": 128, "batch_size": 32}  # for every script but mlp.py


def flags(script):
    """The flags every run of `script` gets besides its budget: the shared sequence shape."""
    return [] if script == "mlp" else [f"--{k.replace('_', '-')}={v}" for k, v in SEQUENCE.items()]


def chars_per_step(script):
    """Characters a step trains on (scored targets): batch_size x block_size, as in its log."""
    cfg = importlib.import_module(script).Config(**({} if script == "mlp" else SEQUENCE))
    return cfg.batch_size * cfg.block_size * getattr(cfg, "grad_accum", 1)


def parameters(path):
    """Millions of parameters in the checkpoint at `path`, a tied matrix counted once (as the
    scripts count them)."""
    weights = torch.load(path, map_location="cpu", weights_only=True)["model"].values()
    return sum({w.data_ptr(): w.numel() for w in weights}.values()) / 1e6


def train(script, steps, evals, eval_steps, sample_chars, args, name):
    """`python <script>.py` for `steps` steps, evaluated `evals` times; its metrics file."""
    out_dir = os.path.join(args.runs_dir, name)
    cmd = [sys.executable, os.path.join(figure.ROOT, f"{script}.py"), "--max-steps", str(steps),
           "--eval-interval", str(max(1, steps // evals)), "--eval-steps", str(eval_steps),
           "--out-dir", out_dir, "--num-samples", str(int(sample_chars > 0)),
           "--max-new-tokens", str(sample_chars), *flags(script)]
    cmd += ["--data", args.data] if args.data else []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{script}.log"), "w") as f:
        f.write(" ".join(cmd) + "\n" + r.stdout + r.stderr)
    if r.returncode != 0:
        sys.exit(f"ladder.py: {' '.join(cmd)} failed (exit status {r.returncode}):\n{r.stderr}")
    with open(os.path.join(out_dir, f"{script}.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return {"params": round(parameters(os.path.join(out_dir, f"{script}.pt")), 2),
            "command": " ".join(["python", f"{script}.py"] + cmd[2:]),
            "wall": time.time() - t0, "steps": [r["step"] for r in records],
            "train": [r["train_loss"] for r in records], "val": [r["val_loss"] for r in records],
            "rate": [r["chars_per_s"] for r in records],
            "seconds": [r["seconds"] for r in records]}


def unigram(text):
    """Validation loss (nats per character) of each character's frequency in the training
    split (the scripts' split: the first 90%), plus-one smoothed over the text's characters."""
    n = int(0.9 * len(text))
    counts, total = Counter(text[:n]), n + len(set(text))
    val = Counter(text[n:])
    return -sum(k * np.log((counts[c] + 1) / total) for c, k in val.items()) / (len(text) - n)


def measure(args):
    try:  # the scripts' own reader of --data, and their default corpus
        text = rnn.load_text(args.data)
    except rnn.BadInput as e:
        figure.refuse(str(e))
    quick = args.quick
    seconds = args.seconds or (2 if quick else 300)
    evals, eval_steps = args.evals or (3 if quick else 15), args.eval_steps or (2 if quick else 8)
    trial_steps = args.trial_steps or (3 if quick else 50)
    print(f"ladder: {', '.join(args.scripts)} on {args.data or 'the default corpus'};"
          f" {seconds:g} s each at {args.threads} thread(s)", flush=True)
    runs = {}
    for s in args.scripts:
        trial = train(s, trial_steps, 1, 1, 0, args, "trial")
        # seconds a step, from the chars/s of the trial's one evaluation: its whole run
        per_step = chars_per_step(s) / max(trial["rate"][-1], 1.0)
        steps = max(1, round(seconds / per_step))
        run = train(s, steps, evals, eval_steps, 0 if quick else 200, args, "run")
        run.update(chars_per_step=chars_per_step(s), trial_seconds_per_step=per_step,
                   max_steps=steps, eval_share=1 - steps * per_step / max(
                       run["seconds"][-1], steps * per_step),  # (0 if timing noise is below)
                   chars=[k * chars_per_step(s) for k in run["steps"]])
        del run["rate"]
        runs[s] = run
        print(f"  {s:5s} {steps:6d} steps ({per_step:.4f} s each in the trial), val"
              f" {run['val'][-1]:.4f} after {run['seconds'][-1]:.0f} s, evaluations"
              f" ~{100 * run['eval_share']:.0f}% of it", flush=True)
    data = {"corpus": args.data or "default", "characters": len(text), "vocab": len(set(text)),
            "seconds": seconds, "threads": args.threads, "evals": evals,
            "eval_steps": eval_steps, "trial_steps": trial_steps, "unigram": unigram(text),
            "runs": runs}
    table = summary(data)
    print(table)
    with open(os.path.join(args.runs_dir, "table.md"), "w") as f:
        f.write(" ".join(sys.argv) + "\n\n" + table + "\n")
    return data


def at(xs, ys, x):
    """The curve (xs, ys) read at x by linear interpolation (x within its range)."""
    return float(np.interp(x, xs, ys))


def summary(data):
    """The old benchmark's table from the curves: loss at the end of the budget (equal time)
    and at the characters the shortest-reaching run saw (equal characters)."""
    runs = data["runs"]
    common = min(r["chars"][-1] for r in runs.values())
    lines = [f"| script | parameters | steps in ~{data['seconds']:g} s | seconds taken"
             f" | characters seen | val loss at the end | val loss at {common / 1e6:.2f}M"
             " characters | evaluations' share |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s, r in runs.items():
        lines.append(f"| {s}.py | {r['params']:.2f}M | {r['steps'][-1]} | {r['seconds'][-1]:.0f}"
                     f" | {r['chars'][-1] / 1e6:.2f}M | {r['val'][-1]:.4f}"
                     f" | {at(r['chars'], r['val'], common):.4f}"
                     f" | {100 * r['eval_share']:.0f}% |")
    return "\n".join(lines)


def leaders(curves, unit):
    """Which curve is lowest where, in words: "gru to 80 s, then rnn (to 300 s)". curves:
    {name: (xs, ys)}, read on a grid from 5% of the shortest curve's range to its end; a lead
    held over less than 5% of that range is a wobble of the evaluation, not a lead: left out."""
    end = min(xs[-1] for xs, _ in curves.values())
    grid = np.linspace(0.05 * end, end, 200)
    best = [min(curves, key=lambda n: at(*curves[n], x)) for x in grid]
    spans = []  # [name, from, to]
    for name, x in zip(best, grid):
        if spans and spans[-1][0] == name:
            spans[-1][2] = x
        else:
            spans.append([name, x, x])
    spans = [s for s in spans if s[2] - s[1] >= 0.05 * end] or spans[-1:]
    merged = []
    for s in spans:
        if merged and merged[-1][0] == s[0]:
            merged[-1][2] = s[2]
        else:
            merged.append(s)
    if len(merged) == 1:
        return f"{merged[0][0]} lowest throughout (to {unit(end)})"
    return ", then ".join(f"{n} to {unit(hi)}" for n, _, hi in merged[:-1]) + \
        f", then {merged[-1][0]} (to {unit(end)})"


def draw(data):
    runs = data["runs"]
    fig, (ax_t, ax_c) = figure.plt.subplots(1, 2, figsize=(9, 4), sharey=True)
    for s, r in runs.items():
        style = dict(color=figure.COLORS[s], marker=".", markersize=4, linewidth=1.5)
        ax_t.plot(r["seconds"], r["val"], **style)
        ax_c.plot(np.array(r["chars"]) / 1e6, r["val"], label=f"{s}.py ({r['params']:.2f}M)",
                  **style)
    for ax in (ax_t, ax_c):
        ax.axhline(data["unigram"], color=figure.COLORS["baseline"], linestyle="--",
                   linewidth=1, label="unigram frequencies" if ax is ax_c else None)
    low = min(min(r["val"]) for r in runs.values())
    high = max(data["unigram"] + 0.3, max(r["val"][-1] for r in runs.values()) + 0.2)
    ax_t.set_ylim(low - 0.05, high)  # step 0's loss, ln V, lies above: cut off
    ax_t.set_xlim(left=0)
    ax_c.set_xlim(left=0)
    ax_t.set_ylabel("validation loss (nats per character)")
    ax_t.set_xlabel("wall-clock seconds (evaluations included)")
    ax_c.set_xlabel("characters seen in training (millions)")
    in_time = leaders({s: (r["seconds"], r["val"]) for s, r in runs.items()},
                      lambda x: f"{x:.0f} s")
    in_chars = leaders({s: (np.array(r["chars"]) / 1e6, r["val"]) for s, r in runs.items()},
                       lambda x: f"{x:.1f}M")
    ax_t.set_title(f"lowest at equal time:\n{in_time}", fontsize=9)
    ax_c.set_title(f"lowest at equal characters:\n{in_chars}", fontsize=9)
    ax_c.legend(fontsize=8, loc="upper right")
    final = sorted(runs, key=lambda s: runs[s]["val"][-1])
    corpus = "the stdlib source" if data["corpus"] == "default" else \
        os.path.basename(data["corpus"])
    threads = f"{data['threads']} thread" + ("s" if data["threads"] > 1 else "")
    fig.suptitle(f"The ladder on {corpus}, {data['seconds']:g} s each ({threads}):"
                 f" {final[0]} ends lowest ({runs[final[0]]['val'][-1]:.2f}),"
                 f" {final[-1]} highest ({runs[final[-1]]['val'][-1]:.2f})"
                 + (" [quick]" if data.get("quick") else ""), fontsize=11)
    fig.tight_layout()
    return fig


def main(argv=None):
    p = figure.parser(__doc__)
    p.add_argument("--seconds", type=figure.positive(float), default=None,
                   help="each script's training budget (default 300; --quick: 2)")
    p.add_argument("--evals", type=figure.positive(int), default=None,
                   help="evaluations per run besides step 0 (default 15; --quick: 3)")
    p.add_argument("--eval-steps", type=figure.positive(int), default=None,
                   help="batches of each split per evaluation (default 8; --quick: 2)")
    p.add_argument("--trial-steps", type=figure.positive(int), default=None,
                   help="steps of the run that times a step (default 50; --quick: 3)")
    p.add_argument("--data", default="", help="text file; empty: the scripts' default corpus")
    p.add_argument("--scripts", default=",".join(SCRIPTS),
                   help="comma-separated, from " + ", ".join(SCRIPTS))
    p.add_argument("--runs-dir", default="",
                   help="the runs' logs and checkpoints (default out/ladder, --quick:"
                        " out/ladder-quick)")
    args = p.parse_args(argv)
    args.scripts = args.scripts.split(",")
    unknown = [s for s in args.scripts if s not in SCRIPTS]
    if unknown:
        p.error(f"--scripts: unknown {', '.join(unknown)}; choose from {', '.join(SCRIPTS)}")
    if args.data and not os.path.isfile(args.data):
        p.error(f"--data {args.data}: no such file")
    args.threads = args.threads or 1  # the scripts' runs: one thread is the steadiest
    args.runs_dir = args.runs_dir or os.path.join("out", "ladder-quick" if args.quick else
                                                  "ladder")
    figure.run("ladder", args, measure, draw)


if __name__ == "__main__":
    main()
