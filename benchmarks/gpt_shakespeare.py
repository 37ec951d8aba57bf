"""Tiny Shakespeare with nanoGPT's best-known small configurations: gpt.py's val loss, ms/step and
tokens/s, beside peers trained in the same run, so speed is a ratio too: nanogpt, the
reference's own model re-typed (NanoGPT below), and builtin, the same GPT assembled from torch's
built-ins (nn.TransformerEncoderLayer(norm_first) + causal mask, nn.LayerNorm).

    python benchmarks/gpt_shakespeare.py --models gpt nanogpt
    python benchmarks/gpt_shakespeare.py --models gpt builtin
    python benchmarks/gpt_shakespeare.py --config gpu --compile               # on a CUDA GPU

CPU config (nanoGPT's README, "shakespeare_char" on a MacBook): 4 layers, 4 heads, 128 wide,
block 64, batch 12, dropout 0, AdamW lr 1e-3 betas (0.9, 0.99), weight decay 0.1, 100 warmup
steps, cosine to 1e-4 at step 2000, clip 1.0. GPU config: 6 layers, 6 heads, 384 wide, block 256,
batch 64, dropout 0.2, 5000 steps. Data: first 90% train, last 10% val, characters.
The val loss is the mean over --eval-steps random batches (nanoGPT: eval_iters 200; its CPU note
uses 20); each reported figure says how many.
"""
import argparse
import functools
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import gpt  # noqa: E402

CONFIGS = {
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, dropout=0.0,
                lr=1e-3, weight_decay=0.1, warmup_steps=100, max_steps=2000, grad_clip=1.0),
    "gpu": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, dropout=0.2,
                lr=1e-3, weight_decay=0.1, warmup_steps=100, max_steps=5000, grad_clip=1.0),
}
REFERENCE = {"cpu": "val 1.886 after 2000 steps, ~32 ms/step, 23.7k tokens/s (2 CPU cores)",
             "gpu": "val ~1.47 after 5000 steps, ~3 minutes (one A100)"}


class BuiltinGPT(nn.Module):
    """The peer: gpt.GPT's architecture and init from torch's own layers."""

    def __init__(self, vocab_size, block_size, n_embd, n_head, n_layer, dropout=0.0):
        super().__init__()
        self.block_size = block_size
        self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            n_embd, n_head, 4 * n_embd, dropout, batch_first=True, norm_first=True,
            activation=functools.partial(F.gelu, approximate="tanh"))
        self.h = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight
        for name, p in self.named_parameters():
            if name.endswith(("out_proj.weight", "linear2.weight")):
                nn.init.normal_(p, std=0.02 / (2 * n_layer) ** 0.5)
            elif p.dim() == 2:
                nn.init.normal_(p, std=0.02)
            elif name.endswith("bias"):  # LayerNorm biases are zero already
                nn.init.zeros_(p)

    def forward(self, idx, targets=None):
        T = idx.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(T, device=idx.device)))
        logits = self.lm_head(self.ln_f(self.h(x, mask=mask, is_causal=True)))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


class NanoGPT(nn.Module):
    """The reference's own model, re-typed from nanoGPT's model.py (Karpathy, MIT licence) as
    its CPU command builds it: no biases (bias=False), LayerNorm by F.layer_norm, attention by
    F.scaled_dot_product_attention(is_causal=True), nn.GELU() (the erf form), GPT-2's init,
    tied head. Trained by the same loop, optimizer and schedule as gpt.py, which are nanoGPT's
    train.py's (AdamW groups, warmup, cosine to lr/10, clip 1.0), so the difference in ms/step
    is the model's."""

    def __init__(self, vocab_size, block_size, n_embd, n_head, n_layer, dropout=0.0):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd)
        linear = functools.partial(nn.Linear, bias=False)
        self.h = nn.ModuleList(nn.ModuleDict(dict(
            ln_1=nn.LayerNorm(n_embd, bias=False), c_attn=linear(n_embd, 3 * n_embd),
            c_proj=linear(n_embd, n_embd), ln_2=nn.LayerNorm(n_embd, bias=False),
            c_fc=linear(n_embd, 4 * n_embd), gelu=nn.GELU(), mlp_proj=linear(4 * n_embd, n_embd)))
            for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=False)
        self.lm_head = linear(n_embd, vocab_size)
        self.wte.weight = self.lm_head.weight
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / (2 * n_layer) ** 0.5 if name.endswith(("c_proj.weight",
                                                                      "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        drop = self.dropout if self.training else 0.0
        x = F.dropout(self.wte(idx) + self.wpe(torch.arange(T, device=idx.device)), drop)
        for b in self.h:
            q, k, v = b.c_attn(b.ln_1(x)).split(x.shape[2], dim=2)
            q, k, v = (z.view(B, T, self.n_head, -1).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
            x = x + F.dropout(b.c_proj(y.transpose(1, 2).contiguous().view(B, T, -1)), drop)
            x = x + F.dropout(b.mlp_proj(b.gelu(b.c_fc(b.ln_2(x)))), drop)
        logits = self.lm_head(self.ln_f(x))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


def run(name, args, data, vocab_size, device):
    settings = CONFIGS[args.config] | ({"max_steps": args.max_steps} if args.max_steps else {})
    # train() evaluates at step 0 and at the end; one batch there, the real figure comes after
    cfg = gpt.Config(**settings, eval_interval=settings["max_steps"], eval_steps=1,
                     kernels=args.kernels)
    torch.manual_seed(args.seed)
    shape = (vocab_size, cfg.block_size, cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.dropout)
    model = (gpt.GPT(*shape, fused=args.kernels == "fused") if name == "gpt"
             else {"builtin": BuiltinGPT, "nanogpt": NanoGPT}[name](*shape)).to(device)
    optimizer = gpt.make_optimizer(model, cfg)
    print(f"--- {name}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters,"
          f" {args.config} config, kernels {args.kernels if name == 'gpt' else 'built-in'},"
          f" compile {args.compile}, {torch.get_num_threads()} threads, on {device}", flush=True)
    t0 = time.time()
    gpt.train(torch.compile(model) if args.compile else model, optimizer, data, cfg)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.time() - t0
    cfg.eval_steps = args.eval_steps
    losses = gpt.estimate_loss(model, data, cfg, device)
    tokens = cfg.max_steps * cfg.batch_size * cfg.block_size
    print(f"{name}: val loss {losses['val']:.4f} (train {losses['train']:.4f}; mean of"
          f" {args.eval_steps} batches) after {cfg.max_steps} steps"
          f" | {seconds / cfg.max_steps * 1e3:.1f} ms/step | {tokens / seconds / 1e3:.1f}k tokens/s"
          f" | {seconds:.0f}s", flush=True)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(os.path.dirname(ROOT), "shared", "data",
                                                       "tinyshakespeare.txt"))
    parser.add_argument("--config", choices=CONFIGS, default="cpu")
    parser.add_argument("--models", nargs="+", choices=("gpt", "builtin", "nanogpt"),
                        default=["gpt"])
    parser.add_argument("--kernels", choices=("fused", "written"), default="fused")
    parser.add_argument("--compile", action="store_true", help="train through torch.compile")
    parser.add_argument("--max-steps", type=int, default=0, help="0: the config's")
    parser.add_argument("--eval-steps", type=int, default=200, help="batches in the val figure")
    parser.add_argument("--device", default="")
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args()
    device = gpt.pick_device(args.device)
    text = gpt.load_text(args.data)
    chars = "".join(sorted(set(text)))
    data = gpt.split(gpt.encode(text, chars), CONFIGS[args.config]["block_size"])
    print(f"reference (nanoGPT, {args.config} config): {REFERENCE[args.config]}")
    seconds = {name: run(name, args, data, len(chars), device) for name in args.models}
    for peer in seconds.keys() - {"gpt"} if "gpt" in seconds else ():
        print(f"gpt / {peer} time per step: {seconds['gpt'] / seconds[peer]:.2f}")


if __name__ == "__main__":
    main()
