"""Train-step time of rnn.py's RNN, lstm.py's LSTM and gru.py's GRU against torch.nn's, same run.

One step = forward + backward of a sum over the output and final state (B=32, T=128, input 64,
hidden 256 by default: the language models' setting), timed alternately for ours and the
built-in, median of --repeats. Prints the ratio ours / built-in (goal: at most 1.5 on CPU).
Timing-sensitive: run it alone on the machine.

    python benchmarks/bench_recurrent.py [--threads 1]
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gru  # noqa: E402
import lstm  # noqa: E402
import rnn  # noqa: E402

LAYERS = [("RNN", rnn.RNN, nn.RNN), ("LSTM", lstm.LSTM, nn.LSTM), ("GRU", gru.GRU, nn.GRU)]


def train_step(layer, x):
    output, state = layer(x)
    loss = output.sum() + sum(s.sum() for s in (state if isinstance(state, tuple) else (state,)))
    layer.zero_grad(set_to_none=True)
    loss.backward()


def seconds(layer, x):
    t0 = time.perf_counter()
    train_step(layer, x)
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--time", type=int, default=128)
    p.add_argument("--input", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--only", default="", help="comma-separated subset of RNN,LSTM,GRU")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.time, args.input)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; B={args.batch}"
          f" T={args.time} input={args.input} hidden={args.hidden} layers={args.layers};"
          f" forward+backward, median of {args.repeats} after {args.warmup} warm-up")
    print(f"{'layer':6s} | {'ours ms':>8s} | {'torch ms':>8s} | ratio")
    for name, ours_cls, ref_cls in LAYERS:
        if args.only and name not in args.only.split(","):
            continue
        ours = ours_cls(args.input, args.hidden, args.layers, batch_first=True)
        ref = ref_cls(args.input, args.hidden, args.layers, batch_first=True)
        times = {"ours": [], "torch": []}
        for i in range(args.warmup + args.repeats):
            for who, layer in (("ours", ours), ("torch", ref)):
                t = seconds(layer, x)
                if i >= args.warmup:
                    times[who].append(t)
        a, b = (statistics.median(times[w]) * 1e3 for w in ("ours", "torch"))
        print(f"{name:6s} | {a:8.1f} | {b:8.1f} | {a / b:5.2f}x", flush=True)


if __name__ == "__main__":
    main()
