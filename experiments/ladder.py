"""The ladder's comparison table: every character-level script that exists (mlp, rnn, lstm, gru,
gpt) trained on one corpus through its own command line, compared at equal steps and at equal
wall time.

1. Equal steps: each script runs --steps optimizer steps (a complete cosine schedule).
2. Equal time: each script runs again with max_steps set from its seconds per step in 1, so that
   it trains for about --seconds; the table shows the seconds it really took.

Sequence models (rnn, lstm, gru, gpt) all get --block-size 128 --batch-size 32, rnn.py's
defaults, so that a step sees the same characters; mlp.py keeps its own (its block size is its
context length N). Everything else is each script's default. The scripts print their parameter
count and the shared log line `step N | train loss X | val loss Y | ... | Ns elapsed, ...`,
which is all this reads. Timing-sensitive: run it alone on the machine:

    python benchmarks/ladder.py --steps 400 --seconds 150
"""
import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("mlp", "rnn", "lstm", "gru", "gpt")  # bottom to top of the ladder
SEQUENCE = ["--block-size", "128", "--batch-size", "32"]
LOG = re.compile(r"^step +(\d+) \| train loss ([\d.]+) \| val loss ([\d.]+) \|.*\| +(\d+)s elapsed")
PARAMS = re.compile(r"^\w+\.py: ([\d.]+)M parameters")


def train(script, steps, out_dir, args):
    """Run `python <script>.py` for `steps` steps; returns its log, parsed, and its stdout."""
    cmd = [sys.executable, os.path.join(ROOT, f"{script}.py"), "--max-steps", str(steps),
           "--eval-interval", str(max(1, steps // args.evals)), "--eval-steps",
           str(args.eval_steps), "--out-dir", out_dir,
           "--num-samples", "1", "--max-new-tokens", str(args.sample_chars), "--prompt", "def "]
    cmd += SEQUENCE if script != "mlp" else []
    cmd += ["--data", args.data] if args.data else []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)} if args.threads else None
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.time() - t0
    with open(os.path.join(out_dir, f"{script}.log"), "w") as f:
        f.write(" ".join(cmd) + "\n" + r.stdout + r.stderr)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    points = [tuple(float(g) for g in m.groups()) for m in map(LOG.match, r.stdout.splitlines())
              if m]
    params = next(float(m.group(1)) for m in map(PARAMS.match, r.stdout.splitlines()) if m)
    step, train_loss, val_loss, elapsed = points[-1]
    print(f"  {script:5s} {int(step):6d} steps  val {val_loss:.4f}  {elapsed:5.0f}s training"
          f" ({wall:.0f}s with start-up and sampling)", flush=True)
    return dict(params=params, step=int(step), train=train_loss, val=val_loss, elapsed=elapsed,
                points=points)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=400, help="steps for the equal-steps column")
    p.add_argument("--seconds", type=float, default=150, help="budget for the equal-time column")
    p.add_argument("--evals", type=int, default=4, help="evaluations per run (besides step 0)")
    p.add_argument("--eval-steps", type=int, default=20, help="batches per evaluation")
    p.add_argument("--data", default="", help="text file; empty: the scripts' default corpus")
    p.add_argument("--scripts", default=",".join(SCRIPTS), help="which scripts, if they exist")
    p.add_argument("--sample-chars", type=int, default=300, help="characters sampled per run")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per run (0: torch's"
                   " default); one is steadiest on a shared machine")
    p.add_argument("--out-dir", default=os.path.join("out", "ladder"))
    args = p.parse_args()
    scripts = [s for s in args.scripts.split(",") if os.path.exists(os.path.join(ROOT, f"{s}.py"))]
    print(f"ladder: {', '.join(scripts)} on {args.data or 'the default corpus'};"
          f" {args.steps} steps, then about {args.seconds:.0f}s each;"
          f" {args.threads or 'default'} thread(s)", flush=True)
    steps, timed = {}, {}
    print("equal steps:")
    for s in scripts:
        os.makedirs(os.path.join(args.out_dir, "steps"), exist_ok=True)
        steps[s] = train(s, args.steps, os.path.join(args.out_dir, "steps"), args)
    print("equal time:")
    for s in scripts:
        per_step = steps[s]["elapsed"] / steps[s]["step"]
        os.makedirs(os.path.join(args.out_dir, "time"), exist_ok=True)
        timed[s] = train(s, max(1, round(args.seconds / per_step)),
                         os.path.join(args.out_dir, "time"), args)
    lines = [f"| script | parameters | val loss at {args.steps} steps | seconds for them"
             f" | steps in ~{args.seconds:.0f}s | seconds taken | val loss at equal time |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in scripts:
        a, b = steps[s], timed[s]
        lines.append(f"| {s}.py | {a['params']:.2f}M | {a['val']:.4f} | {a['elapsed']:.0f}"
                     f" | {b['step']} | {b['elapsed']:.0f} | {b['val']:.4f} |")
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(args.out_dir, "table.md"), "w") as f:
        f.write(" ".join(sys.argv) + "\n\n" + table + "\n")


if __name__ == "__main__":
    main()
