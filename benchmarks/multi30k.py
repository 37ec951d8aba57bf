"""Multi30k German -> English with seq2seq.py's model (or transformer.py's): test BLEU (greedy and
beam), teacher-forced perplexity, parameters and wall time, within a wall-time budget.

Data: ../shared/data/multi30k/{train,val,test_2016_flickr}.{de,en}.gz (29,000 / 1,014 / 1,000
pairs). Tokens: the script's own `--tokens word` (lowercased, punctuation split off), tokens
seen fewer than --min-freq times in training become <unk>. BLEU is corpus BLEU-4 on those
tokens against the <unk>-free reference (the script's bleu(); no detokenisation, no sacrebleu).
The training budget --max-time sets max_steps from a timed trial of a few steps, so that the
learning-rate schedule ends when the budget does; a run that still overshoots by 10% is
stopped as Ctrl-C would stop it, and evaluated as it is (train() then says "saved", but the
benchmark keeps no checkpoint unless --save names a folder: DIR/seq2seq.pt or transformer.pt,
the script's own checkpoint, which its --sample-only and experiments/attention.py read).

    python benchmarks/multi30k.py --max-time 600
    python benchmarks/multi30k.py --save out/multi30k       # and keep the model
    python benchmarks/multi30k.py --model transformer --set n_layer=3 ...   # transformer.py
    python benchmarks/multi30k.py --max-time 0 --max-steps 5000 --set device=cuda  # no budget
"""
import argparse
import copy
import dataclasses
import gzip
import importlib
import math
import os
import signal
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "multi30k")
SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}


def read_split(folder, name, limit=0):
    lines = {}
    for lang in ("de", "en"):
        with gzip.open(os.path.join(folder, f"{name}.{lang}.gz"), "rt", encoding="utf-8") as f:
            lines[lang] = [line.strip() for line in f]
    pairs = list(zip(lines["de"], lines["en"]))
    return pairs[:limit] if limit else pairs


@torch.no_grad()
def perplexity(module, model, examples, batch_size, device):
    """exp of the mean cross-entropy per target token (<eos> included), teacher forced."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        src, idx, targets = module.collate(examples[i:i + batch_size], device)
        logits, _ = model(src, idx)
        total += F.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                 ignore_index=module.PAD, reduction="sum").item()
        count += (targets != module.PAD).sum().item()
    return math.exp(total / count)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="seq2seq", choices=["seq2seq", "transformer"])
    p.add_argument("--data-dir", default=DATA)
    p.add_argument("--max-time", type=float, default=600,
                   help="training budget in seconds (0: run --max-steps whatever it takes)")
    p.add_argument("--max-steps", type=int, default=100_000, help="at most this many steps")
    p.add_argument("--min-freq", type=int, default=2)
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (0: the fastest of 1..4 in the trial)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N pairs of each"
                                                        " split (a smoke test)")
    p.add_argument("--save", default="", metavar="DIR",
                   help="write the trained model to DIR/<model>.pt, the script's checkpoint")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="Config fields of the script, e.g. n_hidden=256 dropout=0.3")
    args = p.parse_args()
    if not os.path.exists(args.data_dir):
        sys.exit(f"multi30k.py: error: {args.data_dir} not present")
    if args.threads:
        torch.set_num_threads(args.threads)
    done = []  # optimizer steps taken: the budget may stop training early
    t_start = time.time()
    module = importlib.import_module(args.model)
    overrides = dict(batch_size=64, lr=2e-3, eval_steps=4, max_new_tokens=60,
                     tokens="word", min_freq=args.min_freq)
    if args.model == "seq2seq":
        overrides.update(n_embd=256, n_hidden=256, dropout=0.3)
    fields = {f.name: f.type for f in dataclasses.fields(module.Config)}
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = fields[key](value)
    cfg = module.Config(**overrides)
    torch.manual_seed(cfg.seed)
    device = module.pick_device(cfg.device)
    tokenize = module.TOKENIZERS["word"]
    pairs = {name: [(tokenize(s), tokenize(t)) for s, t in
                    read_split(args.data_dir, file, args.limit)] for name, file in SPLITS.items()}
    vocab = module.build_vocab(pairs["train"], cfg.min_freq)
    data = {name: module.make_examples(part, vocab) for name, part in pairs.items()}
    model = module.make_model(vocab, cfg).to(device)
    n_params = sum(q.numel() for q in model.parameters())
    print(f"{args.model}: {n_params / 1e6:.2f}M parameters, vocabulary {len(vocab['src'])} de /"
          f" {len(vocab['tgt'])} en; {cfg}", flush=True)

    if args.max_time:  # time a few steps of a throwaway copy to size the run to the budget
        trial = copy.deepcopy(model)
        optimizer = torch.optim.Adam(trial.parameters(), lr=cfg.lr)
        per_step = {}
        for threads in [args.threads] if args.threads else range(1, min(os.cpu_count(), 4) + 1):
            torch.set_num_threads(threads)  # on a busy machine more threads can be slower
            times = []
            for _ in range(5):
                t0 = time.time()
                _, loss = trial(*module.get_batch(data["train"], cfg.batch_size, device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                times.append(time.time() - t0)
            per_step[threads] = sorted(times)[2]
        threads = min(per_step, key=per_step.get)
        torch.set_num_threads(threads)
        steps = max(1, min(args.max_steps, int(0.85 * args.max_time / per_step[threads])))
        print(f"trial: seconds a step with 1, 2, ... threads {per_step}; {threads} threads,"
              f" {steps} steps in {args.max_time:.0f}s", flush=True)
        del trial, optimizer
    else:
        steps = args.max_steps
    cfg.max_steps, cfg.eval_interval = steps, max(1, steps // 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    optimizer.register_step_post_hook(lambda *_: done.append(1))
    t0 = time.time()
    if args.max_time:  # overshooting by 10%: stop at the next step, as Ctrl-C would
        signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
        signal.alarm(int(1.1 * args.max_time) + 1)
    stopped = ""
    try:
        module.train(model, optimizer, {"train": data["train"], "val": data["val"]}, vocab, cfg)
    except KeyboardInterrupt:
        stopped = " (stopped by the time budget)"
    signal.alarm(0)
    train_time = time.time() - t0

    t1 = time.time()
    ppl = {name: perplexity(module, model, data[name], cfg.batch_size, device)
           for name in ("val", "test")}
    greedy = module.evaluate(model, data["test"], vocab, cfg, device)
    t_greedy = time.time() - t1
    t2 = time.time()
    beam = module.evaluate(model, data["test"], vocab, cfg, device, beam_size=args.beam_size)
    t_beam = time.time() - t2
    epochs = len(done) * cfg.batch_size / len(data["train"])
    for example in data["test"][::250]:
        ids, _ = module.sample(model, module.collate([example], device)[0], cfg.max_new_tokens,
                               args.beam_size)[0]
        print(f"  de: {module.decode(example[0][:-1], vocab['src'], 'word')}\n"
              f"  en: {' '.join(example[2])}\n  ->  {module.decode(ids, vocab['tgt'], 'word')}")
    print(f"steps {len(done)} of {cfg.max_steps} ({epochs:.1f} epochs){stopped} in"
          f" {train_time:.0f}s;"
          f" evaluation: greedy {t_greedy:.0f}s, beam {t_beam:.0f}s;"
          f" wall {time.time() - t_start:.0f}s on {device}, {torch.get_num_threads()} threads")
    if args.save:  # as the script saves it, so that its --sample-only can load it
        cfg.data = ""  # the benchmark's pairs, not a file the script could read
        os.makedirs(args.save, exist_ok=True)
        module.save_checkpoint(os.path.join(args.save, f"{args.model}.pt"), {
            "script": module.SCRIPT, "config": dataclasses.asdict(cfg), "vocab": vocab,
            "step": len(done), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "rng": module.rng_states(device)})
        print(f"saved {args.save}/{args.model}.pt")
    print("| model | params | steps (epochs) | train time | val ppl | test ppl | test BLEU greedy"
          f" | test BLEU beam {args.beam_size} | test exact (greedy) |")
    print(f"| {args.model}.py | {n_params / 1e6:.1f}M | {len(done)} ({epochs:.1f}) |"
          f" {train_time:.0f}s | {ppl['val']:.1f} | {ppl['test']:.1f} |"
          f" {100 * greedy['bleu']:.2f} | {100 * beam['bleu']:.2f} |"
          f" {100 * greedy['exact']:.1f}% |")


if __name__ == "__main__":
    main()
