"""Train-step time of transformer.py's Transformer against torch.nn.Transformer with the same
weights, in the same run, as a ratio (goal: <= 1.2 on CPU).

    python benchmarks/bench_transformer.py [--threads 1]

A step is what training does: forward with the masks a translation batch needs (padding on
source and target, causal target), a loss, backward, an Adam step. The two models take turns,
step by step, so that a change in the machine's load hits both; the medians are compared.
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import transformer  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--nhead", type=int, default=8)
    p.add_argument("--layers", type=int, default=3, help="encoder layers = decoder layers")
    p.add_argument("--d-ff", type=int, default=512)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--src-len", type=int, default=24)
    p.add_argument("--tgt-len", type=int, default=24)
    p.add_argument("--norm-first", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per model first")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    kw = dict(d_model=a.d_model, nhead=a.nhead, num_encoder_layers=a.layers,
              num_decoder_layers=a.layers, dim_feedforward=a.d_ff, dropout=a.dropout,
              batch_first=True, norm_first=a.norm_first)
    ref = nn.Transformer(**kw)
    ours = transformer.Transformer(**kw)
    ours.load_state_dict(ref.state_dict(), strict=True)
    B, S, T = a.batch_size, a.src_len, a.tgt_len
    src, tgt = torch.randn(B, S, a.d_model), torch.randn(B, T, a.d_model)
    src_len = torch.randint(S // 2, S + 1, (B,))
    tgt_len = torch.randint(T // 2, T + 1, (B,))
    masks = dict(src_key_padding_mask=torch.arange(S) >= src_len[:, None],
                 tgt_key_padding_mask=torch.arange(T) >= tgt_len[:, None],
                 memory_key_padding_mask=torch.arange(S) >= src_len[:, None],
                 tgt_mask=torch.ones(T, T, dtype=torch.bool).triu(1), tgt_is_causal=True)
    models = {"nn.Transformer": ref, "transformer.Transformer": ours}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-4) for name, m in models.items()}
    times = {name: [] for name in models}
    for i in range(a.warmup + a.steps):
        for name, model in models.items():
            t0 = time.perf_counter()
            loss = model(src, tgt, **masks).square().mean()
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            if i >= a.warmup:
                times[name].append(time.perf_counter() - t0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; d_model {a.d_model},"
          f" {a.nhead} heads, {a.layers}+{a.layers} layers, FFN {a.d_ff}, dropout {a.dropout},"
          f" norm_first {a.norm_first}; batch {B} x {S} source / {T} target tokens;"
          f" median of {a.steps} steps")
    base = statistics.median(times["nn.Transformer"])
    for name, t in times.items():
        m = statistics.median(t)
        print(f"| {name:24s} | {1e3 * m:7.1f} ms/step | {m / base:5.2f}x |")


if __name__ == "__main__":
    main()
