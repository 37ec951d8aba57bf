"""What the scripts share is one text: each shared block (refusals, config fields, device, random
states, checkpoints, metrics file, command line, main) is the same source in every script that
has it, in one section order, so that `diff rnn.py X.py` shows only what X's idea adds. And every
model section stands alone: run with the file's imports and nothing else, it builds its model."""
import ast
import collections
import difflib
import functools
import json
import os
import sys

import pytest
import torch

from conftest import ROOT

# The scripts held to one text; a name whose file is not here is skipped (bert.py and lda.py
# join the list once they follow it).
SCRIPTS = ("mlp", "rnn", "lstm", "gru", "word2vec", "seq2seq", "transformer", "gpt", "bert",
           "lda")
SECTIONS = ("model", "data", "train", "sample", "config", "main")  # the banners, in this order
BANNER = "# " + "-" * 77 + " "
# The shared blocks, in the order they come, each in its section. Where a script has one, it is
# this text word for word; only those in ADDS may have lines added (never reworded).
SHARED = (("config", "BadInput"), ("config", "require"), ("config", "flag"),
          ("config", "optional"), ("config", "arg"),
          ("main", "pick_device"), ("main", "rng_states"), ("main", "set_rng_states"),
          ("main", "adopt"), ("main", "read_checkpoint"), ("main", "load_checkpoint"),
          ("main", "save_checkpoint"), ("main", "open_metrics"), ("main", "parse_args"),
          ("main", "main"))
ADDS = {"main"}  # gpt.py adds the lines that leave torchrun's process group
# What every script has; the rest only where needed (optional: an optional package; the random
# state helpers and load_checkpoint: a checkpoint that keeps a dict of random states)
EVERYWHERE = {"BadInput", "require", "flag", "arg", "pick_device", "adopt", "read_checkpoint",
              "save_checkpoint", "open_metrics", "parse_args", "main"}


def present():
    return [s for s in SCRIPTS if os.path.exists(os.path.join(ROOT, f"{s}.py"))]


@functools.cache
def source(script):
    with open(os.path.join(ROOT, f"{script}.py")) as f:
        return f.read()


def banners(text):
    """{line number (1-based): section name} of the `# ---- name` banners."""
    return {i: line[len(BANNER):].strip() for i, line in enumerate(text.splitlines(), 1)
            if line.startswith(BANNER)}


@functools.cache
def blocks(script):
    """{name: (section, first line, source text)} of the script's top-level defs and classes."""
    text = source(script)
    lines, marks = text.splitlines(), banners(text)
    out = {}
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            start = node.lineno - len(node.decorator_list)
            section = marks[max(i for i in marks if i < start)] if min(marks) < start else None
            out[node.name] = (section, start, "\n".join(lines[start - 1:node.end_lineno]))
    return out


def post_init(script):
    """The source of Config.__post_init__."""
    text = source(script)
    config = next(n for n in ast.parse(text).body if getattr(n, "name", "") == "Config")
    method = next(n for n in config.body if getattr(n, "name", "") == "__post_init__")
    return ast.get_source_segment(text, method, padded=True)


def only_adds(canonical, text):
    """True if text is canonical with lines added, none changed or removed."""
    ops = difflib.SequenceMatcher(None, canonical.splitlines(), text.splitlines(),
                                  autojunk=False).get_opcodes()
    return all(tag in ("equal", "insert") for tag, *_ in ops)


@pytest.mark.parametrize("script", present())
def test_sections_come_in_one_order_after_the_script_line(script):
    text = source(script)
    found = list(banners(text).values())
    assert found == [name for name in SECTIONS if name in found]  # no others, in this order
    assert {"model", "data", "train", "config", "main"} <= set(found)  # sample: where it has one
    assert min(banners(text)) <= 80  # the model begins on the first screens
    body = ast.parse(text).body
    assert isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)  # docstring
    k = 1
    while isinstance(body[k], (ast.Import, ast.ImportFrom)):
        k += 1
    assert isinstance(body[k], ast.Assign) and body[k].targets[0].id == "SCRIPT"
    assert body[k].value.value == script and body[k].end_lineno < min(banners(text))


@pytest.mark.parametrize("name", [name for _, name in SHARED])
def test_a_shared_block_is_one_text_in_every_script(name):
    texts = {s: blocks(s)[name][2] for s in present() if name in blocks(s)}
    assert texts, f"no script has {name}"
    canonical, _ = collections.Counter(texts.values()).most_common(1)[0]
    for script, text in texts.items():
        if name in ADDS:
            assert only_adds(canonical, text), (script, name)
        else:
            assert text == canonical, (script, name, "\n".join(difflib.unified_diff(
                canonical.splitlines(), text.splitlines(), lineterm="")))


@pytest.mark.parametrize("script", present())
def test_shared_blocks_sit_in_their_sections_in_one_order(script):
    found = blocks(script)
    assert EVERYWHERE <= found.keys(), EVERYWHERE - found.keys()
    order = [(found[name][1], section, name) for section, name in SHARED if name in found]
    assert [name for _, _, name in sorted(order)] == [name for _, _, name in order]
    for _, section, name in order:
        assert found[name][0] == section, (name, found[name][0])
    assert found["Config"][0] == "config" and found["run"][0] == "main"
    assert max(line for line, _, _ in order) < found["run"][1]  # run() comes last


def test_config_checks_its_fields_in_one_text_first():
    texts = {s: post_init(s).splitlines() for s in present()}
    head = texts["rnn"]
    assert len(head) == 6 and "must be {rule}" in head[-1]
    for script, lines in texts.items():
        assert lines[:len(head)] == head, script


def test_the_check_fails_on_a_reworded_block():
    """The rule that holds the blocks: a line reworded fails, lines added pass only in ADDS."""
    main = blocks("rnn")["main"][2]
    assert only_adds(main, main + "\n    finally:\n        pass")
    assert main.count("exit(2)") == 1 and not only_adds(main, main.replace("exit(2)", "exit(3)"))
    assert not only_adds(main, main.removesuffix("\n        sys.exit(130)"))


# ----------------------------------------------------------------------------- model sections

def model_section(script):
    """The script's import lines, and its text from the model banner to the next banner."""
    text = source(script)
    tree = ast.parse(text)
    imports = "\n".join(ast.get_source_segment(text, n) for n in tree.body
                        if isinstance(n, (ast.Import, ast.ImportFrom)))
    lines, marks = text.splitlines(), sorted(banners(text))
    assert banners(text)[marks[0]] == "model"
    return imports, "\n".join(lines[marks[0] - 1:marks[1] - 1])


def standalone(script):
    """The model section executed alone in a fresh namespace, with the file's imports only."""
    imports, section = model_section(script)
    namespace = {"__name__": f"standalone_{script}"}
    exec(compile(imports + "\n" + section, f"<{script}.py model section>", "exec"), namespace)
    return namespace


def build(script, ns):
    """A small model of the section's main class, and inputs for a forward pass."""
    torch.manual_seed(0)
    idx = torch.randint(1, 10, (2, 6))
    if script == "mlp":
        return ns["LanguageModel"](10, 4, 8, 3), (idx, idx[:, 2:])
    if script in ("rnn", "lstm", "gru"):
        return ns["LanguageModel"](10, 4, 8, 2), (idx, idx)
    if script == "word2vec":
        context, targets, noise = idx, idx[:, 0], torch.randint(10, (2, 3))
        return ns["Word2Vec"](10, 4), (context, context > 3, targets, noise)
    if script == "seq2seq":
        src = torch.cat((idx, torch.zeros(2, 2, dtype=torch.long)), 1)  # padded with PAD, 0
        return ns["Seq2Seq"](10, 10, 4, 8, 1), (src, idx, idx)
    if script == "transformer":
        src = torch.cat((idx, torch.zeros(2, 2, dtype=torch.long)), 1)
        return ns["Translator"](10, 10, 8, 16, 1, 2), (src, idx, idx)
    if script == "gpt":
        return ns["GPT"](10, 8, 8, 2, 1), (idx, idx)
    if script == "bert":
        return ns["BERT"](10, 8, 8, 2, 1), (idx, idx)
    if script == "lda":  # ProdLDA's forward is its loss; LDA's own test is below
        counts = torch.rand(2, 10, dtype=torch.float64).round().float()
        return ns["ProdLDA"](10, 3, 8), (counts,)
    raise KeyError(f"no small model for {script}.py: add one here")


@pytest.mark.parametrize("script", present())
def test_a_model_section_runs_alone_and_builds_the_scripts_model(script):
    ns = standalone(script)
    model, inputs = build(script, ns)
    torch.manual_seed(0)
    out = model(*inputs)
    # word2vec: (loss, terms summed); lda's ProdLDA: the loss alone; the others: (logits, loss)
    loss = out if script == "lda" else out[0] if script == "word2vec" else out[1]
    assert torch.isfinite(loss) and loss.dim() == 0
    loss.backward()
    # the very model the script builds: the same weights from the same seed, the same outputs
    module = __import__(script)
    theirs, _ = build(script, vars(module))
    assert model.state_dict().keys() == theirs.state_dict().keys()
    torch.manual_seed(0)
    theirs(*inputs)  # the same training-mode pass (batch norm's running statistics move)
    model.eval(), theirs.eval()  # dropout off; lda's ProdLDA draws its noise from the seed
    torch.manual_seed(0)
    ours_out = model(*inputs)
    torch.manual_seed(0)
    their_out = theirs(*inputs)
    first = (lambda out: out) if script == "lda" else (lambda out: out[0])
    torch.testing.assert_close(first(their_out), first(ours_out), rtol=0, atol=0)
    # and it never speaks of the command line: no refusal helpers, no flags
    _, section = model_section(script)
    names = {n.id for n in ast.walk(ast.parse(section)) if isinstance(n, ast.Name)}
    assert not names & {"BadInput", "require", "optional", "flag"}, script


def test_gpt_from_pretrained_alone_raises_plain_errors(tmp_path, monkeypatch):
    GPT = standalone("gpt")["GPT"]
    with pytest.raises(FileNotFoundError, match="no such folder, and not one of gpt2"):
        GPT.from_pretrained(str(tmp_path / "nowhere"))
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install safetensors"):
        GPT.from_pretrained(str(tmp_path))


# ----------------------------------------------------------------------------- metrics file

TINY_RNN = ["--block-size", "16", "--n-embd", "8", "--n-hidden", "16", "--batch-size", "4",
            "--eval-interval", "10", "--eval-steps", "1", "--num-samples", "0"]


def records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_metrics_file_holds_every_evaluation_and_resume_appends(tmp_path, tiny_file,
                                                                monkeypatch, capsys):
    import rnn
    monkeypatch.chdir(tmp_path)
    args = ["--data", str(tiny_file), *TINY_RNN]
    rnn.main([*args, "--max-steps", "20"])
    path = tmp_path / "out" / "rnn.jsonl"
    first = records(path)
    assert [r["step"] for r in first] == [0, 10, 20]
    assert all(list(r) == ["step", "train_loss", "val_loss", "seconds", "chars_per_s"]
               for r in first)
    printed = [line.split(" | ") for line in capsys.readouterr().out.splitlines()
               if line.startswith("step ")]
    assert [float(p[2].split()[-1]) for p in printed] == [round(r["val_loss"], 4) for r in first]
    assert 0 <= first[0]["seconds"] <= first[1]["seconds"] <= first[2]["seconds"]
    rnn.main([*args, "--max-steps", "30", "--resume"])  # appends: the checkpoint's whole run
    assert records(path)[:3] == first and [r["step"] for r in records(path)] == [0, 10, 20, 30]
    rnn.main(["--sample-only", "--num-samples", "1", "--max-new-tokens", "5"])  # writes none
    assert len(records(path)) == 4
    rnn.main([*args, "--max-steps", "10"])  # a fresh run starts it anew
    assert [r["step"] for r in records(path)] == [0, 10]


@pytest.mark.parametrize("script", present())
def test_open_metrics_starts_anew_or_appends(script, tmp_path):
    module = __import__(script)
    path = str(tmp_path / "sub" / f"{script}.jsonl")
    log = module.open_metrics(path, resume=False)
    log({"step": 0, "val_loss": 1.5})
    module.open_metrics(path, resume=True)({"step": 5, "val_loss": 1.25})
    assert records(path) == [{"step": 0, "val_loss": 1.5}, {"step": 5, "val_loss": 1.25}]
    module.open_metrics(path, resume=False)
    assert records(path) == []


@pytest.mark.skipif("lda" not in present(), reason="no lda.py")
def test_lda_model_section_runs_alone_and_fits_as_the_script_does():
    ns, module = standalone("lda"), __import__("lda")
    X = torch.tensor([[3, 0, 1, 0, 2], [0, 4, 0, 1, 0], [1, 1, 2, 0, 0]], dtype=torch.float64)
    ours, theirs = ns["LDA"](2, 5, random_state=0), module.LDA(2, 5, random_state=0)
    for model in (ours, theirs):
        model.em_step(X)
    torch.testing.assert_close(ours.components_, theirs.components_, rtol=0, atol=0)
    torch.testing.assert_close(ours.transform(X), theirs.transform(X), rtol=0, atol=0)
