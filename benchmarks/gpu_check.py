"""One GPU, at most ~10 minutes: the two figures gpt.py's GPU recipes promise.

1. Tiny Shakespeare, nanoGPT's GPU configuration (6 layers, 6 heads, 384 wide, block 256, batch
   64, dropout 0.2, lr 1e-3, 5000 steps, --compile) through gpt.py's own command line: its val
   loss (mean of 200 batches) and wall time. nanoGPT publishes val 1.4697 in about 3 minutes
   on one A100.
2. GPT-2 124M (12 layers, 12 heads, 768 wide, block 1024): training tokens/s on one GPU, bf16
   autocast, fused AdamW, torch.compile, for gpt.GPT beside nanoGPT's model (re-typed in
   gpt_shakespeare.py: no biases, vocabulary padded to 50304, as nanoGPT trains it) in the same
   run, on random tokens (the speed does not depend on them).

    python benchmarks/gpu_check.py                 # on a CUDA GPU
    python benchmarks/gpu_check.py --smoke         # a few tiny steps anywhere: does it run?
"""
import argparse
import os
import re
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt  # noqa: E402
from gpt_shakespeare import NanoGPT  # noqa: E402

SHAKESPEARE = ["--n-layer", 6, "--n-head", 6, "--n-embd", 384, "--block-size", 256,
               "--batch-size", 64, "--dropout", 0.2, "--lr", 1e-3, "--warmup-steps", 100,
               "--max-steps", 5000, "--eval-interval", 500, "--eval-steps", 200, "--compile",
               "--num-samples", 1, "--max-new-tokens", 300]
SMOKE = ["--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--block-size", 32, "--batch-size", 4,
         "--max-steps", 20, "--eval-interval", 10, "--eval-steps", 2, "--num-samples", 1,
         "--max-new-tokens", 30]


def shakespeare(args, out_dir):
    flags = SMOKE if args.smoke else SHAKESPEARE
    cmd = [sys.executable, os.path.join(ROOT, "gpt.py"), "--data", args.data, "--out-dir",
           out_dir, *map(str, flags)]
    print("$", " ".join(cmd[1:]), flush=True)
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.time() - t0
    print(r.stdout[-3000:], r.stderr[-3000:], flush=True)
    val = re.findall(r"val loss (\d+\.\d+)", r.stdout)
    print(f"RESULT shakespeare-gpu: exit {r.returncode}, val loss {val[-1] if val else '?'}"
          f" after {flags[flags.index('--max-steps') + 1]} steps, {seconds:.0f}s wall"
          f" (nanoGPT: 1.4697 in ~3 min on an A100)", flush=True)


def tokens_per_second(name, model, args, device):
    B, T = (2, 64) if args.smoke else (args.batch_size, 1024)
    cfg = gpt.Config(lr=6e-4, weight_decay=0.1)
    optimizer = gpt.make_optimizer(model, cfg)
    compiled = model if args.smoke else torch.compile(model)
    data = torch.randint(50257, (B, T + 1), device=device)

    def step():
        with gpt.autocast(device):
            _, loss = compiled(data[:, :-1], data[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):  # compiles, then settles
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.time()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.time() - t0
    n = sum(p.numel() for p in model.parameters())
    print(f"RESULT gpt2-124M {name}: {args.steps * B * T / seconds / 1e3:.1f}k tokens/s,"
          f" {seconds / args.steps * 1e3:.1f} ms/step, batch {B}x{T}, {n / 1e6:.1f}M parameters",
          flush=True)
    return args.steps * B * T / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(os.path.dirname(ROOT), "shared", "data",
                                                       "tinyshakespeare.txt"))
    parser.add_argument("--batch-size", type=int, default=16, help="GPT-2 124M micro-batch")
    parser.add_argument("--warmup", type=int, default=10, help="steps before timing")
    parser.add_argument("--steps", type=int, default=50, help="steps timed")
    parser.add_argument("--out-dir", default="out-gpu-check")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.warmup, args.steps = 1, 2
    device = gpt.pick_device("")
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    shakespeare(args, args.out_dir)
    shape = (64, 32, 2, 1) if args.smoke else (1024, 768, 12, 12)  # block, C, heads, layers
    torch.manual_seed(0)
    ours = tokens_per_second("gpt.py", gpt.GPT(50257, *shape).to(device), args, device)
    theirs = tokens_per_second("nanoGPT", NanoGPT(50304, *shape).to(device), args, device)
    print(f"RESULT gpt2-124M gpt.py / nanoGPT tokens/s: {ours / theirs:.2f}", flush=True)


if __name__ == "__main__":
    main()
