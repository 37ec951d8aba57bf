"""
mlp.py - a character-level language model on a multilayer perceptron, backpropagation by hand.

Bengio, Ducharme, Vincent & Jauvin (2003), "A Neural Probabilistic Language Model", JMLR 3,
at the level of characters: the previous N = block_size characters are looked up in an embedding
table, concatenated, passed through one tanh hidden layer, and a linear layer gives the logits of
the next character:

    x = [C[c_{t-N+1}], ..., C[c_t]]     h = tanh(x W_1^T + b_1)     logits = h W_2^T + b_2

`Linear` is a drop-in twin of torch.nn.Linear (same arguments, shapes, parameter names and
initialisation). Unlike every other file of the ladder, the gradients are not left to autograd:
`LanguageModel.backward()` writes them out one local derivative at a time, and train() uses it.

It is the rung below rnn.py: a fixed window of N characters instead of a state that carries the
whole past. The data, training loop, sampler, flags and checkpoint are rnn.py's; what differs
besides the model is that a window is 2N - 1 characters long, so that each of its N targets is
predicted from a full N characters of context, the way the model meets running text. Its val
loss is therefore the per-character loss on running text, comparable with rnn.py's (where the
first characters of a window see a shorter past, if anything to the RNN's disadvantage).
A prompt shorter than N is padded on the left with newlines, as if blank lines came before it.

Run:
    python mlp.py                                  # train on the Python stdlib source, then sample
    python mlp.py --data input.txt                 # train on your own UTF-8 text
    python mlp.py --sample-only --prompt "def "    # sample from out/mlp.pt

Shapes: B batch, T targets per window, N context (block_size), C embedding, H hidden,
V vocabulary.
"""

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import sysconfig
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SCRIPT = "mlp"  # written into checkpoints, so that a sibling script refuses this one's

# ----------------------------------------------------------------------------- model

def add_grad(param, grad):
    """param.grad += grad, as autograd does: a parameter used twice gets both gradients."""
    param.grad = grad if param.grad is None else param.grad + grad


class Linear(nn.Module):
    """torch.nn.Linear, y = x W^T + b, with its backward pass written out: same arguments,
    shapes, parameter names and initialisation, so that state_dicts move between the two."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        # torch's init, U(-1/sqrt(in), 1/sqrt(in)) for both, drawn by the same calls, so that
        # the same seed gives the same weights to the last bit
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(in_features)
        b = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound)) if bias else None
        self.register_parameter("bias", b)  # None without bias, as nn.Linear has it

    def forward(self, x):
        y = x @ self.weight.t()  # (...,out)
        return y if self.bias is None else y + self.bias

    def backward(self, x, dy):
        """Given the input x and dL/dy: add dL/dW and dL/db to .grad, return dL/dx."""
        x2, dy2 = x.reshape(-1, self.in_features), dy.reshape(-1, self.out_features)
        # y_ij = sum_k x_ik W_jk + b_j, summed over every row i of the batch:
        add_grad(self.weight, dy2.t() @ x2)  # dL/dW_jk = sum_i dy_ij x_ik
        if self.bias is not None:
            add_grad(self.bias, dy2.sum(0))  # dL/db_j = sum_i dy_ij
        return dy @ self.weight  # dL/dx_ik = sum_j dy_ij W_jk


class LanguageModel(nn.Module):
    """Bengio et al.'s MLP: N embeddings, concatenated -> tanh layer -> linear head."""

    def __init__(self, vocab_size, n_embd, n_hidden, block_size):
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Parameter(torch.randn(vocab_size, n_embd))  # as nn.Embedding: N(0, 1)
        self.hidden = Linear(block_size * n_embd, n_hidden)
        self.lm_head = Linear(n_hidden, vocab_size)
        self.saved = None  # what backward() needs from the last forward with targets

    def forward(self, idx, targets=None):
        """idx (B,T+N-1) -> logits (B,T,V): position t predicts the character after
        idx[:, t:t+N]. With targets (B,T): also the mean cross-entropy, and keep what
        backward() needs."""
        N = self.block_size
        if idx.shape[1] < N:
            raise ValueError(f"idx has {idx.shape[1]} characters, fewer than block_size {N}")
        context = idx.unfold(1, N, 1)  # (B,T,N): the N characters before each target
        emb = self.wte[context]  # (B,T,N,C)
        x = emb.flatten(2)  # (B,T,N*C): the N embeddings concatenated
        h = torch.tanh(self.hidden(x))  # (B,T,H)
        logits = self.lm_head(h)  # (B,T,V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        self.saved = (context, x, h, logits, targets)
        return logits, loss

    @torch.no_grad()
    def backward(self):
        """d loss / d parameter for the last forward(idx, targets), added to every .grad."""
        context, x, h, logits, targets = self.saved
        B, T, V = logits.shape
        # loss = mean over the B*T targets of -log p_y, p = softmax(logits):
        # dloss/dlogits = (p - onehot(y)) / (B*T)
        dlogits = F.softmax(logits, dim=-1).reshape(B * T, V)  # (B*T,V)
        dlogits[torch.arange(B * T, device=logits.device), targets.flatten()] -= 1
        dlogits = (dlogits / (B * T)).view(B, T, V)
        # logits = h W_2^T + b_2
        dh = self.lm_head.backward(h, dlogits)  # (B,T,H)
        # h = tanh(a): dh/da = 1 - tanh(a)^2 = 1 - h^2
        da = dh * (1 - h * h)  # (B,T,H)
        # a = x W_1^T + b_1
        dx = self.hidden.backward(x, da)  # (B,T,N*C)
        # x = [e_1, ..., e_N]: each embedding gets its own slice of the gradient
        demb = dx.reshape(-1, self.wte.shape[1])  # (B*T*N,C)
        # e = wte[c]: a character that occurs k times collects k gradients, summed into its row
        add_grad(self.wte, torch.zeros_like(self.wte).index_add_(0, context.flatten(), demb))


# ----------------------------------------------------------------------------- data

SKIP = ("site-packages", "test", "tests", "idle_test")  # folders left out of the default corpus


def stdlib_source():
    """The default corpus, on every machine with Python: the standard library's .py files,
    sorted by relative path, tests and site-packages left out, joined with newlines."""
    root = sysconfig.get_paths()["stdlib"]
    paths = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in SKIP]
        paths += [os.path.relpath(os.path.join(folder, f), root)
                  for f in files if f.endswith(".py")]
    texts = []
    for path in sorted(paths, key=lambda p: p.split(os.sep)):
        with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
    return "\n".join(texts)


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


def encode(text, chars):
    """Text -> LongTensor of ids: each character's position in the sorted vocabulary `chars`."""
    stoi = {c: i for i, c in enumerate(chars)}
    unseen = sorted(set(text) - stoi.keys())
    require(not unseen, f"characters not in the vocabulary: {''.join(unseen)!r}")
    return torch.tensor([stoi[c] for c in text], dtype=torch.long)


def decode(ids, chars):
    return "".join(chars[i] for i in ids)


def split(data, block_size):
    """First 90% for training, last 10% for validation; each must hold one window + targets."""
    n = int(0.9 * len(data))
    splits = {"train": data[:n], "val": data[n:]}
    for name, part in splits.items():
        require(len(part) >= 2 * block_size,
                f"the {name} split has {len(part)} characters, fewer than 2 * block_size"
                f" = {2 * block_size}; give a longer text or a smaller --block-size")
    return splits


def get_batch(data, block_size, batch_size, device):
    """batch_size random windows: inputs x (B,T+N-1) and targets y (B,T), T = N = block_size;
    y[:, t] is the character after x[:, t:t+N], so every target has its full context."""
    ix = torch.randint(len(data) - 2 * block_size + 1, (batch_size,))
    chunk = data[ix[:, None] + torch.arange(2 * block_size)]  # (B,T+N)
    return chunk[:, :-1].to(device), chunk[:, block_size:].to(device)


# ----------------------------------------------------------------------------- train

@torch.no_grad()
def estimate_loss(model, data, cfg, device):
    """Mean loss over cfg.eval_steps random batches of each split."""
    model.eval()
    out = {}
    for name, part in data.items():
        losses = [model(*get_batch(part, cfg.block_size, cfg.batch_size, device))[1].item()
                  for _ in range(cfg.eval_steps)]
        out[name] = sum(losses) / len(losses)
    model.train()
    return out


def get_lr(step, cfg):
    """Cosine decay from cfg.lr at step 0 to cfg.lr / 10 at cfg.max_steps."""
    return cfg.lr * (0.55 + 0.45 * math.cos(math.pi * min(step / cfg.max_steps, 1.0)))


def train(model, optimizer, data, cfg, step=0, save=None, log=None):
    """Train from `step` to cfg.max_steps on data = {"train": ids, "val": ids}. Every
    eval_interval steps and at the end: evaluate, print, and call log(the evaluation as a
    dict) and save(step) if given. Ctrl-C saves and raises KeyboardInterrupt; a non-finite
    loss raises FloatingPointError before it can reach the weights. Returns the last
    evaluated losses."""
    device = next(model.parameters()).device
    start, losses = step, {}
    resumed_at = step if step > 0 else None  # evaluated and saved by the run this one continues
    stop = []  # Ctrl-C lands here; the loop ends at the next step boundary, weights consistent
    handler = signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    t0 = t_log = time.time()
    step_log = step
    try:
        while True:
            due = step % cfg.eval_interval == 0 or step == cfg.max_steps
            evaluate = due and step != resumed_at
            if evaluate:
                losses = estimate_loss(model, data, cfg, device)
                now = time.time()
                chars = (step - step_log) * cfg.batch_size * cfg.block_size
                eta = (now - t0) / (step - start) * (cfg.max_steps - step) if step > start else 0
                print(f"step {step:5d} | train loss {losses['train']:.4f} | val loss"
                      f" {losses['val']:.4f} | {chars / (now - t_log) / 1e3:6.1f}k chars/s"
                      f" | {now - t0:4.0f}s elapsed, ETA {eta:4.0f}s", flush=True)
                if log:
                    log({"step": step, "train_loss": losses["train"], "val_loss": losses["val"],
                         "seconds": now - t0, "chars_per_s": chars / (now - t_log)})
                t_log, step_log = now, step
            if save and (evaluate or stop):
                save(step)
            if step >= cfg.max_steps:
                break
            if stop:
                print(f"interrupted at step {step}; saved", flush=True)
                raise KeyboardInterrupt
            for group in optimizer.param_groups:
                group["lr"] = get_lr(step, cfg)
            x, y = get_batch(data["train"], cfg.block_size, cfg.batch_size, device)
            with torch.no_grad():  # no graph for autograd: model.backward() does the backprop
                _, loss = model(x, y)
            if not torch.isfinite(loss):  # the one check: weights change only after it
                raise FloatingPointError(f"loss is {loss.item()} at step {step}; stopped, the last"
                                         " good checkpoint is kept")
            optimizer.zero_grad(set_to_none=True)
            model.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
    finally:
        signal.signal(signal.SIGINT, handler)
    return losses


# ----------------------------------------------------------------------------- sample

@torch.no_grad()
def sample(model, idx, max_new_tokens, temperature=1.0, top_k=0):
    """Continue each row of idx (B,T), T >= block_size, by max_new_tokens characters. The model
    sees only the last block_size characters, so each new character costs one forward."""
    model.eval()
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -model.block_size:])  # (B,1,V)
        logits = logits[:, -1, :] / temperature  # (B,V)
        if top_k:
            kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, [-1]]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)  # (B,1)
        idx = torch.cat((idx, idx_next), dim=1)
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


def arg(default, help, must_be=None):
    """A config field: its default, its --help text, and "positive" or "non-negative" if so."""
    return dataclasses.field(default=default, metadata={"help": help, "must_be": must_be})


@dataclasses.dataclass
class Config:
    # data
    data: str = arg("", "UTF-8 text file to train on; empty: the Python standard library's source")
    # model
    block_size: int = arg(16, "characters of context each prediction sees (N)", "positive")
    n_embd: int = arg(24, "size of a character's embedding", "positive")
    n_hidden: int = arg(512, "size of the tanh hidden layer h", "positive")
    # optimization
    batch_size: int = arg(64, "windows per step", "positive")
    lr: float = arg(3e-3, "Adam learning rate, decayed along a cosine to lr/10", "positive")
    grad_clip: float = arg(1.0, "clip the gradient norm to this (0: off)", "non-negative")
    max_steps: int = arg(4000, "optimizer steps in all", "positive")
    eval_interval: int = arg(500, "steps between evaluations and checkpoints", "positive")
    eval_steps: int = arg(20, "batches averaged per evaluation", "positive")
    # system
    device: str = arg("", "cpu, cuda, mps, ...; empty: the best one available")
    seed: int = arg(1337, "seed for weights, batches and sampling")
    out_dir: str = arg("out", "where the checkpoint <script>.pt goes")
    resume: bool = arg(False, "continue training from the checkpoint in --out-dir")
    sample_only: bool = arg(False, "sample from the checkpoint in --out-dir without training")
    # sampling
    prompt: str = arg("\n", "text the samples start from")
    num_samples: int = arg(2, "samples to print", "non-negative")
    max_new_tokens: int = arg(500, "characters per sample", "non-negative")
    temperature: float = arg(0.8, "below 1: safer, above 1: wilder", "positive")
    top_k: int = arg(0, "sample only among the k likeliest characters (0: all)", "non-negative")

    def __post_init__(self):  # refuse impossible values before any work is done
        for f in dataclasses.fields(self):
            value, rule = getattr(self, f.name), f.metadata["must_be"]
            if rule:
                ok = value > 0 if rule == "positive" else value >= 0
                require(ok, f"{flag(f.name)} must be {rule}, got {value}")


MODEL_ARGS = ("block_size", "n_embd", "n_hidden")  # what a checkpoint fixes


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


def run(cfg, given=frozenset()):
    """Train as cfg says (from scratch, or --resume from the checkpoint), or load the
    checkpoint (--sample-only); then sample. `given`: the flags on the command line."""
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    path = os.path.join(cfg.out_dir, f"{SCRIPT}.pt")
    ckpt = load_checkpoint(path, cfg, given) if cfg.resume or cfg.sample_only else None
    if cfg.sample_only:
        require(not cfg.data or cfg.data == ckpt["config"]["data"], f"--data {cfg.data} is not"
                f" the text {path} was trained on; --sample-only needs no --data")
        chars = ckpt["vocab"]
    else:
        text = load_text(cfg.data)
        chars = "".join(sorted(set(text)))
        if ckpt:
            trained_on = ckpt["config"]["data"] or "the default"
            require(ckpt["vocab"] == chars, "this text's vocabulary differs from the checkpoint's;"
                    f" resume on the text it was trained on ({trained_on})")
        data = split(encode(text, chars), cfg.block_size)
    try:
        prompt = encode(cfg.prompt, chars)
    except BadInput as e:
        raise BadInput(f"--prompt has {e}") from None
    # the model reads block_size characters: a shorter prompt gets newlines before it (or the
    # vocabulary's first character, in a text without any), as if it came after blank lines
    n_pad = max(cfg.block_size - len(prompt), 0)
    prompt = torch.cat((torch.full((n_pad,), max(chars.find("\n"), 0)), prompt))
    model = LanguageModel(len(chars), cfg.n_embd, cfg.n_hidden, cfg.block_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step = 0
    if ckpt:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step = ckpt["step"]
        if not cfg.sample_only:  # --resume goes on with the same draws; sampling draws by --seed
            set_rng_states(ckpt["rng"], device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{SCRIPT}.py: {n_params / 1e6:.2f}M parameters, vocabulary {len(chars)}, on {device}")
    if not cfg.sample_only:
        print(f"data: {len(data['train']):,} train / {len(data['val']):,} val characters")

        def save(step):
            save_checkpoint(path, {"script": SCRIPT, "config": dataclasses.asdict(cfg),
                                   "vocab": chars, "step": step, "model": model.state_dict(),
                                   "optimizer": optimizer.state_dict(),
                                   "rng": rng_states(device)})

        log = open_metrics(os.path.join(cfg.out_dir, f"{SCRIPT}.jsonl"), cfg.resume)
        train(model, optimizer, data, cfg, step, save, log)
    for _ in range(cfg.num_samples):
        out = sample(model, prompt[None].to(device), cfg.max_new_tokens, cfg.temperature, cfg.top_k)
        print("-" * 80)
        print(decode(out[0, n_pad:].tolist(), chars))


if __name__ == "__main__":
    main()
