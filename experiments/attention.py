"""Alignments: where seq2seq.py (Bahdanau's additive attention) and transformer.py (the last
decoder layer's cross-attention) look in the source while they write each output token, for one
date and one Multi30k sentence -> figures/attention.png and attention.json.

Source tokens run along the top, the output down the side, as in Bahdanau et al.'s Figure 3
(arXiv:1409.0473) and PyTorch's showAttention: row t is the attention weights (summing to 1)
with which output token t was written. The axes' labels are the tokens the model read (the
source as the vocabulary has it: <unk> where a word was unseen, then <eos>) and wrote (up to
and with its <eos>). The Transformer's heatmap is the mean of its heads (the JSON keeps every
head); the terminal map of `--show-attention` shows head 0.

The models are the scripts' own checkpoints, loaded as `--sample-only` loads them: for the date,
the default runs (`python seq2seq.py`, `python transformer.py`: out/seq2seq.pt and
out/transformer.pt); for Multi30k, benchmarks/multi30k.py's models (`--save DIR` writes
DIR/seq2seq.pt and DIR/transformer.pt). The date is decoded greedily (the dates' exact-match
results are greedy); the sentence with --beam-size 5, the beam of the Multi30k BLEU reported.
A Multi30k model's test BLEU, for its heatmap's caption, is given as --bleu MODEL=VALUE: the
"test BLEU beam 5" benchmarks/multi30k.py printed for it (the checkpoint does not keep it).

    python seq2seq.py && python transformer.py      # the dates' models, in out/
    python benchmarks/multi30k.py --save out/multi30k                       # prints its BLEU
    python benchmarks/multi30k.py --model transformer --save out/multi30k ...   # likewise
    python experiments/attention.py --bleu seq2seq=BLEU transformer=BLEU
    python experiments/attention.py --plot-only     # redraw from figures/attention.json
"""
import argparse
import os

import torch

import figure
import seq2seq
import transformer

MODELS = {"seq2seq": seq2seq, "transformer": transformer}
NAMES = {"seq2seq": "seq2seq.py (Bahdanau)", "transformer": "transformer.py (mean of heads)"}
TASKS = {"date": "a date", "multi30k": "Multi30k de→en"}
DATE = "the 21st of june, 2077"  # README's example: a reordering (year first) and a day to read
# Multi30k's test_2016_flickr line 91, "A woman with pink hair dressed in black talks to a man.":
# English moves "schwarz gekleidete" (dressed in black) after the woman and her hair
SENTENCE = "eine schwarz gekleidete frau mit rosa haaren spricht mit einem mann ."
MAX_NEW_TOKENS = 64  # longer than any Multi30k test translation


def load(module, folder):
    """The model in folder/<script>.pt, rebuilt as the script's --sample-only rebuilds it."""
    cfg = module.Config()
    try:
        ckpt = module.load_checkpoint(os.path.join(folder, f"{module.SCRIPT}.pt"), cfg,
                                      given=frozenset())
    except module.BadInput as e:
        figure.refuse(str(e))
    model = module.make_model(ckpt["vocab"], cfg)
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt, cfg


def translate(module, model, vocab, tokens, text, beam_size):
    """text -> (source tokens read, output tokens written, attention (output, source) as lists,
    and for the Transformer every head's). Decoded by the script's own greedy() or
    beam_search(), kept up to and with the <eos> it wrote."""
    example = module.make_examples([(module.TOKENIZERS[tokens](text), [])], vocab)[0]
    src = torch.tensor([example[0]])  # (1,S): the ids, <unk> for unseen words, then <eos>
    heads = range(model.transformer.nhead) if module is transformer else [None]
    ids, maps = None, []
    for h in heads:
        if h is not None:
            model.head = h  # decode_step returns this head of the last layer's cross-attention
        if beam_size == 1:
            ys, attention = (x[0] for x in module.greedy(model, src, MAX_NEW_TOKENS))
        else:
            ys, attention = module.beam_search(model, src, MAX_NEW_TOKENS, beam_size)
        ys = ys.tolist()
        end = ys.index(module.EOS) + 1 if module.EOS in ys else len(ys)
        assert ids is None or ys[:end] == ids, "the head returned changed the translation"
        ids = ys[:end]
        maps.append(attention[:end].tolist())  # (T,S)
    if module is transformer:
        model.head = 0  # as the script has it
    mean = torch.tensor(maps).mean(0).tolist()
    return {"text": text, "source": [vocab["src"][i] for i in example[0]],
            "output": [vocab["tgt"][i] for i in ids], "attention": mean,
            **({"heads": maps} if module is transformer else {})}


def bleu_of(name, args):
    """A Multi30k model's test BLEU, for its caption: --bleu NAME=VALUE (no checkpoint keeps
    one)."""
    if name not in args.bleu:
        figure.refuse(f"no BLEU for {name}.pt's Multi30k model: give --bleu {name}=VALUE (its"
                      " test BLEU, beam 5, as benchmarks/multi30k.py printed it)")
    return args.bleu[name]


def measure(args):
    panels = []
    for task, folder in (("date", args.dates), ("multi30k", args.multi30k)):
        for name, module in MODELS.items():
            model, ckpt, cfg = load(module, folder)
            text, beam = (args.date, 1) if task == "date" else (args.sentence, args.beam_size)
            panel = {"task": task, "model": name, "checkpoint": os.path.join(folder, f"{name}.pt"),
                     "step": ckpt["step"], "tokens": cfg.tokens, "beam_size": beam,
                     **translate(module, model, ckpt["vocab"], cfg.tokens, text, beam)}
            if task == "multi30k":
                panel["bleu"] = bleu_of(name, args)
            print(f"{name:11s} {task:8s} {' '.join(panel['source'])}  ->"
                  f"  {' '.join(panel['output'])}", flush=True)
            panels.append(panel)
    return {"panels": panels}


def sharpness(attention):
    """The mean over output tokens of the largest weight: 1 if each looks at one source token."""
    return sum(map(max, attention)) / len(attention)


def shown(token):
    return "␣" if token == " " else token  # a space is a character the model reads: show it


def draw(data):
    panels = data["panels"]
    # square cells: each row of panels as tall as its taller heatmap is for its width
    shape = [max(len(p["output"]) / len(p["source"]) for p in panels[k:k + 2]) for k in (0, 2)]
    fig, axes = figure.plt.subplots(2, 2, figsize=(9, 2.8 + 3.8 * sum(shape)),
                                    layout="constrained", gridspec_kw={"height_ratios": shape})
    for ax, p in zip(axes.flat, panels):
        image = ax.matshow(p["attention"], cmap="Greys", vmin=0, vmax=1)
        ax.set_xticks(range(len(p["source"])), [shown(t) for t in p["source"]], fontsize=8)
        for label in ax.get_xticklabels():  # a character upright, a word or <eos> sideways
            label.set_rotation(90 if len(label.get_text()) > 1 else 0)
        ax.set_yticks(range(len(p["output"])), [shown(t) for t in p["output"]], fontsize=8)
        ax.tick_params(length=0)
        ax.grid(False)
        for side in ("top", "right", "bottom", "left"):
            ax.spines[side].set_visible(False)
        decoding = "greedy" if p["beam_size"] == 1 else f"beam {p['beam_size']}"
        score = f"test BLEU {p['bleu']:.2f}, " if "bleu" in p else ""
        ax.xaxis.set_label_position("bottom")  # the source's tokens stay on top
        ax.set_xlabel(f"{NAMES[p['model']]}, {TASKS[p['task']]}\n{score}{decoding};"
                      " mean peak weight"
                      f" {sharpness(p['attention']):.2f}", fontsize=9)
    for ax in axes[:, 0]:
        ax.set_ylabel("output, as written (top to bottom)", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.4, label="attention weight (each row sums to 1)")
    peak = {m: [sharpness(p["attention"]) for p in panels if p["model"] == m] for m in MODELS}
    sharper = [a > b for a, b in zip(peak["seq2seq"], peak["transformer"])]
    verdict = ("seq2seq's attention is the sharper on both" if all(sharper) else
               "the Transformer's (mean of heads) is the sharper on both" if not any(sharper)
               else "seq2seq's attention is the sharper on the date, the Transformer's on the"
               " sentence" if sharper[0] else "the Transformer's is the sharper on the date,"
               " seq2seq's on the sentence")
    numbers = ", ".join(f"{TASKS[t]} {a:.2f} vs {b:.2f}" for t, a, b in
                        zip(TASKS, peak["seq2seq"], peak["transformer"]))
    fig.suptitle("Where each output token looked in the source (along the top):"
                 f" {verdict}\n(mean peak weight, 1 = one source token a row: {numbers})"
                 + (" [quick]" if data.get("quick") else ""), fontsize=11)
    return fig


def bleu_flag(text):
    """--bleu's MODEL=VALUE -> (model, value)."""
    name, _, value = text.partition("=")
    try:
        bleu = float(value)
    except ValueError:
        bleu = None
    if name not in MODELS or bleu is None:
        raise argparse.ArgumentTypeError(f"expected seq2seq=VALUE or transformer=VALUE, got"
                                         f" {text!r}")
    return name, bleu


def main(argv=None):
    p = figure.parser(__doc__)
    p.add_argument("--dates", default="out", help="folder with seq2seq.pt and transformer.pt"
                   " trained on dates (the default runs')")
    p.add_argument("--multi30k", default=os.path.join("out", "multi30k"),
                   help="folder with seq2seq.pt and transformer.pt trained on Multi30k")
    p.add_argument("--date", default=DATE, help="the date to translate")
    p.add_argument("--sentence", default=SENTENCE, help="the German sentence to translate")
    p.add_argument("--beam-size", type=figure.positive(int), default=5,
                   help="beams for the sentence (1: greedy); the date is greedy")
    p.add_argument("--bleu", nargs="*", type=bleu_flag, default=[], metavar="MODEL=VALUE",
                   help="a Multi30k model's test BLEU for its title, e.g. seq2seq=30.78")
    args = p.parse_args(argv)
    args.bleu = dict(args.bleu)
    figure.run("attention", args, measure, draw)


if __name__ == "__main__":
    main()
