"""Time mlp.py's training step with its hand-written backward pass against the same model with
autograd's (loss.backward()), in the same run, and print the ratio.

    python benchmarks/bench_mlp.py

Both variants start from the same weights and see the same batches; the steps are timed in
interleaved rounds (hand, autograd, hand, ...) so that a change in machine load hits both, and
the median over rounds is reported. Sizes are mlp.py's defaults (--block-size etc. override).
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mlp  # noqa: E402


def step_hand(model, optimizer, x, y, cfg):
    with torch.no_grad():
        _, loss = model(x, y)
    optimizer.zero_grad(set_to_none=True)
    model.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return loss


def step_autograd(model, optimizer, x, y, cfg):
    _, loss = model(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return loss


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per variant")
    parser.add_argument("--steps", type=int, default=10, help="training steps per round")
    parser.add_argument("--vocab-size", type=int, default=222, help="V (the stdlib corpus: 222)")
    for name in ("block_size", "n_embd", "n_hidden", "batch_size"):
        parser.add_argument("--" + name.replace("_", "-"), type=int,
                            default=getattr(mlp.Config, name))
    args = parser.parse_args()
    cfg = mlp.Config(block_size=args.block_size, n_embd=args.n_embd, n_hidden=args.n_hidden,
                     batch_size=args.batch_size)
    torch.manual_seed(0)
    data = torch.randint(args.vocab_size, (100_000,))
    models = {}
    for name, step in (("hand", step_hand), ("autograd", step_autograd)):
        torch.manual_seed(1)  # the same weights for both
        model = mlp.LanguageModel(args.vocab_size, cfg.n_embd, cfg.n_hidden, cfg.block_size)
        models[name] = (model, torch.optim.Adam(model.parameters(), lr=cfg.lr), step)
    batches = [mlp.get_batch(data, cfg.block_size, cfg.batch_size, "cpu")
               for _ in range(args.steps)]
    times = {name: [] for name in models}
    for r in range(args.rounds + 1):  # round 0 warms up and is not counted
        for name, (model, optimizer, step) in models.items():
            t0 = time.perf_counter()
            for x, y in batches:
                step(model, optimizer, x, y, cfg)
            if r:
                times[name].append((time.perf_counter() - t0) / args.steps)
    hand, auto = statistics.median(times["hand"]), statistics.median(times["autograd"])
    print(f"mlp.py training step, B={cfg.batch_size} T=N={cfg.block_size} C={cfg.n_embd}"
          f" H={cfg.n_hidden} V={args.vocab_size}, {torch.get_num_threads()} threads,"
          f" median of {args.rounds} rounds x {args.steps} steps")
    print(f"  hand-written backward: {hand * 1e3:7.2f} ms/step")
    print(f"  autograd backward:     {auto * 1e3:7.2f} ms/step")
    print(f"  ratio autograd / hand: {auto / hand:.2f}  (above 1: the hand-written one is faster)")


if __name__ == "__main__":
    main()
