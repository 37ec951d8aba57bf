"""
gru.py - a character-level language model on a gated recurrent unit (GRU) network:
Cho et al. (2014), "Learning Phrase Representations using RNN Encoder-Decoder", arXiv:1406.1078.
Trained with backpropagation through time (Werbos 1990), left to autograd. One step, in each layer:

    r_t = sigmoid(x_t W_ir^T + b_ir + h_{t-1} W_hr^T + b_hr)         reset gate
    z_t = sigmoid(x_t W_iz^T + b_iz + h_{t-1} W_hz^T + b_hz)         update gate
    n_t = tanh(x_t W_in^T + b_in + r_t * (h_{t-1} W_hn^T + b_hn))    candidate (torch.nn.GRU's b_hn)
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

The recurrent layer is a twin of its namesake in torch.nn, written from tensor operations: the
same shapes (batched or one unbatched sequence), parameter names and initialisation, with torch's
bias, dropout and bidirectional at their defaults only. `LanguageModel` puts a character
embedding before it and a linear head after it. rnn.py, lstm.py and gru.py differ only in the
cell (one step of the recurrence), the shape of its state, and max_steps.

Run `python gru.py` to train on the Python standard library's source, then sample. Add
`--data input.txt` to train on your own UTF-8 text, or `--sample-only --prompt "def "` to sample
from the checkpoint that training saved in out/ (--help lists every flag).

Shapes: B batch, T time, C embedding, H hidden, V vocabulary, L layers.
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

SCRIPT = "gru"  # written into checkpoints, so that a sibling script refuses this one's


# ----------------------------------------------------------------------------- model

def cell(xw, h, weight_hh, bias_hh):
    """One step of the recurrence; xw = x_t W_ih^T + b_ih comes precomputed for every t, and
    F.linear(h, weight_hh, bias_hh) is h_{t-1} W_hh^T + b_hh."""
    xr, xz, xn = xw.chunk(3, dim=-1)  # (B,H) each
    hr, hz, hn = F.linear(h, weight_hh, bias_hh).chunk(3, dim=-1)  # (B,H) each
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)  # (B,H)
    return (1 - z) * n + z * h  # (B,H)


class GRU(nn.Module):
    """torch.nn.GRU from tensor operations; its state h is (L,B,H), or (L,H) unbatched.
    Same shapes, parameter names and initialisation, so that state_dicts move between the two.
    Of torch's arguments it takes input_size, hidden_size, num_layers and batch_first; bias,
    dropout and bidirectional only at their defaults, any other value is refused."""

    gates = 3  # row blocks in weight_ih and weight_hh: r, z, n

    def __init__(self, input_size, hidden_size, num_layers=1, *, batch_first=False, bias=True,
                 dropout=0.0, bidirectional=False):
        super().__init__()
        if not bias or dropout or bidirectional:  # not written out: refused, not ignored
            raise ValueError(f"{type(self).__name__} supports torch's bias=True, dropout=0 and"
                             f" bidirectional=False only; got {bias=}, {dropout=},"
                             f" {bidirectional=}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.batch_first = num_layers, batch_first
        G = self.gates * hidden_size
        bound = 1 / math.sqrt(hidden_size)  # as torch: everything ~ U(-1/sqrt(H), 1/sqrt(H))
        for k in range(num_layers):
            fan_in = input_size if k == 0 else hidden_size
            for name, shape in (("weight_ih", (G, fan_in)), ("weight_hh", (G, hidden_size)),
                                ("bias_ih", (G,)), ("bias_hh", (G,))):
                w = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
                self.register_parameter(f"{name}_l{k}", w)

    def forward(self, x, hx=None):
        """x (T,B,C), (B,T,C) if batch_first, or one unbatched sequence (T,C); hx the initial
        state, zeros if None. Returns output, the last layer's h_t for every t, (T,B,H),
        (B,T,H) or (T,H) as x is; and the final state."""
        batch_first = self.batch_first and x.dim() == 3  # as torch: a 2-D x is (T,C) always
        if batch_first:
            x = x.transpose(0, 1)
        if hx is None:
            hx = x.new_zeros(self.num_layers, *x.shape[1:-1], self.hidden_size)  # (L,B,H)
        h_n = []
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = (getattr(self, f"{name}_l{k}") for name in
                                      ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            xw = x @ w_ih.t() + b_ih  # (T,B,G*H): the input projection, hoisted out of the loop
            h = hx[k]
            outputs = []
            for xw_t in xw.unbind(0):
                h = cell(xw_t, h, w_hh, b_hh)
                outputs.append(h)
            x = torch.stack(outputs)  # (T,B,H), the next layer's input
            h_n.append(h)
        output = x.transpose(0, 1) if batch_first else x
        return output, torch.stack(h_n)


class LanguageModel(nn.Module):
    """Character embedding -> recurrent layer -> linear head: the next character's logits."""

    def __init__(self, vocab_size, n_embd, n_hidden, n_layer):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.rnn = GRU(n_embd, n_hidden, n_layer, batch_first=True)
        self.lm_head = nn.Linear(n_hidden, vocab_size)

    def advance(self, idx, state=None):
        """Read idx (B,T) on from `state`: logits (B,T,V) and the state after the last step."""
        x = self.wte(idx)  # (B,T,C)
        h, state = self.rnn(x, state)  # (B,T,H)
        return self.lm_head(h), state  # (B,T,V)

    def forward(self, idx, targets=None):
        logits, _ = self.advance(idx)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


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
    unseen = sorted(set(text) - set(chars))
    require(not unseen, f"characters not in the vocabulary: {''.join(unseen)!r}")
    stoi = {c: i for i, c in enumerate(chars)}
    return torch.tensor([stoi[c] for c in text], dtype=torch.long)


def decode(ids, chars):
    return "".join(chars[i] for i in ids)


def split(data, block_size):
    """First 90% for training, last 10% for validation; each must hold one window + target."""
    n = int(0.9 * len(data))
    splits = {"train": data[:n], "val": data[n:]}
    for name, part in splits.items():
        require(len(part) >= block_size + 1, f"the {name} split has {len(part)} characters, fewer"
                f" than block_size + 1 = {block_size + 1}; give a longer text or a smaller"
                " --block-size")
    return splits


def get_batch(data, block_size, batch_size, device):
    """batch_size random windows: inputs x and targets y, x shifted by one character. (B,T)"""
    ix = torch.randint(len(data) - block_size, (batch_size,))
    chunk = data[ix[:, None] + torch.arange(block_size + 1)]  # (B,T+1)
    return chunk[:, :-1].to(device), chunk[:, 1:].to(device)


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


def train(model, optimizer, data, cfg, step=0, save=lambda step: None, log=lambda record: None):
    """Train from `step` to cfg.max_steps on data = {"train": ids, "val": ids}. At step 0, every
    eval_interval steps and at the end: evaluate, print, log(the evaluation as a dict) and
    save(step). Ctrl-C saves and raises KeyboardInterrupt; a non-finite loss raises
    FloatingPointError before it can reach the weights. Returns the last evaluated losses."""
    device = next(model.parameters()).device
    start, t0 = step, time.time()

    def evaluate(step):
        losses = estimate_loss(model, data, cfg, device)
        seconds = time.time() - t0
        chars = (step - start) * cfg.batch_size * cfg.block_size  # trained on in this run
        eta = seconds / (step - start) * (cfg.max_steps - step) if step > start else 0
        print(f"step {step:5d} | train loss {losses['train']:.4f} | val loss {losses['val']:.4f}"
              f" | {chars / seconds / 1e3:6.1f}k chars/s | {seconds:4.0f}s elapsed,"
              f" ETA {eta:4.0f}s", flush=True)
        log({"step": step, "train_loss": losses["train"], "val_loss": losses["val"],
             "seconds": seconds, "chars_per_s": chars / seconds})
        save(step)
        return losses

    stop = []  # Ctrl-C lands here; the loop ends at the next step boundary, weights consistent
    handler = signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    try:
        # a resumed run starts where its checkpoint was saved: evaluated there, if it was due
        losses = evaluate(step) if step == 0 else {}
        while step < cfg.max_steps:
            if stop:
                save(step)
                print(f"interrupted at step {step}; saved", flush=True)
                raise KeyboardInterrupt
            for group in optimizer.param_groups:
                group["lr"] = get_lr(step, cfg)
            x, y = get_batch(data["train"], cfg.block_size, cfg.batch_size, device)
            _, loss = model(x, y)
            if not torch.isfinite(loss):  # checked before backward, so it never reaches the weights
                raise FloatingPointError(f"loss is {loss.item()} at step {step}; stopped, the last"
                                         " good checkpoint is kept")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            if step % cfg.eval_interval == 0 or step == cfg.max_steps:
                losses = evaluate(step)
    finally:
        signal.signal(signal.SIGINT, handler)
    return losses


# ----------------------------------------------------------------------------- sample

@torch.no_grad()
def sample(model, idx, max_new_tokens, temperature=1.0, top_k=0):
    """Continue each row of idx (B,T) by max_new_tokens characters. The recurrent state carries
    the whole context, so each new character costs one step."""
    model.eval()
    logits, state = model.advance(idx)
    for _ in range(max_new_tokens):
        logits = logits[:, -1, :] / temperature  # (B,V)
        if top_k:
            kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, [-1]]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)  # (B,1)
        idx = torch.cat((idx, idx_next), dim=1)
        logits, state = model.advance(idx_next, state)
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
    block_size: int = arg(128, "characters per training sequence: how far BPTT reaches", "positive")
    n_embd: int = arg(64, "size of a character's embedding", "positive")
    n_hidden: int = arg(256, "size of the recurrent state h", "positive")
    n_layer: int = arg(1, "recurrent layers stacked", "positive")
    # optimization
    batch_size: int = arg(32, "sequences per step", "positive")
    lr: float = arg(3e-3, "Adam learning rate, decayed along a cosine to lr/10", "positive")
    grad_clip: float = arg(1.0, "clip the gradient norm to this (0: off)", "non-negative")
    max_steps: int = arg(1000, "optimizer steps in all", "positive")
    eval_interval: int = arg(250, "steps between evaluations and checkpoints", "positive")
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


MODEL_ARGS = ("n_embd", "n_hidden", "n_layer")  # what a checkpoint fixes


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
    require(len(prompt), "--prompt is empty; give at least one character to start from")
    model = LanguageModel(len(chars), cfg.n_embd, cfg.n_hidden, cfg.n_layer).to(device)
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
        if cfg.resume:
            print(f"resuming from {path} at step {step}")

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
        print(decode(out[0].tolist(), chars))


if __name__ == "__main__":
    main()
