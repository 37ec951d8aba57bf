"""
gpt.py - a language model on a decoder-only Transformer in GPT-2's layout, on characters or on
GPT-2's own tokens, able to load OpenAI's GPT-2 weights: Vaswani et al. (2017), "Attention Is All
You Need", arXiv:1706.03762; Radford et al. (2019), "Language Models are Unsupervised Multitask
Learners" (GPT-2: LayerNorm before each sublayer and after the last block, residual projections
initialised smaller). One block, x (B,T,C):

    x = x + attn.c_proj(softmax(q k^T / sqrt(hs) + causal mask) v),  q,k,v = attn.c_attn(ln_1(x))
    x = x + mlp.c_proj(gelu(mlp.c_fc(ln_2(x))))                     MLP width 4 C, GELU tanh form

`LayerNorm` is a twin of torch.nn.LayerNorm and `attention` of F.scaled_dot_product_attention
(is_causal=True), written from tensor operations; with --kernels fused (the default, faster on
CPUs too) the same modules call those torch kernels instead, and the tests prove both paths
equal. `GPT` keeps GPT-2's parameter names (transformer.wte, .wpe, .h.{i}.ln_1, .attn.c_attn,
..., lm_head), so GPT.from_pretrained maps OpenAI's weights in by name.

What changes from rnn.py: the model (attention over the last block_size tokens, with learned
positions, instead of a recurrent state), AdamW with weight decay on matrices only, bf16
autocast on CUDA, --compile, the sampler's cache (keys and values instead of the state),
GPT-2's tokens and weights, and training on many processes.

Run `python gpt.py` to train on the Python standard library's source, then sample. Add
`--data input.txt` to train on your own UTF-8 text, or `--sample-only --prompt "def "` to sample
from the checkpoint that training saved in out/ (--help lists every flag). GPT-2:
`--init-from gpt2 --sample-only --prompt "Hello"` samples from OpenAI's weights, `--init-from gpt2
--data input.txt` fine-tunes them, and `torchrun --standalone --nproc_per_node N gpt.py ...`
trains on N GPUs, each process its share of every batch of --batch-size x --grad-accum. A corpus
larger than memory: write_tokens("big.txt", "big.bin") once, then train on --data big.bin.

Shapes: B batch, T time, C embedding (n_embd), nh heads, hs head size C/nh, S positions attended
(cached + new), V vocabulary.
"""

import argparse
import contextlib
import dataclasses
import importlib
import json
import math
import os
import signal
import sys
import sysconfig
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

SCRIPT = "gpt"  # written into checkpoints, so that a sibling script refuses this one's

# ----------------------------------------------------------------------------- model

class LayerNorm(nn.Module):
    """torch.nn.LayerNorm over the last dimension, from tensor operations: same arguments,
    parameter names and initialisation, so that state_dicts move between the two."""

    fused = True  # torch's one kernel for the same (F.layer_norm); False: the lines below

    def __init__(self, normalized_shape, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))

    def forward(self, x):
        if self.fused:  # the same result, fewer passes over x
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
        var, mean = torch.var_mean(x, dim=-1, keepdim=True, unbiased=False)  # biased, as torch
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


def causal_mask(T, S, device):
    """(T,S) bool, True where query i, the (S-T+i)-th position, may look: keys 0..S-T+i."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(S - T)


def attention(q, k, v, dropout=0.0):
    """F.scaled_dot_product_attention(q, k, v, is_causal=True) written out, for q (...,T,hs)
    being the last T of the S positions in k, v (...,S,hs); with S > T the mask is aligned
    bottom-right, so that new queries see the cached keys."""
    T, S = q.shape[-2], k.shape[-2]
    att = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (...,T,S)
    att = att.masked_fill(~causal_mask(T, S, q.device), float("-inf"))  # no look ahead
    att = F.dropout(F.softmax(att, dim=-1), dropout)
    return att @ v  # (...,T,hs)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: nh heads of width hs = C/nh side by side."""

    fused = True  # F.scaled_dot_product_attention; False: attention() above, the same result

    def __init__(self, n_embd, n_head, dropout=0.0):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)  # q, k, v of all heads in one matmul
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x, kv=None):
        """x (B,T,C); kv: the keys and values of the positions before x, or None. Returns
        y (B,T,C) and the keys and values of all S positions, each (B,nh,S,hs)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # (B,T,C) each
        q, k, v = (z.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                   for z in (q, k, v))  # (B,nh,T,hs)
        if kv is not None:
            k, v = torch.cat((kv[0], k), dim=2), torch.cat((kv[1], v), dim=2)  # (B,nh,S,hs)
        dropout = self.dropout if self.training else 0.0
        if self.fused:  # the same in one kernel (flash attention where the device has it)
            mask = None if kv is None else causal_mask(T, k.shape[2], x.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                               is_causal=kv is None)  # (B,nh,T,hs)
        else:
            y = attention(q, k, v, dropout)  # (B,nh,T,hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B,T,C): the heads side by side again
        return self.resid_dropout(self.c_proj(y)), (k, v)


class MLP(nn.Module):

    def __init__(self, n_embd, dropout=0.0):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        h = F.gelu(self.c_fc(x), approximate="tanh")  # (B,T,4C): GPT-2's GELU
        return self.dropout(self.c_proj(h))  # (B,T,C)


class Block(nn.Module):
    """A pre-LayerNorm Transformer block: each sublayer reads a normalised copy of x and adds
    its output back, so the residual stream x itself is never normalised."""

    def __init__(self, n_embd, n_head, dropout=0.0):
        super().__init__()
        self.ln_1 = LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln_2 = LayerNorm(n_embd)
        self.mlp = MLP(n_embd, dropout)

    def forward(self, x, kv=None):
        a, kv = self.attn(self.ln_1(x), kv)
        x = x + a  # (B,T,C)
        x = x + self.mlp(self.ln_2(x))  # (B,T,C)
        return x, kv


GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")  # OpenAI's, on the HF hub


class GPT(nn.Module):
    """Token and position embeddings -> n_layer blocks -> LayerNorm -> a head tied to the
    token embedding: the logits of the next token."""

    def __init__(self, vocab_size, block_size, n_embd, n_head, n_layer, dropout=0.0, fused=True):
        super().__init__()
        self.block_size = block_size
        self.config = dict(vocab_size=vocab_size, block_size=block_size, n_embd=n_embd,
                           n_head=n_head, n_layer=n_layer)
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd),
            wpe=nn.Embedding(block_size, n_embd),
            drop=nn.Dropout(dropout),
            h=nn.ModuleList(Block(n_embd, n_head, dropout) for _ in range(n_layer)),
            ln_f=LayerNorm(n_embd)))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied: one matrix reads and writes
        for module in self.modules():  # GPT-2 init; LayerNorm keeps weight 1, bias 0
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():  # each block adds 2 terms to the residual
            if name.endswith("c_proj.weight"):  # stream: scaled so its variance stays put
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer))
        for module in self.modules():  # fused: torch's kernels; False: the written-out code
            if isinstance(module, (LayerNorm, CausalSelfAttention)):
                module.fused = fused

    def advance(self, idx, cache=None):
        """Read idx (B,T) after the positions whose keys and values are in `cache` (a list, one
        (k, v) a block; None: none): logits (B,T,V) and the cache including idx."""
        start = 0 if cache is None else cache[0][0].shape[2]
        if start + idx.shape[1] > self.block_size:
            raise ValueError(f"{start + idx.shape[1]} positions, more than block_size"
                             f" {self.block_size}; crop the context")
        pos = torch.arange(start, start + idx.shape[1], device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B,T,C)
        new_cache = []
        for i, block in enumerate(self.transformer.h):
            x, kv = block(x, None if cache is None else cache[i])  # (B,T,C)
            new_cache.append(kv)
        return self.lm_head(self.transformer.ln_f(x)), new_cache  # (B,T,V)

    def forward(self, idx, targets=None):
        logits, _ = self.advance(idx)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss

    @classmethod
    def from_pretrained(cls, name_or_dir, block_size=None, dropout=0.0, fused=True):
        """GPT-2 from a folder in the Hugging Face layout (config.json, model.safetensors), or
        one of GPT2_NAMES fetched from the hub. A block_size below GPT-2's keeps the first rows
        of the position table. Raises FileNotFoundError, OSError (the hub unreachable),
        ValueError (not a GPT-2, or other shapes) or ImportError, saying what was wrong."""
        folder = name_or_dir
        if not os.path.isdir(folder):
            if name_or_dir not in GPT2_NAMES:
                raise FileNotFoundError(f"no such folder, and not one of {', '.join(GPT2_NAMES)}")
            try:
                import huggingface_hub
            except ImportError:
                raise ImportError("this needs huggingface_hub: pip install huggingface_hub") \
                    from None
            repo = f"openai-community/{name_or_dir}"
            try:
                folder = huggingface_hub.snapshot_download(
                    repo, allow_patterns=["*.json", "*.safetensors"])
            except OSError as e:  # offline, or the hub unreachable
                raise OSError(f"cannot fetch {repo} from the Hugging Face hub"
                              f" ({type(e).__name__})") from None
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError("this needs safetensors: pip install safetensors") from None
        with open(os.path.join(folder, "config.json")) as f:
            hf = json.load(f)
        if hf.get("model_type") != "gpt2" or hf.get("activation_function") != "gelu_new":
            raise ValueError(f"not a GPT-2 (model_type {hf.get('model_type')})")
        block_size = block_size or hf["n_positions"]
        if block_size > hf["n_positions"]:
            raise ValueError(f"block_size {block_size} is more than its {hf['n_positions']}"
                             " positions")
        model = cls(hf["vocab_size"], block_size, hf["n_embd"], hf["n_head"], hf["n_layer"],
                    dropout, fused)
        weights = load_file(os.path.join(folder, "model.safetensors"))
        # the causal masks (attn.bias) are buffers, not weights; lm_head is wte (tied)
        theirs = {k.removeprefix("transformer."): w for k, w in weights.items()
                  if not k.endswith((".attn.bias", ".attn.masked_bias", "lm_head.weight"))}
        ours = {k.removeprefix("transformer."): p for k, p in model.state_dict().items()
                if k != "lm_head.weight"}
        if theirs.keys() != ours.keys():
            raise ValueError(f"missing {sorted(ours.keys() - theirs.keys())}, unexpected"
                             f" {sorted(theirs.keys() - ours.keys())}")
        with torch.no_grad():
            for name, w in theirs.items():
                if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
                    w = w.t()  # Conv1D keeps (in, out), nn.Linear (out, in)
                w = w[:block_size] if name == "wpe.weight" else w
                if w.shape != ours[name].shape:
                    raise ValueError(f"{name} is {tuple(w.shape)}, the model's"
                                     f" {tuple(ours[name].shape)}")
                ours[name].copy_(w)
        return model


# ----------------------------------------------------------------------------- data

SKIP = ("site-packages", "test", "tests", "idle_test")  # folders left out of the default corpus


def stdlib_source():
    """The default corpus, on every machine with Python: the standard library's .py files,
    sorted by path, tests and site-packages left out, joined with newlines."""
    paths = []
    for folder, subfolders, files in os.walk(sysconfig.get_paths()["stdlib"]):
        subfolders[:] = [d for d in subfolders if d not in SKIP]
        paths += [os.path.join(folder, f) for f in files if f.endswith(".py")]
    texts = []
    for path in sorted(paths, key=lambda p: p.split(os.sep)):  # folder by folder, not as strings
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
    return "\n".join(texts)


GPT2_VOCAB = 50257  # GPT-2's byte-level BPE: 256 bytes, 50000 merges, <|endoftext|>


def gpt2_tokens():
    """GPT-2's byte-level BPE, from tiktoken, which downloads its two files once into its
    cache (TIKTOKEN_CACHE_DIR, or the temporary folder)."""
    tiktoken = optional("tiktoken")
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:
        raise BadInput(f"tiktoken cannot load GPT-2's vocabulary ({type(e).__name__}); put its"
                       " files in TIKTOKEN_CACHE_DIR") from None


def load_text(path=""):
    """The UTF-8 text at `path`, or the default corpus if path is empty."""
    if not path:
        return stdlib_source()
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        raise BadInput(f"cannot read --data {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise BadInput(f"--data {path} is not UTF-8 text (bad byte at offset {e.start})") from None
    require(text, f"--data {path} is empty")
    return text


def encode(text, chars=None):
    """Text -> LongTensor of ids: each character's position in the sorted vocabulary `chars`;
    chars None: GPT-2's tokens."""
    if chars is None:
        return torch.tensor(gpt2_tokens().encode_ordinary(text), dtype=torch.long)
    unseen = sorted(set(text) - set(chars))
    require(not unseen, f"characters not in the vocabulary: {''.join(unseen)!r}")
    stoi = {c: i for i, c in enumerate(chars)}
    return torch.tensor([stoi[c] for c in text], dtype=torch.long)


def decode(ids, chars=None):
    return gpt2_tokens().decode(ids) if chars is None else "".join(chars[i] for i in ids)


def write_tokens(text_path, bin_path):
    """Write the GPT-2 tokens of a UTF-8 text of any size to bin_path, as uint16 (the ids are
    below 65536), for training to memory-map (--data FILE.bin). The text is encoded ~1 MB of
    whole lines at a time: ids can differ from one encode() only where blank lines span a cut."""
    bpe = gpt2_tokens()
    with open(text_path, encoding="utf-8", newline="") as text, open(bin_path + ".tmp", "wb") as f:
        while lines := text.readlines(1 << 20):
            np.array(bpe.encode_ordinary("".join(lines)), dtype=np.uint16).tofile(f)
    os.replace(bin_path + ".tmp", bin_path)


def read_tokens(path):
    """The ids in a write_tokens() file, memory-mapped: training reads only the windows it draws.
    Copy-on-write (mode "c"), as torch wants a writable array; the file is never written."""
    try:
        return torch.from_numpy(np.memmap(path, dtype=np.uint16, mode="c"))
    except (OSError, ValueError) as e:
        raise BadInput(f"cannot read --data {path}: {e}") from None


def split(data, block_size):
    """First 90% for training, last 10% for validation; each must hold one window + target."""
    n = int(0.9 * len(data))
    splits = {"train": data[:n], "val": data[n:]}
    for name, part in splits.items():
        require(len(part) >= block_size + 1, f"the {name} split has {len(part)} tokens, fewer"
                f" than block_size + 1 = {block_size + 1}; give a longer text or a smaller"
                " --block-size")
    return splits


def get_batch(data, block_size, batch_size, device, generator=None):
    """batch_size random windows: inputs x and targets y, x shifted by one token. (B,T)"""
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    chunk = data[ix[:, None] + torch.arange(block_size + 1)].long()  # (B,T+1)
    return chunk[:, :-1].to(device), chunk[:, 1:].to(device)


# ----------------------------------------------------------------------------- train

def autocast(device):
    """bf16 autocast on CUDA (matmuls in bf16, reductions in fp32); nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def estimate_loss(model, data, cfg, device):
    """Mean loss over cfg.eval_steps random batches of each split: the same batches at every
    evaluation and on every process (a generator of their own, seeded each time), so that
    figures compare across steps and runs, and training draws its batches undisturbed."""
    model.eval()
    out = {}
    batches = torch.Generator().manual_seed(cfg.seed)
    for name, part in data.items():
        with autocast(device):
            losses = [model(*get_batch(part, cfg.block_size, cfg.batch_size, device, batches))[1]
                      .item() for _ in range(cfg.eval_steps)]
        out[name] = sum(losses) / len(losses)
    model.train()
    return out


def make_optimizer(model, cfg):
    """AdamW, decaying only the matrices (embeddings, weights); biases and LayerNorm gains are
    left alone. On a GPU, fused: one kernel updates every parameter."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2), fused=params[0].is_cuda)


def get_lr(step, cfg):
    """Linear warmup over cfg.warmup_steps, then cosine decay to cfg.lr / 10 at cfg.max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    progress = (step - cfg.warmup_steps) / max(cfg.max_steps - cfg.warmup_steps, 1)
    return cfg.lr * (0.55 + 0.45 * math.cos(math.pi * min(progress, 1.0)))


def anyone(flag, device):
    """Whether any process has `flag` set, told to every process (under torchrun); alone, flag
    itself."""
    if not dist.is_initialized():
        return flag
    flag = torch.tensor(float(flag), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag)


def train(model, optimizer, data, cfg, step=0, save=None, batches=None, log=None):
    """Train from `step` to cfg.max_steps on data = {"train": ids, "val": ids}, each step on
    batch_size x grad_accum windows drawn from the generator `batches`. At step 0, every
    eval_interval steps and at the end: evaluate, print, log(the evaluation as a dict) and
    save(step), the last two if given (rank 0's). Ctrl-C saves and raises
    KeyboardInterrupt; a non-finite loss raises FloatingPointError before it can reach the
    weights. Under torchrun (model in DDP) each process takes its share of the micro-batches."""
    device = next(model.parameters()).device
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    accum = cfg.grad_accum // world  # micro-batches on this process each step
    save, log = save or (lambda step: None), log or (lambda record: None)
    unit = "chars" if cfg.tokens == "char" else "tokens"
    start = step_log = step
    t0 = t_log = time.time()
    losses = {}

    def report(step):  # evaluate, log, save
        nonlocal losses, t_log, step_log
        losses = estimate_loss(model, data, cfg, device)
        now = time.time()
        tokens = (step - step_log) * cfg.batch_size * cfg.grad_accum * cfg.block_size
        eta = (now - t0) / (step - start) * (cfg.max_steps - step) if step > start else 0
        if rank == 0:
            print(f"step {step:5d} | train loss {losses['train']:.4f} | val loss"
                  f" {losses['val']:.4f} | {tokens / (now - t_log) / 1e3:6.1f}k {unit}/s"
                  f" | {now - t0:4.0f}s elapsed, ETA {eta:4.0f}s", flush=True)
        log({"step": step, "train_loss": losses["train"], "val_loss": losses["val"],
             "seconds": now - t0, f"{unit}_per_s": tokens / (now - t_log)})
        save(step)
        t_log, step_log = time.time(), step

    stop = []  # Ctrl-C lands here; the loop ends at the next step boundary, weights consistent
    handler = signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    try:
        if step == 0:
            report(step)  # the untrained model, once: a resumed run does not report its start
        while step < cfg.max_steps:
            if anyone(bool(stop), device):  # one Ctrl-C stops all processes at one step
                save(step)
                if rank == 0:
                    print(f"interrupted at step {step}; saved", flush=True)
                raise KeyboardInterrupt
            for group in optimizer.param_groups:
                group["lr"] = get_lr(step, cfg)
            # the step's batch depends on the seed and grad_accum x batch_size alone: each
            # process takes its micro-batches of it, whatever the number of processes
            x, y = get_batch(data["train"], cfg.block_size, cfg.batch_size * cfg.grad_accum,
                             device, batches)
            x, y = (z.view(cfg.grad_accum, cfg.batch_size, -1)[rank * accum:(rank + 1) * accum]
                    for z in (x, y))  # (accum,B,T)
            optimizer.zero_grad(set_to_none=True)
            for i in range(accum):
                # DDP averages the gradients over the processes after the last micro-step only
                last = i == accum - 1 or world == 1
                with contextlib.nullcontext() if last else model.no_sync():
                    with autocast(device):
                        _, loss = model(x[i], y[i])
                    (loss / accum).backward()  # the mean over micro-batches: one big batch's
            # the gradient's norm, clipped to grad_clip (0: measured only): a NaN or inf in a
            # loss makes it non-finite on every process, so this one check stops them together
            norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
            if not torch.isfinite(norm):
                raise FloatingPointError(f"loss or gradient not finite at step {step}; stopped,"
                                         " the last good checkpoint is kept")
            optimizer.step()
            step += 1
            if step % cfg.eval_interval == 0 or step == cfg.max_steps:
                report(step)
    finally:
        signal.signal(signal.SIGINT, handler)
    return losses


# ----------------------------------------------------------------------------- sample

@torch.no_grad()
def sample(model, idx, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0, use_cache=True):
    """Continue each row of idx (B,T) by max_new_tokens tokens, reading the last block_size.
    top_k, top_p: draw only among the k likeliest tokens, or the likeliest whose probabilities
    add up to p (nucleus sampling, Holtzman et al. 2019, arXiv:1904.09751). With the cache each
    new token costs one position; once the context is full the window slides, every position in
    it changes (learned positions), and the cache is rebuilt: exactly what no cache gives."""
    model.eval()
    logits, cache = model.advance(idx[:, -model.block_size:])
    for _ in range(max_new_tokens):
        logits = logits[:, -1, :] / temperature  # (B,V)
        if top_k:
            kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, [-1]]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = F.softmax(logits, dim=-1)  # (B,V)
        if top_p < 1:  # keep a token while the likelier ones add up to less than top_p
            p, order = probs.sort(dim=-1, descending=True)
            probs = probs.scatter(-1, order, p.masked_fill(p.cumsum(-1) - p >= top_p, 0.0))
        idx_next = torch.multinomial(probs, num_samples=1)  # (B,1)
        idx = torch.cat((idx, idx_next), dim=1)
        if use_cache and cache[0][0].shape[2] < model.block_size:
            logits, cache = model.advance(idx_next, cache)
        else:
            logits, cache = model.advance(idx[:, -model.block_size:])
    return idx


# ----------------------------------------------------------------------------- config

class BadInput(ValueError):
    """Input we refuse: main() prints it as one line and exits with status 2."""


def require(ok, message):
    """Refuse the input, with `message`, unless ok."""
    if not ok:
        raise BadInput(message)


def flag(name):
    """The command-line flag of a config field: block_size -> --block-size."""
    return "--" + name.replace("_", "-")


def optional(module, package=None):
    """import module, or refuse in one line that names the install command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = package or module
        raise BadInput(f"this needs {package}: pip install {package}") from None


def arg(default, help, must_be=None):
    """A config field: its default, its --help text, and "positive" or "non-negative" if so."""
    return dataclasses.field(default=default, metadata={"help": help, "must_be": must_be})


@dataclasses.dataclass
class Config:
    # data
    data: str = arg("", "UTF-8 text, or FILE.bin of write_tokens(); empty: the stdlib's source")
    tokens: str = arg("char", "char: the text's characters; gpt2: GPT-2's BPE (with tiktoken)")
    # model
    init_from: str = arg("", "start from GPT-2's weights: gpt2, gpt2-medium, -large, -xl, or a"
                         " folder with config.json and model.safetensors")
    block_size: int = arg(128, "tokens of context: how far attention reaches", "positive")
    n_embd: int = arg(128, "width of the residual stream", "positive")
    n_head: int = arg(4, "attention heads; each is n_embd / n_head wide", "positive")
    n_layer: int = arg(4, "Transformer blocks stacked", "positive")
    dropout: float = arg(0.0, "dropout in training (0: off; helps on small texts)", "non-negative")
    kernels: str = arg("fused", "fused: torch's kernels, faster; written: this file's, same result")
    # optimization
    batch_size: int = arg(16, "sequences per micro-batch", "positive")
    grad_accum: int = arg(1, "micro-batches a step, shared among torchrun's processes", "positive")
    lr: float = arg(3e-3, "AdamW peak learning rate, decayed along a cosine to lr/10", "positive")
    weight_decay: float = arg(0.1, "AdamW weight decay, on matrices only", "non-negative")
    beta2: float = arg(0.99, "AdamW's beta2: below 0.999 for small runs; GPT-2: 0.95", "positive")
    warmup_steps: int = arg(100, "steps of linear warmup to lr", "non-negative")
    grad_clip: float = arg(1.0, "clip the gradient norm to this (0: off)", "non-negative")
    max_steps: int = arg(2500, "optimizer steps in all", "positive")
    eval_interval: int = arg(250, "steps between evaluations and checkpoints", "positive")
    eval_steps: int = arg(20, "batches averaged per evaluation", "positive")
    # system
    device: str = arg("", "cpu, cuda, mps, ...; empty: the best one available")
    compile: bool = arg(False, "train through torch.compile (its first step: ~1 min on a CPU)")
    seed: int = arg(1337, "seed for weights, batches and sampling")
    out_dir: str = arg("out", "where the checkpoint <script>.pt goes")
    resume: bool = arg(False, "continue training from the checkpoint in --out-dir")
    sample_only: bool = arg(False, "sample from the checkpoint in --out-dir without training")
    # sampling
    prompt: str = arg("\n", "text the samples start from")
    num_samples: int = arg(2, "samples to print", "non-negative")
    max_new_tokens: int = arg(500, "tokens per sample", "non-negative")
    temperature: float = arg(0.8, "below 1: safer, above 1: wilder", "positive")
    top_k: int = arg(0, "sample only among the k likeliest tokens (0: all)", "non-negative")
    top_p: float = arg(1.0, "sample among the likeliest tokens that sum to p (1: all)", "positive")

    def __post_init__(self):  # refuse impossible values before any work is done
        for f in dataclasses.fields(self):
            value, rule = getattr(self, f.name), f.metadata["must_be"]
            if rule:
                ok = value > 0 if rule == "positive" else value >= 0
                require(ok, f"{flag(f.name)} must be {rule}, got {value}")
        require(self.n_embd % self.n_head == 0,
                f"--n-embd {self.n_embd} must be divisible by --n-head {self.n_head}")
        require(self.dropout < 1, f"--dropout must be below 1, got {self.dropout}")
        require(self.beta2 < 1, f"--beta2 must be below 1, got {self.beta2}")
        require(self.kernels in ("fused", "written"),
                f"--kernels must be fused or written, got {self.kernels!r}")
        require(self.tokens in ("char", "gpt2"), f"--tokens must be char or gpt2, got"
                f" {self.tokens!r}")
        require(self.top_p <= 1, f"--top-p must be at most 1, got {self.top_p}")


MODEL_ARGS = ("block_size", "n_embd", "n_head", "n_layer", "tokens")  # what a checkpoint fixes


# ----------------------------------------------------------------------------- main

def pick_device(name):
    """The device `name`, refused unless this machine has it; empty: the best one available,
    cuda, then mps, then cpu."""
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not name:
        name = "cuda" if available["cuda"] else "mps" if available["mps"] else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BadInput(f"unknown --device {name!r}") from None
    # kinds other than cuda and mps (xpu, ...) are left for torch to refuse
    require(available.get(device.type, True), f"--device {name} is not available here")
    return device


def rng_states(device, batches=None):
    """Every random generator the run draws from: the CPU's (weights, batches, sampling on a
    CPU), `batches` where batches have a generator of their own, and the device's (dropout and
    sampling on a GPU), so that --resume goes on with the same draws. Under torchrun every
    process seeds the same, so rank 0's states stand for all."""
    states = {"cpu": torch.get_rng_state()}
    if batches is not None:
        states["batches"] = batches.get_state()
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    if device.type == "mps":
        states["mps"] = torch.mps.get_rng_state(device)
    return states


def set_rng_states(states, device, batches=None):
    """Put back what rng_states() saved (a GPU's state saved on another kind: left as seeded)."""
    torch.set_rng_state(states["cpu"])
    if batches is not None:
        batches.set_state(states["batches"])
    if device.type == "cuda" and "cuda" in states:
        cuda = states["cuda"]  # earlier versions saved a list, one state per GPU
        torch.cuda.set_rng_state(cuda[device.index or 0] if isinstance(cuda, list) else cuda,
                                 device)
    if device.type == "mps" and "mps" in states:
        torch.mps.set_rng_state(states["mps"], device)


def adopt(cfg, fixed, source, given, names=MODEL_ARGS):
    """Take the values of `names` from `fixed` (a checkpoint's config, a pretrained model's)
    into cfg, refusing a flag in `given` (the command line's, even at its default) that asks
    for another; a name `fixed` lacks (a flag newer than it) keeps its default."""
    for name in names:
        value = fixed.get(name, getattr(Config, name))
        require(name not in given or getattr(cfg, name) == value,
                f"{flag(name)} {getattr(cfg, name)} differs from {source}'s {value}")
        setattr(cfg, name, value)


def read_checkpoint(path):
    """The checkpoint at `path`, refused unless it is one of this script's."""
    require(os.path.exists(path), f"no checkpoint at {path}; train one first"
            " (or point --out-dir at it)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BadInput(f"{path} is not a readable checkpoint ({type(e).__name__})") from None
    who = ckpt.get("script", "?") if isinstance(ckpt, dict) else "?"
    require(who == SCRIPT, f"{path} is a checkpoint of {who}.py, not of {SCRIPT}.py")
    return ckpt


def load_checkpoint(path, cfg, given):
    """read_checkpoint(path), refused if an earlier version wrote it; what it fixes
    (MODEL_ARGS) goes into cfg, and a flag in `given` that asks for another value is refused."""
    ckpt = read_checkpoint(path)
    require(isinstance(ckpt.get("rng"), dict), f"{path} was written by an earlier {SCRIPT}.py"
            " (its random state is one tensor); train anew")
    adopt(cfg, ckpt["config"], "the checkpoint", given)
    return ckpt


def save_checkpoint(path, ckpt):
    """Write atomically: a crash mid-write leaves the previous checkpoint whole."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save(ckpt, path + ".tmp")
    os.replace(path + ".tmp", path)


def open_metrics(path, resume):
    """The metrics file at `path`, beside the checkpoint: returns a function that appends one
    evaluation to it, a dict (step, the losses, seconds since this process began, the script's
    own metrics), as a line of JSON, to plot or compare runs by. A run from scratch starts the
    file anew and --resume appends to it, so that the file describes the run the checkpoint
    holds; --sample-only opens none."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if not resume:
        open(path, "w").close()

    def append(record):
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")

    return append


def parse_args(argv=None):
    """The command line -> (cfg, given): the Config, and the names of the flags on the command
    line, which a checkpoint must agree with even where they equal the default."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(Config):
        if f.type is bool:
            parser.add_argument(flag(f.name), action="store_true", default=argparse.SUPPRESS,
                                help=f.metadata["help"])
        else:
            parser.add_argument(flag(f.name), type=f.type, default=argparse.SUPPRESS,
                                help=f"{f.metadata['help']} (default {f.default!r})")
    given = vars(parser.parse_args(argv))  # the flags on the command line, no others
    return Config(**given), frozenset(given)


def main(argv=None):
    try:
        run(*parse_args(argv))
    except BadInput as e:
        print(f"{SCRIPT}.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    except FloatingPointError as e:
        print(f"{SCRIPT}.py: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        if dist.is_initialized():  # torchrun's process group, left on every way out
            dist.destroy_process_group()


def run(cfg, given=frozenset()):
    """Train as cfg says (from scratch, from GPT-2's weights, or --resume from the checkpoint),
    or load GPT-2's weights or the checkpoint (--sample-only); then sample, on rank 0.
    `given`: the flags on the command line."""
    torch.manual_seed(cfg.seed)  # the same on every process: the same weights and draws
    device = pick_device(cfg.device)
    if "RANK" in os.environ:  # under torchrun: one GPU per local rank; nccl on CUDA, else gloo
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    require(cfg.grad_accum % world == 0, f"--grad-accum {cfg.grad_accum} must be a multiple of"
            f" the {world} processes")
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls
    if cfg.init_from or cfg.data.endswith(".bin"):  # GPT-2's weights or token file: its tokens
        require(cfg.tokens == "gpt2" or "tokens" not in given,
                "--init-from and a .bin --data read GPT-2's tokens, not --tokens char")
        cfg.tokens = "gpt2"
        given = given | {"tokens"}  # so that a checkpoint of other tokens is refused
    require(not (cfg.init_from and cfg.resume), "--init-from starts from GPT-2's weights,"
            " --resume from the checkpoint: give one of them")
    # where the weights come from: GPT-2's (--init-from), the checkpoint (--resume or
    # --sample-only without --init-from), or a fresh initialisation
    path = os.path.join(cfg.out_dir, f"{SCRIPT}.pt")
    from_checkpoint = not cfg.init_from and (cfg.resume or cfg.sample_only)
    ckpt = load_checkpoint(path, cfg, given) if from_checkpoint else None
    if cfg.sample_only:  # the checkpoint's vocabulary, or GPT-2's tokens (None)
        trained_on = ckpt["config"]["data"] if ckpt else None
        require(not cfg.data or cfg.data == trained_on, f"--data {cfg.data} is not the text"
                f" {cfg.init_from or path} was trained on; --sample-only needs no --data")
        chars, data = ckpt["vocab"] if ckpt else None, None
    elif cfg.data.endswith(".bin"):
        chars, data = None, split(read_tokens(cfg.data), cfg.block_size)
    else:
        text = load_text(cfg.data)
        chars = "".join(sorted(set(text))) if cfg.tokens == "char" else None  # None: GPT-2's
        if ckpt:
            trained_on = ckpt["config"]["data"] or "the default"
            require(ckpt["vocab"] == chars, "this text's vocabulary differs from the checkpoint's;"
                    f" resume on the text it was trained on ({trained_on})")
        data = split(encode(text, chars), cfg.block_size)
    try:
        prompt = encode(cfg.prompt, chars)
    except BadInput as e:
        raise BadInput(f"--prompt has {e}") from None
    require(len(prompt), "--prompt is empty; give at least one character to start from")
    fused = cfg.kernels == "fused"
    if cfg.init_from:
        block_size = cfg.block_size if "block_size" in given else None  # None: GPT-2's own
        try:
            model = GPT.from_pretrained(cfg.init_from, block_size, cfg.dropout, fused)
        except (ImportError, OSError, KeyError, ValueError) as e:
            raise BadInput(f"--init-from {cfg.init_from}: {e}") from None
        adopt(cfg, {**model.config, "tokens": "gpt2"}, cfg.init_from, given)
        require(model.config["vocab_size"] >= GPT2_VOCAB, f"--init-from {cfg.init_from} has"
                f" {model.config['vocab_size']} tokens, fewer than GPT-2's {GPT2_VOCAB}")
    else:
        model = GPT(GPT2_VOCAB if chars is None else len(chars), cfg.block_size, cfg.n_embd,
                    cfg.n_head, cfg.n_layer, cfg.dropout, fused)
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    batches = torch.Generator().manual_seed(cfg.seed)  # apart from dropout: batches by seed alone
    step = 0
    if ckpt:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step = ckpt["step"]
        if not cfg.sample_only:  # --resume goes on with the same draws; sampling draws by --seed
            set_rng_states(ckpt["rng"], device, batches)
    n_params = sum(p.numel() for p in model.parameters())
    if rank == 0:
        processes = f" x {world} processes" if world > 1 else ""
        print(f"{SCRIPT}.py: {n_params / 1e6:.2f}M parameters, vocabulary"
              f" {model.config['vocab_size']}, on {device}{processes}")
        if not cfg.sample_only:
            print(f"data: {len(data['train']):,} train / {len(data['val']):,} val tokens")
    if not cfg.sample_only:
        def save(step):  # the plain module's weights, never torch.compile's or DDP's wrapper's
            save_checkpoint(path, {"script": SCRIPT, "config": dataclasses.asdict(cfg),
                                   "vocab": chars, "step": step, "model": model.state_dict(),
                                   "optimizer": optimizer.state_dict(),
                                   "rng": rng_states(device, batches)})

        log = open_metrics(os.path.join(cfg.out_dir, f"{SCRIPT}.jsonl"), cfg.resume) \
            if rank == 0 else None
        trained = torch.compile(model) if cfg.compile else model
        if world > 1:
            trained = DistributedDataParallel(
                trained, device_ids=[device.index] if device.type == "cuda" else None)
        train(trained, optimizer, data, cfg, step, save if rank == 0 else None, batches, log)
    for _ in range(cfg.num_samples if rank == 0 else 0):
        out = sample(model, prompt[None].to(device), cfg.max_new_tokens, cfg.temperature,
                     cfg.top_k, cfg.top_p)
        print("-" * 80)
        print(decode(out[0].tolist(), chars))


if __name__ == "__main__":
    main()
