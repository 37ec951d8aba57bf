"""
transformer.py - the encoder-decoder Transformer of "Attention Is All You Need".

Vaswani et al. (2017), arXiv:1706.03762. No recurrence: an encoder stack reads the whole
source at once, a decoder stack writes the target, and every layer mixes positions by
scaled dot-product attention in h heads,

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V,   d_k = d_model / h,

each attention and each position-wise feed-forward network FFN(x) = max(0, x W_1 + b_1) W_2 + b_2
in a residual connection with layer norm: LayerNorm(x + Sublayer(x)). Order comes from
sinusoidal positional encodings added to the embeddings (scaled by sqrt(d_model)); the decoder
masks its self-attention so that position t sees positions <= t only, and attends to the
encoder's output; the output projection is tied to the target embedding.

`Transformer` (with `MultiheadAttention`, `LayerNorm`, the encoder and decoder layers and stacks)
is a drop-in twin of torch.nn.Transformer (same arguments, forward, masks, parameter names and
initialisation), written from tensor operations; `Translator` puts embeddings before it and the
output projection after it.

What changes relative to seq2seq.py: the model (attention everywhere instead of a GRU, so
training sees all target positions at once), label smoothing (0.1), the paper's learning-rate
schedule (warmup, then inverse square root; here with a short linear cooldown to 0 at the
end); decoding caches every layer's keys and values, so that each new token costs one position.
Data, tokens, metrics, training loop, beam search and CLI are seq2seq.py's.

Run:
    python transformer.py                                          # learn to normalise dates
    python transformer.py --sample-only --prompt "march 9, 1993"   # translate, out/transformer.pt
    python transformer.py --data pairs.tsv --tokens word           # source<TAB>target, one a line

Shapes: B batch, S source time, T target time, C = E = d_model, h heads, d_k = C / h,
V vocabulary, K beams.
"""

import argparse
import copy
import dataclasses
import datetime
import json
import math
import os
import random
import re
import signal
import sys
import time
from collections import Counter

import torch
import torch.nn as nn
import torch.nn.functional as F

SCRIPT = "transformer"  # written into checkpoints, so that a sibling script refuses this one's

# ----------------------------------------------------------------------------- model

PAD = 0  # the id of <pad>: padding, never attended to nor scored


class LayerNorm(nn.Module):
    """torch.nn.LayerNorm over the last dimension: (x - mean) / sqrt(var + eps) * weight + bias."""

    def __init__(self, normalized_shape, eps=1e-5, bias=True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape)) if bias else None

    def forward(self, x):
        var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)  # the biased variance
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight if self.bias is None else torch.addcmul(self.bias, x, self.weight)


def additive(mask, dtype):
    """A mask as torch reads it, made a float one to add to the scores: a bool mask is True
    where attention is not allowed (-inf), a float mask is added as it is."""
    if mask is None or mask.dtype != torch.bool:
        return None if mask is None else mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, -math.inf)


class MultiheadAttention(nn.Module):
    """torch.nn.MultiheadAttention: same arguments, forward contract, parameter names and
    initialisation (in_proj_weight stacks W_Q, W_K, W_V; out_proj is W_O).
    MultiHead(Q, K, V) = Concat(head_1..head_h) W_O, head_i = Attention(Q W_Q_i, K W_K_i, V W_V_i),
    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, batch_first=False):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.dropout, self.batch_first = dropout, batch_first
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        nn.init.xavier_uniform_(self.in_proj_weight)  # torch's order of draws: out_proj's first
        if bias:
            nn.init.zeros_(self.out_proj.bias)

    def project(self, x, i):
        """x (B,T,E) times W_Q (i = 0), W_K (1) or W_V (2), all heads at once. (B,T,E)"""
        E = self.embed_dim
        b = None if self.in_proj_bias is None else self.in_proj_bias[i * E:(i + 1) * E]
        return F.linear(x, self.in_proj_weight[i * E:(i + 1) * E], b)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False, cache=None):
        """query (B,T,E), key and value (B,S,E); (T,B,E), (S,B,E) unless batch_first.
        key_padding_mask (B,S), attn_mask (T,S) or (B*h,T,S): True or -inf where a query may
        not look (is_causal with no attn_mask: at later positions). Returns the output (B,T,E)
        and, if need_weights, the attention weights: (B,T,S) averaged over the heads, else
        (B,h,T,S). `cache`, a dict, keeps keys and values from one decoding step to the next:
        self-attention appends the new positions' to them; cross-attention projects once."""
        self_attention = key is query and value is query
        if not self.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        B, T, E = query.shape
        h = self.num_heads
        cached = cache is not None and "k" in cache
        if self_attention:  # Q, K, V in one product
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
            if cached:
                k, v = torch.cat((cache["k"], k), 1), torch.cat((cache["v"], v), 1)  # (B,S,E)
        elif cached:  # the memory does not change from step to step
            q, k, v = self.project(query, 0), cache["k"], cache["v"]
        else:
            q, k, v = self.project(query, 0), self.project(key, 1), self.project(value, 2)
        if cache is not None:
            cache["k"], cache["v"] = k, v
        S = k.shape[1]
        q = q.view(B, T, h, E // h).transpose(1, 2)  # (B,h,T,d_k)
        k = k.view(B, S, h, E // h).transpose(1, 2)  # (B,h,S,d_k)
        v = v.view(B, S, h, E // h).transpose(1, 2)  # (B,h,S,d_k)
        if is_causal and attn_mask is None:  # query t sees keys up to its own position
            attn_mask = torch.ones(T, S, dtype=torch.bool, device=q.device).triu(S - T + 1)
        mask = additive(attn_mask, q.dtype)
        if mask is not None and mask.dim() == 3:
            mask = mask.view(B, h, T, S)
        if key_padding_mask is not None:
            pad = additive(key_padding_mask, q.dtype).view(B, 1, 1, S)
            mask = pad if mask is None else mask + pad
        att = (q * (E // h) ** -0.5) @ k.transpose(-2, -1)  # (B,h,T,S)
        if mask is not None:
            att = att + mask
        att = F.softmax(att, dim=-1)  # (B,h,T,S)
        if self.training and self.dropout:
            att = F.dropout(att, self.dropout)
        y = (att @ v).transpose(1, 2).reshape(B, T, E)  # (B,T,E): the heads side by side
        y = self.out_proj(y)  # (B,T,E)
        if not self.batch_first:
            y = y.transpose(0, 1)
        if not need_weights:
            return y, None
        return y, att.mean(1) if average_attn_weights else att


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}  # the names torch's layers accept


class TransformerEncoderLayer(nn.Module):
    """torch.nn.TransformerEncoderLayer: self-attention, then the position-wise feed-forward
    network FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, each in a residual connection with layer
    norm: LayerNorm(x + Sublayer(x)) as in the paper, or x + Sublayer(LayerNorm(x)) if
    norm_first (more stable when deep)."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation=F.relu,
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout, bias=bias,
                                            batch_first=batch_first)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias)
        self.norm1 = LayerNorm(d_model, layer_norm_eps, bias=bias)
        self.norm2 = LayerNorm(d_model, layer_norm_eps, bias=bias)
        self.dropout = nn.Dropout(dropout)  # weightless: one module serves every sublayer
        self.activation = ACTIVATIONS[activation] if isinstance(activation, str) else activation
        self.norm_first = norm_first

    def _sa_block(self, x, mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=False,
                           attn_mask=mask, is_causal=is_causal)[0]
        return self.dropout(x)

    def _ff_block(self, x):
        return self.dropout(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = src  # (B,S,E)
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff_block(x))


class TransformerDecoderLayer(nn.Module):
    """torch.nn.TransformerDecoderLayer: masked self-attention, attention over the encoder's
    output (`memory`), the feed-forward network; each in a residual connection with layer
    norm, after it (the paper) or before it (norm_first), as in the encoder layer."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation=F.relu,
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True):
        super().__init__()
        attention = dict(dropout=dropout, bias=bias, batch_first=batch_first)
        self.self_attn = MultiheadAttention(d_model, nhead, **attention)
        self.multihead_attn = MultiheadAttention(d_model, nhead, **attention)  # over the memory
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias)
        self.norm1 = LayerNorm(d_model, layer_norm_eps, bias=bias)
        self.norm2 = LayerNorm(d_model, layer_norm_eps, bias=bias)
        self.norm3 = LayerNorm(d_model, layer_norm_eps, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.activation = ACTIVATIONS[activation] if isinstance(activation, str) else activation
        self.norm_first = norm_first

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False,
                cache=None):
        """`cache`, a dict (empty at first) that keeps each attention's keys and values
        ("self", "cross"), makes step-by-step decoding cost one position a step: pass only the
        new positions of tgt each call. It also keeps their cross-attention weights ("attn")."""
        x = tgt  # (B,T,E)
        sa = (tgt_mask, tgt_key_padding_mask, tgt_is_causal, cache)
        mha = (memory, memory_mask, memory_key_padding_mask, memory_is_causal, cache)
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), *sa)
            x = x + self._mha_block(self.norm2(x), *mha)
            return x + self._ff_block(self.norm3(x))
        x = self.norm1(x + self._sa_block(x, *sa))
        x = self.norm2(x + self._mha_block(x, *mha))
        return self.norm3(x + self._ff_block(x))

    def _sa_block(self, x, mask, key_padding_mask, is_causal, cache):
        x = self.self_attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=False,
                           attn_mask=mask, is_causal=is_causal,
                           cache=None if cache is None else cache.setdefault("self", {}))[0]
        return self.dropout(x)

    def _mha_block(self, x, memory, mask, key_padding_mask, is_causal, cache):
        x, w = self.multihead_attn(x, memory, memory, key_padding_mask=key_padding_mask,
                                   need_weights=cache is not None, attn_mask=mask,
                                   average_attn_weights=False, is_causal=is_causal,
                                   cache=None if cache is None else cache.setdefault("cross", {}))
        if cache is not None:
            cache["attn"] = w  # (B,h,T,S): what each output position read, head by head
        return self.dropout(x)

    def _ff_block(self, x):
        return self.dropout(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerEncoder(nn.Module):
    """torch.nn.TransformerEncoder: num_layers copies of encoder_layer, then `norm` if given.
    There is no fast path here, so enable_nested_tensor and mask_check change nothing."""

    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True,
                 mask_check=True):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(encoder_layer) for _ in range(num_layers))
        self.num_layers, self.norm = num_layers, norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        x = src
        for layer in self.layers:
            x = layer(x, mask, src_key_padding_mask, is_causal=bool(is_causal))
        return x if self.norm is None else self.norm(x)


class TransformerDecoder(nn.Module):
    """torch.nn.TransformerDecoder: num_layers copies of decoder_layer, then `norm` if given.
    `cache`, a list with a dict per layer (see TransformerDecoderLayer), is for decoding a step
    at a time."""

    def __init__(self, decoder_layer, num_layers, norm=None):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(decoder_layer) for _ in range(num_layers))
        self.num_layers, self.norm = num_layers, norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False,
                cache=None):
        x = tgt
        for i, layer in enumerate(self.layers):
            x = layer(x, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
                      memory_key_padding_mask, tgt_is_causal=bool(tgt_is_causal),
                      memory_is_causal=memory_is_causal,
                      cache=None if cache is None else cache[i])
        return x if self.norm is None else self.norm(x)


class Transformer(nn.Module):
    """torch.nn.Transformer: an encoder stack over src, a decoder stack over tgt that attends
    to the encoder's output; same arguments, forward, parameter names and initialisation."""

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=2048, dropout=0.1, activation=F.relu, custom_encoder=None,
                 custom_decoder=None, layer_norm_eps=1e-5, batch_first=False, norm_first=False,
                 bias=True):
        super().__init__()
        layer = dict(d_model=d_model, nhead=nhead, dim_feedforward=dim_feedforward,
                     dropout=dropout, activation=activation, layer_norm_eps=layer_norm_eps,
                     batch_first=batch_first, norm_first=norm_first, bias=bias)
        self.encoder = custom_encoder or TransformerEncoder(
            TransformerEncoderLayer(**layer), num_encoder_layers,
            LayerNorm(d_model, eps=layer_norm_eps, bias=bias))
        self.decoder = custom_decoder or TransformerDecoder(
            TransformerDecoderLayer(**layer), num_decoder_layers,
            LayerNorm(d_model, eps=layer_norm_eps, bias=bias))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
                src_key_padding_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
                memory_is_causal=False):
        """src (B,S,E), tgt (B,T,E), or (S,B,E), (T,B,E) unless batch_first -> (B,T,E)."""
        memory = self.encoder(src, src_mask, src_key_padding_mask, is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
                            memory_key_padding_mask, tgt_is_causal=tgt_is_causal,
                            memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz, device=None, dtype=None):
        """(sz,sz) float mask, -inf above the diagonal: position t sees positions <= t only."""
        return torch.full((sz, sz), -math.inf, device=device, dtype=dtype).triu(1)


def positional_encoding(positions, d_model):
    """The paper's sinusoids, one wavelength per dimension pair, from 2 pi to 10000 * 2 pi:
    PE(pos, 2i) = sin(pos / 10000^(2i / d_model)), PE(pos, 2i + 1) = cos(same). (T,C)"""
    freq = 10000 ** -(torch.arange(0, d_model, 2, device=positions.device) / d_model)
    angle = positions[:, None].float() * freq  # (T,C/2)
    return torch.stack((angle.sin(), angle.cos()), dim=-1).flatten(1)[:, :d_model]  # (T,C)


class Translator(nn.Module):
    """Source and target embeddings, scaled by sqrt(d_model), plus positional encoding ->
    Transformer -> output projection tied to the target embedding (the paper's weight sharing).

    The interface sample() uses (shared with seq2seq.py): encode(src) -> (memory, state);
    decode_step(y, state, memory) -> (logits, state, attention). memory and state hold tensors
    with the batch along dim 0 (in dicts and lists), so that beam search can reorder them."""

    def __init__(self, src_vocab_size, tgt_vocab_size, n_embd, n_hidden, n_layer, n_head,
                 dropout=0.0, norm_first=False, head=0):
        super().__init__()
        self.src_emb = nn.Embedding(src_vocab_size, n_embd)
        self.tgt_emb = nn.Embedding(tgt_vocab_size, n_embd)
        for emb in (self.src_emb, self.tgt_emb):  # times sqrt(d_model), unit variance
            nn.init.normal_(emb.weight, std=n_embd ** -0.5)
        self.transformer = Transformer(n_embd, n_head, n_layer, n_layer, n_hidden,
                                       dropout=dropout, batch_first=True, norm_first=norm_first)
        self.lm_head = nn.Linear(n_embd, tgt_vocab_size, bias=False)
        self.lm_head.weight = self.tgt_emb.weight  # tied: one matrix reads and writes tokens
        self.drop = nn.Dropout(dropout)
        self.head = head  # the cross-attention head of the last layer decode_step returns

    def embed(self, emb, idx, start=0):
        """idx (B,T) at positions start.. -> the stacks' input (B,T,C)."""
        pos = torch.arange(start, start + idx.shape[1], device=idx.device)
        return self.drop(emb(idx) * math.sqrt(emb.embedding_dim)
                         + positional_encoding(pos, emb.embedding_dim))  # (B,T,C)

    def memory(self, src):
        """src (B,S) -> the encoder's output (B,S,C) and the padding mask (B,S), True on <pad>."""
        pad = src == PAD
        return self.transformer.encoder(self.embed(self.src_emb, src),
                                        src_key_padding_mask=pad), pad

    def encode(self, src):
        """src (B,S) -> memory {h the encoder's output, pad its padding mask} and the decoder's
        first state: every decoder layer's cache, with its cross-attention keys and values
        (B,S,C), the same at every step, and its self-attention ones empty: no position yet."""
        h, pad = self.memory(src)
        empty = h.new_zeros(h.shape[0], 0, h.shape[2])  # (B,0,C)
        state = [{"self": {"k": empty, "v": empty},
                  "cross": {"k": layer.multihead_attn.project(h, 1),
                            "v": layer.multihead_attn.project(h, 2)}}
                 for layer in self.transformer.decoder.layers]
        return {"h": h, "pad": pad}, state

    def decode_step(self, y, state, memory):
        """One step: y (B,) the last token written -> logits (B,V) of the next, the new state
        (the layers' caches, extended in place by this position's keys and values: a step
        costs one position, not all of them again) and the cross-attention weights (B,S) of
        head self.head of the last layer."""
        x = self.embed(self.tgt_emb, y[:, None], start=state[0]["self"]["k"].shape[1])  # (B,1,C)
        x = self.transformer.decoder(x, memory["h"], memory_key_padding_mask=memory["pad"],
                                     cache=state)  # (B,1,C)
        return self.lm_head(x[:, 0]), state, state[-1]["attn"][:, self.head, 0]

    def forward(self, src, idx, targets=None):
        """Teacher forcing, all positions at once: src (B,S), idx (B,T) the target read so far
        -> logits (B,T,V). The loss averages over the real (non-<pad>) targets; in training the
        paper's label smoothing (0.1) spreads a tenth of each target's probability."""
        h, pad = self.memory(src)
        x = self.transformer.decoder(self.embed(self.tgt_emb, idx), h, tgt_is_causal=True,
                                     memory_key_padding_mask=pad)  # (B,T,C)
        logits = self.lm_head(x)  # (B,T,V)
        loss = None if targets is None else F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=PAD,
            label_smoothing=0.1 if self.training else 0.0)
        return logits, loss


# ----------------------------------------------------------------------------- data

TOKENIZERS = {
    "char": list,
    "word": lambda text: re.findall(r"\w+|[^\w\s]", text.lower()),  # "Hi, you!" -> hi , you !
}
JOIN = {"char": "", "word": " "}  # tokens -> text
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
BOS, EOS, UNK = 1, 2, 3  # their ids (PAD, 0, is the model's), the same in every vocabulary

MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def ordinal(n):
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


# Each human format of a date, with one fixed convention (US month/day order for "/", European
# day.month for "."; two-digit years as POSIX strptime reads them, so only 1969-2068 use them).
DATE_FORMATS = [
    lambda d: f"{DAYS[d.weekday()]}, {MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.day} {MONTHS[d.month - 1][:3]} {d.year % 100:02d}",
    lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}",
    lambda d: f"{d.year} {MONTHS[d.month - 1]} {ordinal(d.day)}",
    lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"the {ordinal(d.day)} of {MONTHS[d.month - 1]}, {d.year}",
    lambda d: f"{DAYS[d.weekday()][:3]} {d.day} {MONTHS[d.month - 1][:3]} {d.year}",
    lambda d: f"{d.year}{d.month:02d}{d.day:02d}",
]
TWO_DIGIT_YEARS = (1969, 2068)  # the years format 2 may write as two digits
FIRST, LAST = datetime.date(1900, 1, 1).toordinal(), datetime.date(2099, 12, 31).toordinal()


def generate_dates(n, seed):
    """n pairs (a date as a person writes it, its ISO form), dates uniform in 1900-2099."""
    rng = random.Random(seed)
    pairs = []
    while len(pairs) < n:
        d = datetime.date.fromordinal(rng.randint(FIRST, LAST))
        k = rng.randrange(len(DATE_FORMATS))
        if k == 2 and not TWO_DIGIT_YEARS[0] <= d.year <= TWO_DIGIT_YEARS[1]:
            continue
        pairs.append((DATE_FORMATS[k](d), d.isoformat()))
    return pairs


DATES = {"train": (20_000, 0), "val": (2_000, 1)}  # (pairs, seed): separate seeds per split


def read_tsv(path):
    """(source, target) pairs from `path`: one a line, split at tabs, columns after the
    second ignored (the Tatoeba / manythings.org format), blank lines skipped."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        raise BadInput(f"cannot read --data {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise BadInput(f"--data {path} is not UTF-8 text (bad byte at offset {e.start})") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        columns = [column.strip() for column in line.split("\t")]
        require(len(columns) >= 2 and columns[0] and columns[1],
                f"--data {path} line {number} is not source<TAB>target: {line[:40]!r}")
        pairs.append((columns[0], columns[1]))
    require(pairs, f"--data {path} has no source<TAB>target pairs")
    return pairs


def load_pairs(path, tokens):
    """{"train": [(source tokens, target tokens)], "val": [...]}: the generated dates, or the
    pairs of the TSV at `path` shuffled with a fixed seed, the last 10% for validation."""
    if not path:
        splits = {name: generate_dates(n, seed) for name, (n, seed) in DATES.items()}
        seen = {source for source, _ in splits["train"]}  # score val on unseen inputs only
        splits["val"] = [(s, t) for s, t in splits["val"] if s not in seen]
    else:
        pairs = read_tsv(path)
        require(len(pairs) >= 2, f"--data {path} has {len(pairs)} pair; need 2: one to train"
                                 " on, one to validate on")
        random.Random(0).shuffle(pairs)
        n = len(pairs) - max(1, len(pairs) // 10)
        splits = {"train": pairs[:n], "val": pairs[n:]}
    tokenize = TOKENIZERS[tokens]
    return {name: [(tokenize(s), tokenize(t)) for s, t in part] for name, part in splits.items()}


def build_vocab(pairs, min_freq):
    """{"src": itos, "tgt": itos}: the specials, then the tokens seen at least min_freq times
    in training, sorted, so that ids are the same from run to run."""
    vocab = {}
    for side, name in enumerate(("src", "tgt")):
        counts = Counter(token for pair in pairs for token in pair[side])
        vocab[name] = SPECIALS + sorted(t for t, n in counts.items() if n >= min_freq)
    return vocab


def encode(tokens, stoi):
    """Tokens -> ids, <unk> for the unknown, <eos> appended; stoi maps token -> id."""
    return [stoi.get(t, UNK) for t in tokens] + [EOS]


def decode(ids, itos, tokens):
    return JOIN[tokens].join(itos[i] for i in ids)


def make_examples(pairs, vocab):
    """Pairs -> (source ids, target ids, target tokens) sorted by length, so that neighbours
    batch together with little padding; the target tokens are BLEU's reference, <unk>-free."""
    src, tgt = ({t: i for i, t in enumerate(vocab[side])} for side in ("src", "tgt"))
    examples = [(encode(s, src), encode(t, tgt), t) for s, t in pairs]
    return sorted(examples, key=lambda e: (len(e[0]), len(e[1])))


def pad(seqs):
    """Lists of ids -> LongTensor (B, longest), right-padded with <pad>."""
    return nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs], batch_first=True,
                                     padding_value=PAD)


def collate(examples, device):
    """Examples -> src (B,S), idx (B,T) the decoder's input (<bos> first), targets (B,T)."""
    src, tgt = pad([e[0] for e in examples]), pad([[BOS] + e[1] for e in examples])
    return src.to(device), tgt[:, :-1].to(device), tgt[:, 1:].to(device)


def get_batch(examples, batch_size, device):
    """A random example and its batch_size - 1 neighbours in length order: similar lengths."""
    i = torch.randint(len(examples), ()).item()
    start = min(max(i - batch_size // 2, 0), max(len(examples) - batch_size, 0))
    return collate(examples[start:start + batch_size], device)


# ----------------------------------------------------------------------------- train

@torch.no_grad()
def estimate_loss(model, data, cfg, device):
    """Mean loss over cfg.eval_steps random batches of each split."""
    model.eval()
    out = {}
    for name, part in data.items():
        losses = [model(*get_batch(part, cfg.batch_size, device))[1].item()
                  for _ in range(cfg.eval_steps)]
        out[name] = sum(losses) / len(losses)
    model.train()
    return out


def bleu(hypotheses, references, n_max=4):
    """Corpus BLEU (Papineni et al. 2002), one reference each: the geometric mean of the
    clipped n-gram precisions, n = 1..n_max, times the brevity penalty. In [0, 1]."""
    matched, total = [0] * n_max, [0] * n_max
    for hyp, ref in zip(hypotheses, references):
        for n in range(1, n_max + 1):
            h = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
            r = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
            matched[n - 1] += sum(min(k, r[g]) for g, k in h.items())  # clipped counts
            total[n - 1] += max(len(hyp) - n + 1, 0)
    if min(matched) == 0:
        return 0.0
    c, r = sum(map(len, hypotheses)), sum(map(len, references))
    brevity = 1.0 if c > r else math.exp(1 - r / c)
    return brevity * math.exp(sum(math.log(m / t) for m, t in zip(matched, total)) / n_max)


def evaluate(model, examples, vocab, cfg, device, beam_size=1):
    """Translate the examples: {"exact": share translated exactly, "bleu": corpus BLEU}."""
    hypotheses = []
    for i in range(0, len(examples), cfg.batch_size):
        src = collate(examples[i:i + cfg.batch_size], device)[0]
        hypotheses += [[vocab["tgt"][t] for t in ids] for ids, _ in
                       sample(model, src, cfg.max_new_tokens, beam_size)]
    references = [e[2] for e in examples]
    exact = sum(h == r for h, r in zip(hypotheses, references)) / len(examples)
    return {"exact": exact, "bleu": bleu(hypotheses, references)}


def get_lr(step, cfg):
    """The paper's schedule: linear warmup to cfg.lr at cfg.warmup_steps, then decay as
    1/sqrt(step) (the paper's peak, d_model^-0.5 * warmup^-0.5, is cfg.lr here). Then, over
    the last cfg.cooldown of the steps, a linear fall to 0: at 1/sqrt(step) alone the rate is
    still 0.28 of its peak at the end, exact match moved between 98.8% and 100% from one
    evaluation to the next, and where the run stopped decided the result (RESULTS.md)."""
    lr = cfg.lr * min((step + 1) / cfg.warmup_steps, math.sqrt(cfg.warmup_steps / (step + 1)))
    if cfg.cooldown:
        lr *= min(1.0, (cfg.max_steps - step) / (cfg.cooldown * cfg.max_steps))
    return lr


def train(model, optimizer, data, vocab, cfg, step=0, save=None, log=None):
    """Train from `step` to cfg.max_steps on data = {"train": examples, "val": examples}. Every
    eval_interval steps and at the end: evaluate (loss, and greedy translation of
    eval_steps * batch_size val pairs spread over all lengths), print, and call log(the
    evaluation as a dict) and save(step) if given. Ctrl-C saves and raises KeyboardInterrupt;
    a non-finite loss or gradient raises FloatingPointError before it can reach the weights.
    Returns the last evaluation."""
    device = next(model.parameters()).device
    val = data["val"][::max(1, len(data["val"]) // (cfg.eval_steps * cfg.batch_size))]
    start, losses, tokens = step, {}, 0
    evaluated = step if step > 0 else None  # a resumed run evaluated its first step, then saved
    stop = []  # Ctrl-C lands here; the loop ends at the next step boundary, weights consistent
    handler = signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    t0 = t_log = time.time()
    try:
        while True:
            due = (step % cfg.eval_interval == 0 or step == cfg.max_steps) and step != evaluated
            if due:
                losses = estimate_loss(model, data, cfg, device)
                losses.update(evaluate(model, val, vocab, cfg, device))
                model.train()  # sample() turned dropout off
                now = time.time()
                eta = (now - t0) / (step - start) * (cfg.max_steps - step) if step > start else 0
                print(f"step {step:5d} | train loss {losses['train']:.4f} | val loss"
                      f" {losses['val']:.4f} | {tokens / (now - t_log) / 1e3:6.1f}k tokens/s"
                      f" | {now - t0:4.0f}s elapsed, ETA {eta:4.0f}s | val ppl"
                      f" {math.exp(min(losses['val'], 50)):.2f} | exact"
                      f" {100 * losses['exact']:5.1f}% | BLEU {100 * losses['bleu']:5.2f}",
                      flush=True)
                if log:
                    log({"step": step, "train_loss": losses["train"], "val_loss": losses["val"],
                         "seconds": now - t0, "tokens_per_s": tokens / (now - t_log),
                         "val_ppl": math.exp(min(losses["val"], 50)), "exact": losses["exact"],
                         "bleu": losses["bleu"]})
                t_log, tokens = now, 0
            if save and (due or stop):
                save(step)
            if step >= cfg.max_steps:
                break
            if stop:
                print(f"interrupted at step {step}; saved", flush=True)
                raise KeyboardInterrupt
            for group in optimizer.param_groups:
                group["lr"] = get_lr(step, cfg)
            src, idx, targets = get_batch(data["train"], cfg.batch_size, device)
            _, loss = model(src, idx, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # max_norm inf clips nothing (grad_clip 0), but the norm tells of any inf or NaN
            norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
            if not (torch.isfinite(loss) and torch.isfinite(norm)):  # stop before the weights
                raise FloatingPointError(f"loss {loss.item():.4g}, gradient norm {norm.item()} at"
                                         f" step {step}; stopped, the last good checkpoint is kept")
            optimizer.step()
            tokens += (src != PAD).sum().item() + (targets != PAD).sum().item()
            step += 1
    finally:
        signal.signal(signal.SIGINT, handler)
    return losses


# ----------------------------------------------------------------------------- sample

def select(x, index):
    """Rows `index` of every tensor in x: a tensor, or a dict or list of them, nested as deep as
    it is. Beam search reorders the decoder's state and memory with it."""
    if isinstance(x, dict):
        return {name: select(value, index) for name, value in x.items()}
    if isinstance(x, list):
        return [select(value, index) for value in x]
    return x[index]


@torch.no_grad()
def greedy(model, src, max_new_tokens):
    """Batched: at each step the likeliest token, until every row has written <eos>."""
    memory, state = model.encode(src)
    y = src.new_full((src.shape[0],), BOS)
    ys, attention = [], []
    for _ in range(max_new_tokens):
        logits, state, a = model.decode_step(y, state, memory)
        y = logits.argmax(-1)  # (B,)
        ys.append(y)
        attention.append(a)
        if (torch.stack(ys, 1) == EOS).any(1).all():
            break
    return torch.stack(ys, 1), torch.stack(attention, 1)  # (B,T), (B,T,S)


@torch.no_grad()
def beam_search(model, src, max_new_tokens, beam_size):
    """One sentence src (1,S): keep the beam_size likeliest partial translations; a hypothesis
    that writes <eos> is finished, scored by its log-probability per token (so that short ones
    are not favoured for being short). Returns the best one's tokens (T,) and attention (T,S)."""
    memory, state = model.encode(src)
    scores = src.new_zeros(1, dtype=torch.float)  # (K,) log-probabilities of the live beams
    ys = src.new_zeros(1, 0)  # (K,t)
    attention = src.new_zeros(1, 0, src.shape[1], dtype=torch.float)  # (K,t,S)
    finished = []  # (score per token, tokens, attention)
    for t in range(max_new_tokens):
        y = ys[:, -1] if t else src.new_full((1,), BOS)
        logits, state, a = model.decode_step(y, state, select(memory, [0] * len(ys)))
        logp = scores[:, None] + F.log_softmax(logits, dim=-1)  # (K,V)
        top, flat = logp.flatten().topk(min(beam_size - len(finished), logp.numel()))
        beam, token = flat // logp.shape[1], flat % logp.shape[1]
        ys = torch.cat((ys[beam], token[:, None]), dim=1)
        attention = torch.cat((attention[beam], a[beam, None]), dim=1)
        done = token == EOS
        finished += [(top[k].item() / (t + 1), ys[k], attention[k]) for k in done.nonzero()[:, 0]]
        live = (~done).nonzero()[:, 0]
        if len(finished) >= beam_size or len(live) == 0 or t == max_new_tokens - 1:
            finished += [(top[k].item() / (t + 1), ys[k], attention[k]) for k in live]
            break
        scores, ys, attention = top[live], ys[live], attention[live]
        state = select(state, beam[live])
    _, ys, attention = max(finished, key=lambda f: f[0])
    return ys, attention


def sample(model, src, max_new_tokens, beam_size=1):
    """Translate each row of src (B,S): a list of (ids without <eos>, attention weights
    (len(ids), real source length)), by greedy decoding or beam search."""
    model.eval()
    lengths = (src != PAD).sum(1).tolist()
    if beam_size == 1:
        rows = zip(*greedy(model, src, max_new_tokens))
    else:
        rows = (beam_search(model, src[i:i + 1, :n], max_new_tokens, beam_size)
                for i, n in enumerate(lengths))
    out = []
    for (ys, attention), n in zip(rows, lengths):
        ids = ys.tolist()
        end = ids.index(EOS) if EOS in ids else len(ids)
        out.append((ids[:end], attention[:end, :n]))
    return out


SHADES = " ░▒▓█"  # attention weight 0 .. 1


def attention_map(source, output, attention):
    """Text heatmap: the source tokens along the top (written downwards), the output tokens
    down the side, each cell shaded by how much that output step attended to that token."""
    source = source + ["<eos>"]
    width = max(map(len, output), default=0) + 1
    lines = [" " * width + "".join(f"{t[i] if i < len(t) else ' '} " for t in source)
             for i in range(max(map(len, source)))]
    for token, row in zip(output, attention.tolist()):
        shades = (SHADES[round(w * (len(SHADES) - 1))] * 2 for w in row)
        lines.append(token.ljust(width) + "".join(shades))
    return "\n".join(line.rstrip() for line in lines)


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
    data: str = arg("", "TSV file of source<TAB>target pairs; empty: generated dates")
    tokens: str = arg("char", "char: one token a character; word: lowercased words, punctuation"
                              " split off")
    min_freq: int = arg(1, "tokens seen fewer times in training become <unk>", "positive")
    # model
    n_embd: int = arg(128, "d_model: the size of every token's vector, layer to layer",
                      "positive")
    n_hidden: int = arg(256, "d_ff: the inner size of each feed-forward network", "positive")
    n_layer: int = arg(2, "layers in the encoder stack, and in the decoder stack", "positive")
    n_head: int = arg(4, "attention heads; must divide n_embd", "positive")
    norm_first: bool = arg(False, "layer norm before each sublayer (steadier when deep), not"
                                  " after it as in the paper")
    dropout: float = arg(0.0, "dropout on embeddings, attention weights and sublayer outputs"
                              " (the paper: 0.1)", "non-negative")
    # optimization
    batch_size: int = arg(64, "pairs per step", "positive")
    lr: float = arg(1e-3, "Adam's peak learning rate, reached after the warmup", "positive")
    warmup_steps: int = arg(200, "steps of linear warmup before the 1/sqrt(step) decay",
                            "positive")
    cooldown: float = arg(0.2, "share of the steps, at the end, over which the rate falls"
                               " linearly to 0 (0: the paper's schedule alone)", "non-negative")
    grad_clip: float = arg(1.0, "clip the gradient norm to this (0: off)", "non-negative")
    max_steps: int = arg(2500, "optimizer steps in all", "positive")
    eval_interval: int = arg(250, "steps between evaluations and checkpoints", "positive")
    eval_steps: int = arg(20, "batches averaged per evaluation (and decoded, of val)",
                          "positive")
    # system
    device: str = arg("", "cpu, cuda, mps, ...; empty: the best one available")
    seed: int = arg(1337, "seed for weights, batches and sampling")
    out_dir: str = arg("out", "where the checkpoint <script>.pt goes")
    resume: bool = arg(False, "continue training from the checkpoint in --out-dir")
    sample_only: bool = arg(False, "sample from the checkpoint in --out-dir without training")
    # sampling
    prompt: str = arg("", "source text to translate; empty: --num-samples validation pairs")
    num_samples: int = arg(4, "validation pairs translated at the end", "non-negative")
    max_new_tokens: int = arg(32, "longest translation, in tokens", "positive")
    beam_size: int = arg(1, "beams searched when translating (1: greedy)", "positive")
    show_attention: bool = arg(False, "print every translation's attention map (after"
                                      " training the first one's is printed anyway)")

    def __post_init__(self):  # refuse impossible values before any work is done
        for f in dataclasses.fields(self):
            value, rule = getattr(self, f.name), f.metadata["must_be"]
            if rule:
                ok = value > 0 if rule == "positive" else value >= 0
                require(ok, f"{flag(f.name)} must be {rule}, got {value}")
        require(self.tokens in TOKENIZERS,
                f"--tokens must be {' or '.join(TOKENIZERS)}, got {self.tokens!r}")
        require(self.dropout < 1, f"--dropout must be below 1, got {self.dropout}")
        require(self.cooldown <= 1, f"--cooldown must be at most 1, got {self.cooldown}")
        require(self.n_embd % self.n_head == 0,
                f"--n-head {self.n_head} must divide --n-embd {self.n_embd}")


MODEL_ARGS = ("n_embd", "n_hidden", "n_layer", "n_head", "norm_first", "tokens",
              "min_freq")  # what a checkpoint fixes: the model, its vocabulary


def make_model(vocab, cfg):
    """The model cfg describes, sized for vocab's source and target vocabularies."""
    return Translator(len(vocab["src"]), len(vocab["tgt"]), cfg.n_embd, cfg.n_hidden,
                      cfg.n_layer, cfg.n_head, cfg.dropout, cfg.norm_first)


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
    checkpoint (--sample-only); then translate --prompt or validation pairs. `given`: the
    flags on the command line."""
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    path = os.path.join(cfg.out_dir, f"{SCRIPT}.pt")
    ckpt = load_checkpoint(path, cfg, given) if cfg.resume or cfg.sample_only else None
    if cfg.sample_only and not cfg.data:  # translate pairs of the data it was trained on
        cfg.data = ckpt["config"]["data"]
    translating_prompt = cfg.sample_only and cfg.prompt  # the checkpoint and the prompt alone
    pairs = None if translating_prompt else load_pairs(cfg.data, cfg.tokens)
    if cfg.sample_only:
        vocab = ckpt["vocab"]
    else:
        vocab = build_vocab(pairs["train"], cfg.min_freq)
        if ckpt:
            trained_on = ckpt["config"]["data"] or "the default"
            require(ckpt["vocab"] == vocab, "this data's vocabulary differs from the checkpoint's;"
                    f" resume on the data it was trained on ({trained_on})")
    data = None if pairs is None else {name: make_examples(part, vocab)
                                       for name, part in pairs.items()}
    if cfg.prompt:
        unseen = sorted(set(TOKENIZERS[cfg.tokens](cfg.prompt)) - set(vocab["src"]))
        require(not unseen, f"--prompt has tokens never seen in training: {unseen}"[:200])
        chosen = make_examples([(TOKENIZERS[cfg.tokens](cfg.prompt), [])], vocab)
    else:
        chosen = data["val"][::max(1, len(data["val"]) // max(cfg.num_samples, 1))]
        chosen = chosen[:cfg.num_samples]
    model = make_model(vocab, cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step = 0
    if ckpt:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step = ckpt["step"]
        set_rng_states(ckpt["rng"], device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{SCRIPT}.py: {n_params / 1e6:.2f}M parameters, vocabulary {len(vocab['src'])} source"
          f" / {len(vocab['tgt'])} target, on {device}")
    if not cfg.sample_only:
        print(f"data: {len(data['train']):,} train / {len(data['val']):,} val pairs"
              + (f"; resuming from step {step}" if ckpt else ""))

        def save(step):
            save_checkpoint(path, {"script": SCRIPT, "config": dataclasses.asdict(cfg),
                                   "vocab": vocab, "step": step, "model": model.state_dict(),
                                   "optimizer": optimizer.state_dict(),
                                   "rng": rng_states(device)})

        log = open_metrics(os.path.join(cfg.out_dir, f"{SCRIPT}.jsonl"), cfg.resume)
        train(model, optimizer, data, vocab, cfg, step, save, log)
    translations = []
    if chosen:
        translations = sample(model, collate(chosen, device)[0], cfg.max_new_tokens,
                              cfg.beam_size)
    for k, (ids, attention) in enumerate(translations):
        source = [vocab["src"][i] for i in chosen[k][0][:-1]]
        output = [vocab["tgt"][i] for i in ids]
        print("-" * 80)
        print(f"{JOIN[cfg.tokens].join(source)}  ->  {JOIN[cfg.tokens].join(output)}")
        # the first translation's map after training, every one with --show-attention
        # (a model without attention has all-zero weights: no map)
        first_after_training = k == 0 and not cfg.sample_only and bool(attention.any())
        if cfg.show_attention or first_after_training:
            print(attention_map(source, output, attention))


if __name__ == "__main__":
    main()
