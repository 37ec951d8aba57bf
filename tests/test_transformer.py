"""transformer.py against torch.nn.Transformer and nn.MultiheadAttention, and the translator."""
import pytest
import torch
import torch.nn as nn

import transformer as tr


def pad_mask(lengths, T):
    """(B,T) bool, True at the padded positions beyond each row's length."""
    return torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]


def assert_same_grads(ours, ref):
    for (name, p_ref), (name_ours, p) in zip(ref.named_parameters(), ours.named_parameters()):
        assert name == name_ours
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=0, atol=1e-10, msg=name)


# ----------------------------------------------------------------------------- the layers

@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_matches_nn_transformer(norm_first):
    """2+2 layers, float64, dropout 0, train mode (torch's slow path: padded positions are
    defined): padding on source and target, a causal target mask; outputs and every gradient."""
    torch.manual_seed(0)
    kw = dict(d_model=16, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
              dim_feedforward=24, dropout=0.0, batch_first=True, norm_first=norm_first)
    ref = nn.Transformer(**kw).double()
    ours = tr.Transformer(**kw).double()
    ours.load_state_dict(ref.state_dict(), strict=True)
    src = torch.randn(3, 7, 16, dtype=torch.float64)
    tgt = torch.randn(3, 5, 16, dtype=torch.float64)
    masks = dict(tgt_mask=torch.ones(5, 5, dtype=torch.bool).triu(1),
                 src_key_padding_mask=pad_mask([7, 4, 2], 7),
                 tgt_key_padding_mask=pad_mask([5, 5, 3], 5),
                 memory_key_padding_mask=pad_mask([7, 4, 2], 7))
    inputs = [(src.clone().requires_grad_(), tgt.clone().requires_grad_()) for _ in range(2)]
    out_ref = ref(*inputs[0], **masks)
    out = ours(*inputs[1], **masks)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-10)
    w = torch.randn_like(out)  # a loss that weighs every output differently
    (out_ref * w).sum().backward()
    (out * w).sum().backward()
    assert_same_grads(ours, ref)
    for x_ours, x_ref in zip(inputs[1], inputs[0]):
        torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=0, atol=1e-10)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
def test_transformer_state_dict_both_ways_and_same_init():
    kw = dict(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=2,
              dim_feedforward=12)
    torch.manual_seed(1)
    ref = nn.Transformer(**kw)
    torch.manual_seed(1)
    ours = tr.Transformer(**kw)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for name, value in ref.state_dict().items():  # same seed, same draws: torch's own init
        assert torch.equal(ours.state_dict()[name], value), name
    ref.load_state_dict(tr.Transformer(**kw, norm_first=True).state_dict(), strict=True)
    ours.load_state_dict(nn.Transformer(**kw, bias=True).state_dict(), strict=True)
    assert set(tr.Transformer(**kw, bias=False).state_dict()) == set(
        nn.Transformer(**kw, bias=False).state_dict())


def test_square_subsequent_mask():
    assert torch.equal(tr.Transformer.generate_square_subsequent_mask(4),
                       nn.Transformer.generate_square_subsequent_mask(4))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("masks", ["none", "bool", "float3d", "causal"])
@pytest.mark.parametrize("average", [True, False])
def test_multihead_attention_matches_nn(batch_first, masks, average):
    torch.manual_seed(2)
    B, T, S, E, h = 3, 4, 6, 8, 2
    ref = nn.MultiheadAttention(E, h, batch_first=batch_first).double()
    ours = tr.MultiheadAttention(E, h, batch_first=batch_first).double()
    ours.load_state_dict(ref.state_dict(), strict=True)
    shape = (lambda n: (B, n, E)) if batch_first else (lambda n: (n, B, E))
    x = torch.randn(shape(T), dtype=torch.float64)
    mem = torch.randn(shape(S), dtype=torch.float64)
    kw, self_attention = {}, masks == "causal"
    if masks == "bool":
        kw = dict(key_padding_mask=pad_mask([6, 3, 1], S),
                  attn_mask=torch.rand(T, S) < 0.3)
        kw["attn_mask"][:, 0] = False  # every query keeps a key to look at
    elif masks == "float3d":
        kw = dict(attn_mask=torch.randn(B * h, T, S, dtype=torch.float64),
                  key_padding_mask=torch.zeros(B, S, dtype=torch.float64).masked_fill(
                      pad_mask([6, 3, 1], S), float("-inf")))
    elif masks == "causal":
        kw = dict(attn_mask=torch.ones(T, T, dtype=torch.bool).triu(1),
                  key_padding_mask=pad_mask([4, 2, 3], T), is_causal=True)
    results = []
    for module in (ref, ours):
        q = x.clone().requires_grad_()
        kv = q if self_attention else mem.clone().requires_grad_()
        y, att = module(q, kv, kv, average_attn_weights=average, **kw)
        (y.sum() + (att * torch.arange(att.numel()).view_as(att)).sum()).backward()
        results.append((y, att, q.grad, kv.grad, [p.grad for p in module.parameters()]))
    for a, b in zip(results[1], results[0]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_multihead_attention_state_dict_and_init():
    torch.manual_seed(3)
    ref = nn.MultiheadAttention(8, 2, bias=False)
    torch.manual_seed(3)
    ours = tr.MultiheadAttention(8, 2, bias=False)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for name, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name
    y, att = ours(torch.randn(5, 2, 8), torch.randn(3, 2, 8), torch.randn(3, 2, 8),
                  need_weights=False)
    assert y.shape == (5, 2, 8) and att is None
