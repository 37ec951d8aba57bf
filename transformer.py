"""
transformer.py - the encoder-decoder Transformer of "Attention Is All You Need" (work in progress:
the layers; the translation model and its training come with seq2seq.py's skeleton).
"""

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

SCRIPT = "transformer"  # written into checkpoints, so that a sibling script refuses this one's


# ----------------------------------------------------------------------------- model

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
        w, b = self.in_proj_weight, self.in_proj_bias
        (w_q, w_k, w_v), (b_q, b_k, b_v) = w.chunk(3), b.chunk(3) if b is not None else [None] * 3
        cached = cache is not None and "k" in cache
        if self_attention:
            q, k, v = F.linear(query, w, b).chunk(3, dim=-1)  # (B,T,E) each, in one product
            if cached:
                k, v = torch.cat((cache["k"], k), 1), torch.cat((cache["v"], v), 1)  # (B,S,E)
        elif cached:  # the memory does not change from step to step
            q, k, v = F.linear(query, w_q, b_q), cache["k"], cache["v"]
        else:
            q, k, v = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)
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


class TransformerEncoderLayer(nn.Module):
    """torch.nn.TransformerEncoderLayer: self-attention, then the position-wise feed-forward
    network FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, each in a residual connection with layer
    norm: LayerNorm(x + Sublayer(x)) as in the paper, or x + Sublayer(LayerNorm(x)) if
    norm_first (more stable when deep)."""

    cross = False  # attends to an encoder's output too (the decoder layer)

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation=F.relu,
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout, bias, batch_first)
        if self.cross:
            self.multihead_attn = MultiheadAttention(d_model, nhead, dropout, bias, batch_first)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias)
        for i in range(1, 4 if self.cross else 3):
            setattr(self, f"norm{i}", LayerNorm(d_model, layer_norm_eps, bias))
        self.dropout = nn.Dropout(dropout)  # weightless: one module serves every sublayer
        if isinstance(activation, str):
            if activation not in ("relu", "gelu"):
                raise ValueError(f"activation should be relu or gelu, not {activation!r}")
            activation = getattr(F, activation)
        self.activation, self.norm_first = activation, norm_first

    def _sa_block(self, x, mask, key_padding_mask, is_causal, cache=None):
        x = self.self_attn(x, x, x, key_padding_mask, False, mask, is_causal=is_causal,
                           cache=None if cache is None else cache.setdefault("self", {}))[0]
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


class TransformerDecoderLayer(TransformerEncoderLayer):
    """torch.nn.TransformerDecoderLayer: masked self-attention, attention over the encoder's
    output (`memory`), the feed-forward network; each a residual connection with layer norm."""

    cross = True

    def _mha_block(self, x, memory, mask, key_padding_mask, is_causal, cache=None):
        x, w = self.multihead_attn(x, memory, memory, key_padding_mask, cache is not None, mask,
                                   False, is_causal,
                                   cache=None if cache is None else cache.setdefault("cross", {}))
        if cache is not None:
            cache["attn"] = w  # (B,h,T,S): what each output position read, head by head
        return self.dropout(x)

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False,
                cache=None):
        """`cache`, a dict, makes step-by-step decoding cost one position a step: pass only the
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
            x = layer(x, mask, src_key_padding_mask, bool(is_causal))
        return x if self.norm is None else self.norm(x)


class TransformerDecoder(nn.Module):
    """torch.nn.TransformerDecoder: num_layers copies of decoder_layer, then `norm` if given.
    `cache`, a list with a dict per layer, is for decoding a step at a time."""

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
                      memory_key_padding_mask, bool(tgt_is_causal), memory_is_causal,
                      None if cache is None else cache[i])
        return x if self.norm is None else self.norm(x)


class Transformer(nn.Module):
    """torch.nn.Transformer: an encoder stack over src, a decoder stack over tgt that attends
    to the encoder's output; same arguments, forward, parameter names and initialisation."""

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=2048, dropout=0.1, activation=F.relu, custom_encoder=None,
                 custom_decoder=None, layer_norm_eps=1e-5, batch_first=False, norm_first=False,
                 bias=True):
        super().__init__()
        layer_args = (d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                      batch_first, norm_first, bias)
        self.encoder = custom_encoder or TransformerEncoder(
            TransformerEncoderLayer(*layer_args), num_encoder_layers,
            LayerNorm(d_model, layer_norm_eps, bias))
        self.decoder = custom_decoder or TransformerDecoder(
            TransformerDecoderLayer(*layer_args), num_decoder_layers,
            LayerNorm(d_model, layer_norm_eps, bias))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
                src_key_padding_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
                memory_is_causal=False):
        """src (B,S,E), tgt (B,T,E), or (S,B,E), (T,B,E) unless batch_first -> (B,T,E)."""
        memory = self.encoder(src, src_mask, src_key_padding_mask, src_is_causal)
        return self.decoder(tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
                            memory_key_padding_mask, tgt_is_causal, memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz, device=None, dtype=None):
        """(sz,sz) float mask, -inf above the diagonal: position t sees positions <= t only."""
        return torch.full((sz, sz), -math.inf, device=device, dtype=dtype).triu(1)
