"""lda.py against scikit-learn's LatentDirichletAllocation (float64, same random stream), its
evaluation on hand-computable cases, the generative process and the bars, ProdLDA, and the CLI."""
import json
import math
import os

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import lda
from conftest import ctrl_c_at_call, run_script

sklearn_lda = pytest.importorskip("sklearn.decomposition")
SK = sklearn_lda.LatentDirichletAllocation

# 25 words, one per pixel of a 5x5 image: the bars' vocabulary
PIXELS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike"
          " november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee").split()
TINY = ["--n-topics", 10, "--eval-interval", 1, "--min-df", 2, "--max-df", 1]


def bars():
    """Griffiths & Steyvers' (2004) ten topics: the rows and the columns of a 5x5 image, each
    uniform over its 5 pixels. (10,25)"""
    beta = np.zeros((10, 25))
    for r in range(5):
        beta[r, r * 5:r * 5 + 5] = 1 / 5  # row r
        beta[5 + r, r::5] = 1 / 5  # column r
    return beta


def bars_file(path, n_docs=300, length=40, seed=0):
    _, docs = lda.sample(bars(), 1.0, n_docs, length, seed)
    path.write_text("".join(" ".join(PIXELS[i] for i in doc) + "\n" for doc in docs))
    return path


@pytest.fixture
def tiny_file(tmp_path):
    return bars_file(tmp_path / "bars.txt")


def small_corpus(seed=1, D=60, V=40):
    X = np.random.RandomState(seed).poisson(0.3, (D, V)).astype(float)
    X[5] = 0  # an empty document, too
    return X


def fit_ours(X, K, method, iters, batch_size=16, **kwargs):
    model = lda.LDA(K, X.shape[1], **kwargs)
    Xt = torch.from_numpy(X)
    for _ in range(iters):
        if method == "batch":
            model.em_step(Xt)
        else:
            for i in range(0, len(X), batch_size):
                model.em_step(Xt[i:i + batch_size], len(X))
    return model


def close(ours, ref, rtol):
    """Equal to within rtol of the largest entry (lambda's smallest, ~eta, would ask for more)."""
    assert np.abs(ours - ref).max() <= rtol * np.abs(ref).max(), np.abs(ours - ref).max()


def assert_equal_to_sklearn(X, K, method, iters, rtol, **kwargs):
    sk_kwargs = {k: v for k, v in kwargs.items() if k != "random_state"}
    sk = SK(n_components=K, learning_method=method, max_iter=iters, batch_size=16,
            random_state=kwargs.get("random_state"), **sk_kwargs).fit(X)  # the same names
    ours = fit_ours(X, K, method, iters, **kwargs)
    Xt = torch.from_numpy(X)
    close(ours.components_.numpy(), sk.components_, rtol)
    close(ours.transform(Xt).numpy(), sk.transform(X), rtol)
    gamma = sk._unnormalized_transform(X)
    close(ours.e_step(Xt)[0].numpy(), gamma, rtol)
    np.testing.assert_allclose(ours.bound(Xt, torch.from_numpy(gamma)).item(),
                               sk._approx_bound(X, gamma, False), rtol=rtol)
    np.testing.assert_allclose(ours.perplexity(Xt), sk.perplexity(X), rtol=rtol)
    return ours, sk


# ----------------------------------------------------------------------------- the model

def test_psi_is_sklearns_fast_digamma_not_the_exact_one():
    from scipy.special import psi as exact
    from sklearn.decomposition._online_lda_fast import _dirichlet_expectation_2d
    a = np.random.RandomState(0).gamma(0.3, 2, (6, 50)) + 1e-7
    a[0, :4] = [1e-7, 1e-3, 5.999, 6.0]  # both branches, either side of the recurrence's end
    ours = lda.dirichlet_expectation(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(ours, _dirichlet_expectation_2d(a), rtol=1e-14, atol=1e-12)
    x = torch.tensor([0.5, 1.0, 2.5, 7.0, 100.0], dtype=torch.float64)
    diff = (lda.psi(x) - torch.from_numpy(exact(x.numpy()))).abs()
    assert diff.max() < 1e-7 and diff.max() > 1e-10  # close to the exact digamma, not it


def test_with_an_exact_digamma_agreement_would_stop_near_1e_8(monkeypatch):
    """Why psi is sklearn's approximation: with torch.digamma the same fit is ~1e-8 apart."""
    X = small_corpus()
    sk = SK(n_components=5, max_iter=10, random_state=3).fit(X)
    monkeypatch.setattr(lda, "psi", torch.digamma)
    apart = np.abs(fit_ours(X, 5, "batch", 10, random_state=3).components_.numpy()
                   - sk.components_).max() / sk.components_.max()
    assert 1e-9 < apart < 1e-6, apart


@pytest.mark.parametrize("method", ["batch", "online"])
def test_vb_equals_sklearn_on_a_small_corpus(method):
    assert_equal_to_sklearn(small_corpus(), 5, method, 10, rtol=1e-12, random_state=3)


def test_vb_equals_sklearn_with_other_priors_tolerance_and_schedule():
    assert_equal_to_sklearn(small_corpus(seed=2), 4, "online", 5, rtol=1e-12, random_state=0,
                            doc_topic_prior=0.3, topic_word_prior=0.05, learning_decay=0.9,
                            learning_offset=3.0, mean_change_tol=1e-5, max_doc_update_iter=7)


@pytest.fixture(scope="module")
def default_corpus():
    vocab, split = lda.make_corpus(lda.stdlib_modules(), 5, 0.5)
    return vocab, split


def test_vb_equals_sklearn_on_a_slice_of_the_default_corpus(default_corpus):
    vocab, split = default_corpus
    X = lda.counts([ids for _, _, ids in split["train"][:120]], len(vocab)).numpy()
    X = X[:, X.sum(0) > 0]
    for method in ("batch", "online"):
        assert_equal_to_sklearn(X, 8, method, 3, rtol=1e-12, random_state=5)


def test_each_document_stops_on_its_own():
    """A document's gamma is the same inferred alone or among others that stop sooner or later."""
    X = torch.from_numpy(small_corpus())
    model = fit_ours(X.numpy(), 5, "batch", 3, random_state=0)
    together = model.e_step(X)[0]
    for d in (0, 7, 33):
        torch.testing.assert_close(model.e_step(X[d:d + 1])[0][0], together[d], rtol=1e-14,
                                   atol=0)
    model.max_doc_update_iter = 1  # one update each: a different answer, so stopping matters
    assert not torch.allclose(model.e_step(X)[0], together, rtol=1e-6)


def test_a_non_finite_update_never_reaches_the_topics():
    X = torch.from_numpy(small_corpus())
    model = lda.LDA(5, X.shape[1], random_state=0)
    before = model.components_.clone()
    X[3, 2] = float("nan")
    with pytest.raises(FloatingPointError, match="not finite"):
        model.em_step(X)
    assert torch.equal(model.components_, before) and model.n_batch_iter.item() == 1


def test_state_dict_round_trip():
    model = fit_ours(small_corpus(), 5, "online", 1, random_state=0)
    other = lda.LDA(5, 40, random_state=9)
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.components_, model.components_)
    assert other.n_batch_iter.item() == model.n_batch_iter.item() == 5


# ----------------------------------------------------------------------------- evaluation

def test_npmi_on_hand_computed_cases():
    # 4 documents; words: 0 and 1 always together, 2 in half, 3 never with 0, 4 in one
    occurs = torch.tensor([[1, 1, 1, 0, 1],
                           [1, 1, 0, 0, 0],
                           [0, 0, 1, 1, 0],
                           [0, 0, 0, 1, 0]], dtype=torch.bool)
    cases = {(0, 1): 1.0,  # P(0,1) = P(0) = P(1) = 1/2: log 2 / log 2
             (0, 3): 0.0,  # never together: scored 0
             (0, 2): 0.0,  # P(0,2) = 1/4 = P(0) P(2): independent
             (0, 4): math.log(0.25 / (0.5 * 0.25)) / -math.log(0.25),  # = 1/2
             (2, 4): 0.5}
    for pair, want in cases.items():
        assert lda.npmi([list(pair)], occurs)[0] == pytest.approx(want, abs=1e-12), pair
    # a topic's score is the mean over its pairs: {0,1,4}: (1 + 1/2 + 1/2) / 3
    assert lda.npmi([[0, 1, 4]], occurs)[0] == pytest.approx(2 / 3, abs=1e-12)


def test_topic_diversity():
    assert lda.diversity([[0, 1, 2], [3, 4, 5]]) == 1.0
    assert lda.diversity([[0, 1, 2], [0, 1, 5]]) == pytest.approx(4 / 6)


def test_completion_perplexity_scores_the_second_half_with_theta_from_the_first():
    V = 6
    model = lda.LDA(2, V, random_state=0)
    beta = torch.tensor([[.5, .3, .2, 0, 0, 0], [0, 0, 0, .1, .2, .7]], dtype=torch.float64)
    model.components_.copy_(beta * 1e6 + 1e-9)  # topic_word() ~ beta
    docs = [[0, 1, 0, 2, 1, 0], [3, 5, 5, 4]]
    theta = model.transform(lda.counts([d[:len(d) // 2] for d in docs], V))
    tw = model.topic_word()
    ll = sum(math.log((theta[i] @ tw[:, w]).item()) for i, d in enumerate(docs)
             for w in d[len(d) // 2:])
    want = math.exp(-ll / 5)
    assert lda.completion_perplexity(model, docs, V) == pytest.approx(want, rel=1e-12)
    # by hand: the topics share no word, so each first-half word is all its topic's, gamma =
    # alpha + its count (alpha = 1/2): theta = (3.5, .5) / 4 and (.5, 2.5) / 3
    by_hand = [7 / 8 * .2, 7 / 8 * .3, 7 / 8 * .5, 5 / 6 * .7, 5 / 6 * .2]
    assert want == pytest.approx(math.exp(-sum(map(math.log, by_hand)) / 5), rel=1e-6)


# ----------------------------------------------------------------------------- sample

def test_sample_draws_the_generative_process_reproducibly():
    beta = bars()
    t1, d1 = lda.sample(beta, 0.5, 50, 30, seed=4)
    t2, d2 = lda.sample(beta, 0.5, 50, 30, seed=4)
    _, d3 = lda.sample(beta, 0.5, 50, 30, seed=5)
    assert d1 == d2 and d1 != d3 and np.array_equal(t1, t2)
    assert t1.shape == (50, 10) and np.allclose(t1.sum(1), 1) and all(len(d) == 30 for d in d1)
    # the words' frequencies follow sum_k theta_dk beta_kw
    thetas, docs = lda.sample(beta, 1.0, 400, 200, seed=0)
    got = np.array([np.bincount(d, minlength=25) for d in docs]).sum(0) / (400 * 200)
    np.testing.assert_allclose(got, (thetas @ beta).mean(0), atol=0.004)


def test_vb_recovers_the_ten_bars():
    """Griffiths & Steyvers (2004), Figure 1: documents sampled from ten bar topics; the topics
    batch VB learns back are the bars, each matched to its own learned topic within a small
    total-variation distance. VB finds a local optimum: at this budget (20 passes) seeds 0, 1, 2
    and 4 recover all ten bars, seed 3 does not (two bars share a topic)."""
    _, docs = lda.sample(bars(), 0.5, 500, 100, seed=0)
    X = lda.counts(docs, 25)
    model = lda.LDA(10, 25, doc_topic_prior=0.5, random_state=0)
    for _ in range(20):
        model.em_step(X)
    distance = np.abs(bars()[:, None, :] - model.topic_word().numpy()[None]).sum(-1) / 2
    matched = distance[linear_sum_assignment(distance)]  # each bar its own learned topic
    assert matched.max() < 0.1, matched
    rand = np.random.default_rng(0).dirichlet(np.ones(25), 10)  # random topics: far from them
    d_rand = np.abs(bars()[:, None, :] - rand[None]).sum(-1) / 2
    assert d_rand[linear_sum_assignment(d_rand)].min() > 0.3


# ----------------------------------------------------------------------------- ProdLDA

def test_prodlda_prior_is_the_laplace_approximation_and_training_lowers_its_loss():
    K = 10
    model = lda.ProdLDA(25, K, n_hidden=20, alpha=1.0).double()
    torch.testing.assert_close(model.prior_mu, torch.zeros(K, dtype=torch.float64))
    torch.testing.assert_close(model.prior_var, torch.full((K,), 1 - 2 / K + 1 / K,
                                                           dtype=torch.float64))
    a = lda.ProdLDA(25, 3, alpha=0.5).prior_var
    torch.testing.assert_close(a, torch.full((3,), (1 - 2 / 3) / 0.5 + 3 * 2 / 9))
    _, docs = lda.sample(bars(), 1.0, 200, 40, seed=0)
    X = lda.counts(docs, 25)
    torch.manual_seed(0)
    first = model(X).item()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        optimizer.zero_grad()
        model(X).backward()
        optimizer.step()
    model.eval()
    assert model(X).item() < first - 20
    theta = model.transform(X)
    assert torch.allclose(theta.sum(1), torch.ones(200, dtype=torch.float64))


# ----------------------------------------------------------------------------- the CLI

def test_default_corpus_is_the_stdlib_modules_prose(default_corpus):
    vocab, split = default_corpus
    names = [name for part in split.values() for name, _, _ in part]
    assert len(names) > 400 and "asyncio.events" in names and "json" in names
    assert not any(n.startswith(("encodings", "test.")) for n in names)
    assert {"socket", "thread", "email"} <= set(vocab)
    assert not {"self", "the", "copyright", "license"} & set(vocab)
    assert lda.words("Open a socket_server; self.sendBytes()") == ["open", "socket", "server",
                                                                   "sendbytes"]
    source = '"""Doc words."""\n# Copyright 2001 PSF\n# a comment\nx = "not prose"\n'
    assert lda.prose(source).split("\n") == ["Doc words.", "# a comment"]


def test_cli_trains_saves_logs_and_prints_topics(tmp_path, tiny_file, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    lda.main(["--data", str(tiny_file), "--max-iter", "3", *map(str, TINY)])
    out = capsys.readouterr().out
    assert out.startswith("lda.py: vb, 10 topics") and "held-out completion perplexity" in out
    assert len([line for line in out.splitlines() if line.startswith("pass ")]) == 4
    assert len([line for line in out.splitlines() if line.startswith("topic ")]) == 10
    ckpt = torch.load(tmp_path / "out" / "lda.pt", weights_only=True)
    assert ckpt["script"] == "lda" and ckpt["step"] == 3 and sorted(ckpt["vocab"]) == PIXELS
    records = [json.loads(line) for line in open(tmp_path / "out" / "lda.jsonl")]
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert list(records[0])[:2] == ["step", "seconds"] and "npmi" in records[0]
    # the real command line, once: a fresh interpreter, __main__, exit status 0
    r = run_script("lda.py", "--sample-only", "--prompt", "alpha bravo charlie golf",
                   "--num-samples", 2, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "prompt: 4 known words" in r.stdout and "pass" not in r.stdout
    assert r.stdout.count("-" * 80) == 2


def test_cli_sample_only_prints_the_checkpoints_topic_mixture(tmp_path, tiny_file, monkeypatch,
                                                              capsys):
    monkeypatch.chdir(tmp_path)
    lda.main(["--data", str(tiny_file), "--max-iter", "5", *map(str, TINY)])
    ckpt = torch.load(tmp_path / "out" / "lda.pt", weights_only=True)
    capsys.readouterr()
    lda.main(["--sample-only", "--prompt", "alpha bravo charlie delta echo"])
    lines = capsys.readouterr().out.splitlines()
    model = lda.LDA(10, 25)
    model.load_state_dict(ckpt["model"])
    ids = [ckpt["vocab"].index(w) for w in "alpha bravo charlie delta echo".split()]
    theta = model.transform(lda.counts([ids], 25))[0]
    k = int(theta.argmax())
    assert lines[2].startswith(f"{theta[k]:6.1%} topic {k:2d} |")
    # the first row of the image: its topic's top words are those five
    assert set(lines[2].split("| ")[1].split()[:5]) == set(PIXELS[:5])


def test_cli_sample_only_draws_documents_by_seed(tmp_path, tiny_file, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    lda.main(["--data", str(tiny_file), "--max-iter", "2", *map(str, TINY)])

    def samples(seed):
        capsys.readouterr()
        lda.main(["--sample-only", "--num-samples", "2", "--seed", str(seed)])
        return capsys.readouterr().out.split("-" * 80 + "\n")[1:]

    first = samples(1)
    assert len(first) == 2 and samples(1) == first and samples(2) != first
    lda.main(["--sample-only"])  # no prompt: the topics' top words
    topics = [line for line in capsys.readouterr().out.splitlines() if line.startswith("topic")]
    assert len(topics) == 10 and all(len(line.split("| ")[1].split()) == 10 for line in topics)


@pytest.mark.parametrize("settings", [["--learning-method", "online", "--batch-size", "64"],
                                      ["--model", "prodlda", "--batch-size", "64",
                                       "--n-hidden", "16"]])
def test_cli_ctrl_c_saves_and_resume_reaches_the_same_model(settings, tmp_path, tiny_file,
                                                            monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["--data", str(tiny_file), "--max-iter", "4", *map(str, TINY), *settings]
    lda.main([*args, "--out-dir", "whole"])
    ctrl_c_at_call(monkeypatch, lda, "get_batch", 7)  # mid-pass: 5 minibatches a pass
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        lda.main([*args, "--out-dir", "cut"])
    out = capsys.readouterr().out
    assert exit_.value.code == 130
    step = int(out.split("interrupted at step ")[1].split(";")[0])
    assert torch.load(tmp_path / "cut" / "lda.pt", weights_only=True)["step"] == step == 7
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    lda.main([*args, "--out-dir", "cut", "--resume"])
    assert f"at step {step}\n" in capsys.readouterr().out
    whole, resumed = (torch.load(tmp_path / d / "lda.pt", weights_only=True)
                      for d in ("whole", "cut"))
    assert resumed["step"] == whole["step"] == 20
    for key, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    steps = [json.loads(line)["step"] for line in open(tmp_path / "cut" / "lda.jsonl")]
    assert steps == [0, 5, 10, 15, 20]  # the run the checkpoint holds: appended on resume


def test_cli_non_finite_update_exits_1_and_keeps_the_last_good_checkpoint(tmp_path, tiny_file,
                                                                          monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    e_step, calls = lda.LDA.e_step, []

    def poisoned(self, X, random_init=False, cal_sstats=False):  # NaN at the 4th update
        gamma, sstats = e_step(self, X, random_init, cal_sstats)
        if cal_sstats:
            calls.append(1)
            if len(calls) == 4:
                sstats = sstats * float("nan")
        return gamma, sstats

    monkeypatch.setattr(lda.LDA, "e_step", poisoned)
    with pytest.raises(SystemExit) as exit_:
        lda.main(["--data", str(tiny_file), "--max-iter", "6", "--eval-interval", "2",
                  *map(str, TINY[:2]), "--min-df", "2", "--max-df", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1 and len(err) == 1 and "not finite at step 3" in err[0]
    assert torch.load(tmp_path / "out" / "lda.pt", weights_only=True)["step"] == 2


def test_cli_prodlda_nan_loss_exits_1(tmp_path, tiny_file, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    forward, calls = lda.ProdLDA.forward, []

    def poisoned(self, X):
        calls.append(1)
        return forward(self, X) * (float("nan") if len(calls) == 8 else 1.0)

    monkeypatch.setattr(lda.ProdLDA, "forward", poisoned)
    with pytest.raises(SystemExit) as exit_:
        lda.main(["--data", str(tiny_file), "--model", "prodlda", "--max-iter", "4",
                  "--batch-size", "100", *map(str, TINY)])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "loss is nan at step 7" in err
    assert torch.load(tmp_path / "out" / "lda.pt", weights_only=True)["step"] == 6


def test_cli_refusals(tmp_path, tiny_file, refused):
    m = lda
    refused(m, "--data", "nope.txt", says=["cannot read --data nope.txt", "No such file"])
    (tmp_path / "empty.txt").write_text("\n \n")
    refused(m, "--data", "empty.txt", says=["is empty"])
    (tmp_path / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    refused(m, "--data", "latin1.txt", says=["not UTF-8"])
    (tmp_path / "few.txt").write_text("socket server\nthread lock\n")
    refused(m, "--data", "few.txt", says=["no word is in at least --min-df 5"])
    for flag, value in [("--n-topics", 0), ("--max-df", 1.5), ("--model", "gibbs"),
                        ("--learning-method", "sgd"), ("--lr", 0), ("--dropout", 1)]:
        refused(m, "--data", tiny_file, flag, value, says=[flag])
    refused(m, "--device", "gpu", says=["unknown --device 'gpu'"])
    refused(m, "--sample-only", says=["no checkpoint"])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "lda.pt").write_text("not a checkpoint")
    refused(m, "--sample-only", "--out-dir", "junk", says=["not a readable checkpoint"])
    m.main(["--data", str(tiny_file), "--max-iter", "1", *map(str, TINY)])
    refused(m, "--sample-only", "--n-topics", 20, says=["--n-topics 20 differs from the"
                                                       " checkpoint's 10"])
    refused(m, "--sample-only", "--model", "prodlda", says=["--model prodlda differs"])
    refused(m, "--sample-only", "--prompt", "nothing known here", says=["--prompt has no word"])
    (tmp_path / "other.txt").write_text("socket server thread lock queue\n" * 30)
    refused(m, "--resume", "--data", "other.txt", *TINY, says=["vocabulary differs"])
    refused(m, "--sample-only", "--data", "other.txt", says=["--sample-only needs no --data"])
    # another script's checkpoint where this one looks for its own
    import rnn
    rnn.main(["--data", str(tiny_file), "--max-steps", "1", "--block-size", "8", "--n-hidden",
              "8", "--batch-size", "2", "--eval-steps", "1", "--num-samples", "0",
              "--out-dir", "other"])
    os.replace(tmp_path / "other" / "rnn.pt", tmp_path / "other" / "lda.pt")
    refused(m, "--sample-only", "--out-dir", "other", says=["is a checkpoint of rnn.py"])


@pytest.mark.slow
def test_default_run_prints_readable_topics_of_the_standard_library(tmp_path):
    r = run_script("lda.py", "--prompt", "open a socket and send bytes to the server",
                   cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    topics = [line for line in r.stdout.splitlines() if line.startswith("topic ")]
    assert len(topics) == 20
    npmis = [float(line.split("NPMI ")[1].split()[0]) for line in topics]
    assert np.mean(npmis) > 0.2
    assert any("asyncio" in line for line in topics) and any("email" in line for line in topics)
    assert "% topic" in r.stdout.split("prompt:")[1]


def test_the_model_section_runs_alone_with_the_imports():
    """Copied alone, from its banner to the next with the file's import lines, the model section
    runs: LDA and ProdLDA fit a few documents, and bad arguments raise plain errors."""
    source = open(lda.__file__).read()
    imports = "\n".join(line for line in source.splitlines()
                        if line.startswith(("import ", "from ")))
    start = source.index("# " + "-" * 77 + " model")
    section = source[start:source.index("# " + "-" * 77 + " ", start + 10)]
    body = section.split("\n", 1)[1]  # below the banner: no flags, no refusals
    assert "BadInput" not in body and "require(" not in body and " --" not in body
    namespace = {}
    exec(compile(imports + "\n" + section, "model_section", "exec"), namespace)
    X = torch.from_numpy(small_corpus())
    model = namespace["LDA"](5, 40, random_state=3)
    model.em_step(X)
    reference = lda.LDA(5, 40, random_state=3)
    reference.em_step(X)
    assert torch.equal(model.components_, reference.components_)
    prod = namespace["ProdLDA"](40, 5, n_hidden=8)
    assert torch.isfinite(prod(X.float()))
