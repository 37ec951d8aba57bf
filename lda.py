"""
lda.py - topics of a corpus: Latent Dirichlet Allocation by variational Bayes, Blei, Ng & Jordan
(2003), "Latent Dirichlet Allocation", JMLR 3; batch and online (Hoffman, Blei & Bach 2010,
"Online Learning for Latent Dirichlet Allocation", NIPS), as scikit-learn does it; and its neural
descendant ProdLDA (Srivastava & Sutton 2017, "Autoencoding Variational Inference for Topic
Models", arXiv:1703.01488). The generative story, K topics over V words, D documents:

    beta_k ~ Dir(eta)   theta_d ~ Dir(alpha)   z_dn ~ Cat(theta_d)   w_dn ~ Cat(beta_{z_dn})

Variational Bayes fits q(beta_k) = Dir(lambda_k), q(theta_d) = Dir(gamma_d), q(z_dn) = Cat(phi_dn).
E-step, each document d on its own until the mean |change| of gamma_d is below a tolerance
(n_dw: the count of word w in d; E[log theta_dk] = psi(gamma_dk) - psi(sum_j gamma_dj)):

    phi_dwk ∝ exp(E[log theta_dk] + E[log beta_kw])      gamma_dk = alpha + sum_w n_dw phi_dwk

M-step, batch: lambda_kw = eta + sum_d n_dw phi_dwk; online, for the t-th minibatch B:
rho_t = (tau_0 + t)^-kappa, lambda <- (1 - rho_t) lambda + rho_t (eta + D/|B| sum_{d in B} ...).
The evidence lower bound is E_q[log p(w, z, theta, beta) - log q]. psi is the fast digamma that
scikit-learn uses (recurrence up to x >= 6, then an asymptotic series), not torch.digamma: it
differs from the exact one by ~1e-8, and with it the tests hold lda.py equal to sklearn's
LatentDirichletAllocation to 1e-12 (measured: ~1e-14), not only ~1e-8.

ProdLDA: an MLP encoder maps a document's counts n_d to a logistic normal, theta = softmax(z),
z ~ N(mu, sigma^2), against a Laplace approximation of the Dir(alpha) prior; the decoder is a
product of experts, p(w | theta) = softmax(BN(theta beta)); trained with autograd on the
negative ELBO, -sum_w n_dw log p(w | theta) + KL(q(z) || N(mu_0, sigma_0^2)).

Run `python lda.py` to fit the Python standard library's topics (one document per module: its
docstrings and comments), then print each topic's top words, NPMI and the packages loading on
it; `--model prodlda` trains ProdLDA instead; `--data docs.txt` fits one document a line;
`--sample-only --prompt "open a socket and send bytes"` prints a text's topic mixture from the
checkpoint in out/ (--help lists every flag).
Shapes: D documents, V words, K topics, N nonzero (document, word) counts, H hidden.
"""

import argparse
import ast
import dataclasses
import json
import math
import os
import re
import signal
import sys
import sysconfig
import time
import tokenize
import warnings
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SCRIPT = "lda"  # written into checkpoints, so that a sibling script refuses this one's


# ----------------------------------------------------------------------------- model

def psi(x):
    """The digamma function as scikit-learn computes it (Bernardo 1976, AS 103): psi(x + 1) =
    psi(x) + 1/x up to x >= 6, then log x - 1/(2x) - 1/(12x^2) + 1/(120x^4) - 1/(252x^6)."""
    steps = x[..., None] + torch.arange(6, dtype=x.dtype, device=x.device)  # x > 1e-6: 6 do
    small = steps < 6  # the terms 1/(x + j) of the recurrence, up to x + j >= 6
    result = -(small / steps).sum(-1)
    y = x + small.sum(-1)
    r = 1 / y
    result = result + torch.log(y) - 0.5 * r
    r = r * r
    result = result - r * ((1 / 12) - r * ((1 / 120) - r * (1 / 252)))
    return torch.where(x <= 1e-6, -0.5772156649015329 - 1 / x, result)  # -euler - 1/x + O(x)


def csr(lengths, cols, values, n_cols):
    """A sparse (CSR) matrix of len(lengths) rows: row i holds the next lengths[i] values, at
    those columns."""
    crow = torch.cat((lengths.new_zeros(1), lengths.cumsum(0)))
    with warnings.catch_warnings():  # torch's note that its sparse tensors are in beta
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, cols, values, (len(lengths), n_cols),
                                       check_invariants=False)


def dirichlet_expectation(a):
    """E[log theta] for theta ~ Dir(a), along the last dimension: psi(a) - psi(sum a)."""
    p = psi(torch.cat((a, a.sum(-1, keepdim=True)), -1))  # one call for both
    return p[..., :-1] - p[..., -1:]


class LDA(nn.Module):
    """Latent Dirichlet Allocation by variational Bayes, batch or online: scikit-learn's
    LatentDirichletAllocation written out, with its names (components_ = lambda (K,V),
    doc_topic_prior = alpha, topic_word_prior = eta, 1/K if None) and its random stream: from the
    same random_state it draws the same lambda_0 and the same initial gammas, and reaches the same
    components_. X is a dense (D,V) tensor of word counts, float64; the E-step reads only its
    nonzero counts, as a sparse matrix."""

    def __init__(self, n_components, n_features, doc_topic_prior=None, topic_word_prior=None,
                 learning_decay=0.7, learning_offset=10.0, mean_change_tol=1e-3,
                 max_doc_update_iter=100, random_state=None):
        super().__init__()
        self.n_components, self.n_features = n_components, n_features
        self.doc_topic_prior = 1 / n_components if doc_topic_prior is None else doc_topic_prior
        self.topic_word_prior = 1 / n_components if topic_word_prior is None else topic_word_prior
        self.learning_decay, self.learning_offset = learning_decay, learning_offset
        self.mean_change_tol, self.max_doc_update_iter = mean_change_tol, max_doc_update_iter
        self.random_state = (random_state if isinstance(random_state, np.random.RandomState)
                             else np.random.RandomState(random_state))
        lam = self.random_state.gamma(100.0, 0.01, (n_components, n_features))
        self.register_buffer("components_", torch.from_numpy(lam))  # (K,V)
        self.register_buffer("n_batch_iter", torch.tensor(1))  # online updates made, plus one

    def e_step(self, X, random_init=False, cal_sstats=False):
        """gamma (D,K) for each document of X, from gamma_0 ~ Gamma(100, 1/100) (random_init) or
        ones, each document iterated until its mean |change| < mean_change_tol; and the
        sufficient statistics sum_d n_dw phi_dwk (K,V) if cal_sstats."""
        D, K = X.shape[0], self.n_components
        if random_init:
            gamma = torch.from_numpy(self.random_state.gamma(100.0, 0.01, (D, K))).to(X)
        else:
            gamma = X.new_ones(D, K)
        exp_beta = dirichlet_expectation(self.components_).exp()  # exp(E[log beta]) (K,V)
        exp_theta = dirichlet_expectation(gamma).exp()  # exp(E[log theta]) (D,K)
        eps = torch.finfo(X.dtype).eps
        # Only the nonzero counts matter: X as a sparse (CSR) matrix of the documents still
        # iterating, rebuilt after each update without those that have stopped.
        d, w = X.nonzero(as_tuple=True)  # (N,) each, document by document
        n, lengths, beta_t = X[d, w], torch.bincount(d, minlength=D), exp_beta.t().contiguous()
        docs, x = torch.arange(D), csr(lengths, w, n, self.n_features)
        for _ in range(self.max_doc_update_iter):
            exp_g, cols = exp_theta[docs], x.col_indices()
            # sum_k exp(E[log theta_dk] + E[log beta_kw]) at each nonzero count: phi's divisor
            norm_phi = torch.sparse.sampled_addmm(x, exp_g, beta_t.t(), beta=0.0).values() + eps
            # gamma_dk = alpha + sum_w n_dw phi_dwk, phi_dwk = exp_g_dk exp_beta_kw / norm_phi_dw
            new = exp_g * (csr(lengths, cols, x.values() / norm_phi, self.n_features) @ beta_t)
            new += self.doc_topic_prior
            going = (new - gamma[docs]).abs().mean(1) >= self.mean_change_tol
            gamma[docs], exp_theta[docs] = new, dirichlet_expectation(new).exp()
            if not going.any():  # the others have converged: they stop here
                break
            keep = going.repeat_interleave(lengths)
            docs, lengths = docs[going], lengths[going]
            x = csr(lengths, cols[keep], x.values()[keep], self.n_features)
        if not cal_sstats:
            return gamma, None
        norm_phi = (exp_theta[d] * beta_t[w]).sum(1) + eps
        sstats = X.new_zeros(self.n_features, K).index_add_(
            0, w, exp_theta[d] * (n / norm_phi)[:, None]).t()  # sum_d n_dw phi_dwk / exp_beta_kw
        return gamma, sstats * exp_beta  # (D,K), (K,V)

    def em_step(self, X, total_samples=None):
        """One E-step on X and one M-step: batch (lambda = eta + sstats) if total_samples is
        None, else online, X a minibatch of a corpus of total_samples documents. Returns lambda's
        update, applied only if finite; a non-finite one raises FloatingPointError."""
        _, sstats = self.e_step(X, random_init=True, cal_sstats=True)
        if total_samples is None:
            lam = self.topic_word_prior + sstats
        else:
            rho = (self.learning_offset + self.n_batch_iter.item()) ** -self.learning_decay
            lam = (self.components_ * (1 - rho)
                   + rho * (self.topic_word_prior + total_samples / X.shape[0] * sstats))
        if not torch.isfinite(lam).all():
            raise FloatingPointError("the topics' update is not finite")
        self.components_.copy_(lam)
        self.n_batch_iter += 1
        return lam

    def transform(self, X):
        """Each document's topic mixture, gamma normalised (D,K)."""
        gamma, _ = self.e_step(X)
        return gamma / gamma.sum(1, keepdim=True)

    def topic_word(self):
        """Each topic's word distribution, lambda normalised (the mean of q(beta)) (K,V)."""
        return self.components_ / self.components_.sum(1, keepdim=True)

    def bound(self, X, gamma, total_samples=None):
        """The evidence lower bound of X's documents under q (sklearn's _approx_bound): its
        documents' terms scaled by total_samples / D if given, as for a minibatch."""
        def loglik(prior, distr, e_log, size):  # E_q[log p(x | prior)] - E_q[log q(x)], summed
            return ((prior - distr) * e_log).sum() + (torch.lgamma(distr) - math.lgamma(prior)
                    ).sum() + (math.lgamma(prior * size) - torch.lgamma(distr.sum(1))).sum()

        e_theta, e_beta = dirichlet_expectation(gamma), dirichlet_expectation(self.components_)
        d, w = X.nonzero(as_tuple=True)
        score = (X[d, w] * torch.logsumexp(e_theta[d] + e_beta.t()[w], dim=1)).sum()
        score = score + loglik(self.doc_topic_prior, gamma, e_theta, self.n_components)
        if total_samples is not None:
            score = score * (total_samples / X.shape[0])
        return score + loglik(self.topic_word_prior, self.components_, e_beta, self.n_features)

    def perplexity(self, X):
        """exp(-bound / words), as sklearn's perplexity: an upper bound on the true one."""
        return torch.exp(-self.bound(X, self.e_step(X)[0]) / X.sum()).item()


class ProdLDA(nn.Module):
    """ProdLDA: an encoder from counts (B,V) to a logistic normal over K topics, a product-of-
    experts decoder softmax(BN(theta beta)) over the V words. alpha, the Dirichlet prior the
    Gaussian prior approximates (Laplace: mu_0 = log alpha - mean log alpha, sigma_0^2 =
    (1 - 2/K)/alpha + sum(1/alpha)/K^2)."""

    def __init__(self, n_features, n_components, n_hidden=100, alpha=1.0, dropout=0.2):
        super().__init__()
        K = n_components
        self.fc1, self.fc2 = nn.Linear(n_features, n_hidden), nn.Linear(n_hidden, n_hidden)
        self.mu, self.logvar = nn.Linear(n_hidden, K), nn.Linear(n_hidden, K)
        self.bn_mu, self.bn_logvar = (nn.BatchNorm1d(K, affine=False) for _ in range(2))
        self.beta = nn.Parameter(torch.empty(K, n_features))  # the experts' log-weights
        nn.init.xavier_uniform_(self.beta)
        self.bn_beta = nn.BatchNorm1d(n_features, affine=False)
        self.drop = nn.Dropout(dropout)
        a = torch.full((K,), float(alpha))
        self.register_buffer("prior_mu", a.log() - a.log().mean())
        self.register_buffer("prior_var", (1 - 2 / K) / a + (1 / a).sum() / K ** 2)

    def encode(self, X):
        """q(z | x) = N(mu, sigma^2): mu, log sigma^2 (B,K)."""
        h = self.drop(F.softplus(self.fc2(F.softplus(self.fc1(X)))))
        return self.bn_mu(self.mu(h)), self.bn_logvar(self.logvar(h))

    def log_probs(self, theta):
        """log p(w | theta) (B,V): the product of the topics' experts, normalised."""
        return F.log_softmax(self.bn_beta(self.drop(theta) @ self.beta), dim=1)

    def transform(self, X):
        """Each document's topic mixture: softmax of q's mean (B,K)."""
        return F.softmax(self.encode(X)[0], dim=1)

    def topic_word(self):
        """Each topic's word distribution on its own, softmax(beta_k) (K,V)."""
        return F.softmax(self.beta, dim=1)

    def forward(self, X):
        """The negative ELBO of each document of X (B,), averaged: reconstruction + KL."""
        mu, logvar = self.encode(X)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # reparameterised
        nll = -(X * self.log_probs(F.softmax(z, dim=1))).sum(1)
        var = logvar.exp()
        kl = 0.5 * ((var / self.prior_var + (mu - self.prior_mu) ** 2 / self.prior_var
                     + self.prior_var.log() - logvar).sum(1) - mu.shape[1])
        return (nll + kl).mean()


# ----------------------------------------------------------------------------- data

SKIP = ("site-packages", "test", "tests", "idle_test", "encodings")  # left out of the default
LICENCE = re.compile(r"copyright|licen[cs]e|rights reserved|warrant|permission is hereby", re.I)
STOP = set("""a about above after again against all also although always am an and another any
are aren around as at available be because been before being below between both but by can
cannot could did do does doing don done down during each either else enough etc even ever every
few for from further get gets getting given gives had has have having he her here hers how however
i if in into is isn it its itself just least less let like likely made make makes many may me
might more most much must my need needed needs neither never no nor not now of off often on once
one only or other others otherwise our out over own per perhaps please possible probably put
rather really same see seems several shall she should since so some something still such than
that the their them then there these they this those though through thus to too two under unless
until up upon us use used uses using very via was way we well were what whatever when where
whether which while who whom whose why will with within without would yet you your xxx todo xxx
self cls def return returns none true false args kwargs str int bool float dict list tuple obj
object class function method module value values arg argument arguments default new call called
file name set note first second e g ie eg""".split())
HELD_OUT = 10  # one document in HELD_OUT (by a hash of its name) is held out


def words(text):
    """A text's terms: runs of 3+ letters, lowercased (snake_case splits), stop words out."""
    return [t for t in re.findall(r"[a-z]{3,}", text.lower()) if t not in STOP]


def prose(source):
    """The docstrings and comments of a Python source, licence lines left out."""
    parts = []
    try:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                parts.append(ast.get_docstring(node) or "")
        lines = iter(source.splitlines(keepends=True))
        parts += [t.string for t in tokenize.generate_tokens(lambda: next(lines, ""))
                  if t.type == tokenize.COMMENT]
    except (SyntaxError, tokenize.TokenError, ValueError):
        return ""
    return "\n".join(line for part in parts for line in part.splitlines()
                     if not LICENCE.search(line))


def stdlib_modules():
    """The default corpus, on every machine with Python: (module, package, text) for each .py
    file of the standard library (tests, encodings and site-packages left out), sorted."""
    root = sysconfig.get_paths()["stdlib"]
    paths = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in SKIP]
        paths += [os.path.join(folder, f) for f in files if f.endswith(".py")]
    docs = []
    for path in sorted(paths, key=lambda p: p.split(os.sep)):
        with open(path, encoding="utf-8", errors="replace") as f:
            source = f.read()
        rel = os.path.relpath(path, root)[:-3].split(os.sep)
        name = ".".join(rel[:-1] if rel[-1] == "__init__" else rel)
        docs.append((name, name.split(".")[0], prose(source)))
    return docs


def read_lines(path):
    """(line N, line N, text) of each non-blank line of the UTF-8 file at `path`."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        raise BadInput(f"cannot read --data {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise BadInput(f"--data {path} is not UTF-8 text (bad byte at offset {e.start})") from None
    docs = [(f"line {i}", f"line {i}", line) for i, line in enumerate(text.splitlines(), 1)
            if line.strip()]
    require(docs, f"--data {path} is empty")
    return docs


def make_corpus(docs, min_df, max_df):
    """Documents (name, group, text) -> the vocabulary of words in at least min_df and at most
    max_df (a fraction) of the training documents, and each split's documents as word ids in
    text order; one document in HELD_OUT held out, those with under 2 known words dropped."""
    tokens = [(name, group, words(text)) for name, group, text in docs]
    held = [zlib.crc32(name.encode()) % HELD_OUT == 0 for name, _, _ in tokens]
    df = {}
    for (_, _, ws), h in zip(tokens, held):
        if not h:
            for t in set(ws):
                df[t] = df.get(t, 0) + 1
    n_train = held.count(False)
    vocab = sorted(t for t, n in df.items() if min_df <= n <= max_df * n_train)
    require(vocab, f"no word is in at least --min-df {min_df} and at most --max-df {max_df} of"
            f" the {n_train} training documents; give more documents or a smaller --min-df")
    index = {t: i for i, t in enumerate(vocab)}
    split = {"train": [], "held_out": []}
    for (name, group, ws), h in zip(tokens, held):
        ids = [index[t] for t in ws if t in index]
        if len(ids) >= 2:
            split["held_out" if h else "train"].append((name, group, ids))
    require(split["train"] and split["held_out"], f"{len(split['train'])} training and"
            f" {len(split['held_out'])} held-out documents have 2 known words; need one of each")
    return vocab, split


def counts(docs, V, dtype=torch.float64):
    """Word-id lists -> the (D,V) matrix of counts."""
    X = torch.zeros(len(docs), V, dtype=dtype)
    for i, ids in enumerate(docs):
        X[i].index_add_(0, torch.tensor(ids, dtype=torch.long), torch.ones(len(ids), dtype=dtype))
    return X


def get_batch(X, step, cfg):
    """The documents of training step `step`: all of them (batch VB), the next minibatch in
    order (online VB, as sklearn), or a random minibatch (ProdLDA)."""
    if cfg.model == "vb" and cfg.learning_method == "batch":
        return X
    if cfg.model == "vb":
        i = step % steps_per_pass(len(X), cfg) * cfg.batch_size
        return X[i:i + cfg.batch_size]
    return X[torch.randperm(len(X))[:cfg.batch_size]]


def steps_per_pass(D, cfg):
    return 1 if cfg.model == "vb" and cfg.learning_method == "batch" else -(-D // cfg.batch_size)


# ----------------------------------------------------------------------------- train

def completion_perplexity(model, docs, V):
    """Held-out perplexity by document completion (Wallach et al. 2009): each document's topic
    mixture theta inferred from its first half, its second half scored by p(w) = sum_k theta_k
    beta_kw (ProdLDA: its decoder's p(w | theta)); exp(-log-likelihood / words scored)."""
    model.eval()
    with torch.no_grad():
        like = model.components_ if isinstance(model, LDA) else model.beta
        first, second = (counts(half, V, like.dtype).to(like.device) for half in (
            [ids[:len(ids) // 2] for ids in docs], [ids[len(ids) // 2:] for ids in docs]))
        theta = model.transform(first)
        if isinstance(model, LDA):
            log_p = torch.log(theta @ model.topic_word())
        else:
            log_p = model.log_probs(theta)
        ll = (second * log_p).sum()
    model.train()
    return torch.exp(-ll / second.sum()).item()


def npmi(top, occurs):
    """NPMI coherence of each topic's top words (Lau et al. 2014), from document co-occurrence:
    the mean over pairs i < j of log(P(i,j) / (P(i) P(j))) / -log P(i,j), where P is the share of
    documents holding the words; a pair that never co-occurs scores 0 (and one always together,
    1). top (K,n) word ids, occurs (D,V) booleans. Returns (K,) numpy."""
    occurs = torch.as_tensor(occurs, dtype=torch.float64)
    D = occurs.shape[0]
    scores = []
    for ids in torch.as_tensor(np.asarray(top)):
        o = occurs[:, ids]  # (D,n)
        p, pj = o.mean(0), (o.t() @ o) / D  # P(i), P(i,j)
        i, j = torch.triu_indices(len(ids), len(ids), 1)
        pij, pi, pjj = pj[i, j], p[i], p[j]
        score = torch.where(pij == 1, 1.0, torch.log(pij / (pi * pjj)) / -torch.log(pij))
        scores.append(torch.where(pij > 0, score, 0.0).mean().item())
    return np.array(scores)


def diversity(top):
    """Topic diversity (Dieng et al. 2020): the share of distinct words among all topics' top
    words (1: no two topics share one)."""
    top = np.asarray(top)
    return len(np.unique(top)) / top.size


def top_words(topic_word, n=10):
    """Each topic's n likeliest word ids (K,n)."""
    return torch.topk(topic_word, n, dim=1).indices.numpy()


def evaluate(model, data, cfg):
    """The numbers logged at each evaluation: document-completion perplexity on the held-out
    documents, the mean NPMI of the topics' top 10 words, topic diversity (top 25)."""
    tw = model.topic_word().detach().cpu()
    out = {"held_out_perplexity": completion_perplexity(model, data["held_out"], data["V"]),
           "npmi": float(npmi(top_words(tw), data["occurs"]).mean()),
           "diversity": diversity(top_words(tw, 25))}
    if isinstance(model, LDA):
        out["train_perplexity_bound"] = model.perplexity(data["train"])
    return out


def train(model, optimizer, data, cfg, step=0, save=lambda step: None, log=lambda record: None):
    """Fit the model from `step` to max_iter passes over data["train"] (D,V): VB by em_step,
    ProdLDA by Adam on its loss. At step 0, every eval_interval passes and at the end: evaluate,
    print, log(record), save(step). Ctrl-C saves and raises KeyboardInterrupt; a non-finite update
    or loss raises FloatingPointError before it can reach the weights. Returns the last record."""
    X, per_pass = data["train"], steps_per_pass(len(data["train"]), cfg)
    max_steps, every = cfg.max_iter * per_pass, cfg.eval_interval * per_pass
    start, t0 = step, time.time()

    def report(step):
        metrics = evaluate(model, data, cfg)
        seconds = time.time() - t0
        record = {"step": step, "seconds": seconds, "pass": step / per_pass, **metrics}
        eta = seconds / (step - start) * (max_steps - step) if step > start else 0
        bound = record.get("train_perplexity_bound")
        print(f"pass {step / per_pass:5.1f} | " + (f"train perplexity (bound) {bound:8.1f} | "
              if bound else "") + f"held-out completion perplexity"
              f" {record['held_out_perplexity']:8.1f} | NPMI {record['npmi']:.3f} | diversity"
              f" {record['diversity']:.2f} | {seconds:4.0f}s elapsed, ETA {eta:4.0f}s", flush=True)
        log(record)
        save(step)
        return record

    stop = []  # Ctrl-C lands here; the loop ends at the next step boundary, weights consistent
    handler = signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    try:
        record = report(step) if step == 0 else {}
        while step < max_steps:
            if stop:
                save(step)
                print(f"interrupted at step {step}; saved", flush=True)
                raise KeyboardInterrupt
            batch = get_batch(X, step, cfg)
            if isinstance(model, LDA):
                try:
                    model.em_step(batch, None if cfg.learning_method == "batch" else len(X))
                except FloatingPointError as e:
                    raise FloatingPointError(f"{e} at step {step}; stopped, the last good"
                                             " checkpoint is kept") from None
            else:
                loss = model(batch)
                if not torch.isfinite(loss):  # checked before backward: it never reaches weights
                    raise FloatingPointError(f"loss is {loss.item()} at step {step}; stopped, the"
                                             " last good checkpoint is kept")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            step += 1
            if step % every == 0 or step == max_steps:
                record = report(step)
    finally:
        signal.signal(signal.SIGINT, handler)
    return record


# ----------------------------------------------------------------------------- sample

def sample(topic_word, alpha, n_docs, doc_length, seed=0):
    """Documents drawn by LDA's generative process from topics (K,V): theta_d ~ Dir(alpha),
    then for each of doc_length words z ~ Cat(theta_d), w ~ Cat(topic_word[z]). Returns thetas
    (n_docs,K) and the documents as word-id lists; the same seed, the same documents."""
    rng = np.random.default_rng(seed)
    beta = np.asarray(topic_word, dtype=np.float64)
    beta = beta / beta.sum(1, keepdims=True)
    K, V = beta.shape
    thetas = rng.dirichlet(np.full(K, float(alpha)), n_docs)
    docs = []
    for theta in thetas:
        z = rng.choice(K, doc_length, p=theta)
        docs.append([int(rng.choice(V, p=beta[k])) for k in z])
    return thetas, docs


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
    data: str = arg("", "UTF-8 text file, one document a line; empty: the Python standard"
                        " library's modules (docstrings and comments)")
    min_df: int = arg(5, "keep words in at least this many training documents", "positive")
    max_df: float = arg(0.5, "and in at most this share of them", "positive")
    # model
    model: str = arg("vb", "vb: LDA by variational Bayes; prodlda: ProdLDA, trained by autograd")
    n_topics: int = arg(20, "topics K", "positive")
    alpha: float = arg(0.0, "Dirichlet prior of the topic mixtures (0: 1/K as sklearn; ProdLDA:"
                            " 1)", "non-negative")
    eta: float = arg(0.0, "Dirichlet prior of the topics' words (0: 1/K as sklearn)",
                     "non-negative")
    n_hidden: int = arg(100, "ProdLDA: width of the encoder's two layers", "positive")
    # optimization
    learning_method: str = arg("batch", "VB: batch (one update a pass) or online (a minibatch"
                                        " at a time)")
    learning_decay: float = arg(0.7, "online VB: kappa in rho_t = (tau_0 + t)^-kappa", "positive")
    learning_offset: float = arg(10.0, "online VB: tau_0", "non-negative")
    mean_change_tol: float = arg(1e-3, "E-step: a document stops when its mean |change| of gamma"
                                       " is below this", "positive")
    max_doc_update_iter: int = arg(100, "E-step: at most this many updates a document",
                                   "positive")
    batch_size: int = arg(128, "documents a minibatch (online VB, ProdLDA)", "positive")
    lr: float = arg(2e-3, "ProdLDA: Adam learning rate", "positive")
    dropout: float = arg(0.2, "ProdLDA: dropout in training", "non-negative")
    max_iter: int = arg(0, "passes over the training documents (0: 10 for vb, 200 for prodlda)",
                        "non-negative")
    eval_interval: int = arg(5, "passes between evaluations and checkpoints", "positive")
    # system
    device: str = arg("", "cpu, cuda, mps, ...; empty: the best one available")
    seed: int = arg(1337, "seed for the initial topics, E-step starts, batches and sampling")
    out_dir: str = arg("out", "where the checkpoint <script>.pt goes")
    resume: bool = arg(False, "continue training from the checkpoint in --out-dir")
    sample_only: bool = arg(False, "use the checkpoint in --out-dir without training")
    # sampling
    prompt: str = arg("", "a text whose topic mixture is printed")
    num_samples: int = arg(0, "documents sampled from the topics and printed", "non-negative")
    max_new_tokens: int = arg(20, "words per sampled document", "positive")
    num_words: int = arg(10, "words shown per topic", "positive")

    def __post_init__(self):  # refuse impossible values before any work is done
        for f in dataclasses.fields(self):
            value, rule = getattr(self, f.name), f.metadata["must_be"]
            if rule:
                ok = value > 0 if rule == "positive" else value >= 0
                require(ok, f"{flag(f.name)} must be {rule}, got {value}")
        require(self.model in ("vb", "prodlda"), f"--model must be vb or prodlda, got"
                f" {self.model!r}")
        require(self.learning_method in ("batch", "online"), "--learning-method must be batch"
                f" or online, got {self.learning_method!r}")
        require(self.max_df <= 1, f"--max-df is a share of the documents, at most 1, got"
                f" {self.max_df}")
        require(self.dropout < 1, f"--dropout must be below 1, got {self.dropout}")
        self.max_iter = self.max_iter or (10 if self.model == "vb" else 200)


MODEL_ARGS = ("model", "n_topics", "n_hidden")  # what a checkpoint fixes


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


def numpy_state(rs):
    """A numpy RandomState's state as tensors and numbers, which torch.load(weights_only) reads."""
    _, keys, pos, has_gauss, gauss = rs.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
            "gauss": gauss}


def set_numpy_state(rs, state):
    rs.set_state(("MT19937", state["keys"].numpy().astype(np.uint32), state["pos"],
                  state["has_gauss"], state["gauss"]))


def build(cfg, V):
    """The model cfg asks for, over V words."""
    if cfg.model == "vb":
        return LDA(cfg.n_topics, V, cfg.alpha or None, cfg.eta or None, cfg.learning_decay,
                   cfg.learning_offset, cfg.mean_change_tol, cfg.max_doc_update_iter, cfg.seed)
    return ProdLDA(V, cfg.n_topics, cfg.n_hidden, cfg.alpha or 1.0, cfg.dropout)


@torch.no_grad()
def show_topics(model, vocab, data, num_words):
    """Each topic: its NPMI, top words and (where the data has them) the groups of documents
    (packages) holding most of its words."""
    tw = model.topic_word().detach().cpu()
    top = top_words(tw, num_words)
    scores = npmi(top_words(tw), data["occurs"])
    shown = ""
    if data.get("groups"):
        X = data["train"]
        theta = (model.transform(X) * X.sum(1, keepdim=True)).detach().cpu()  # topics' words
        groups = sorted(set(data["groups"]))
        g = torch.tensor([groups.index(x) for x in data["groups"]])
        load = torch.zeros(len(groups), theta.shape[1], dtype=theta.dtype).index_add_(0, g, theta)
    for k in range(len(top)):
        if data.get("groups"):
            shown = " | " + ", ".join(groups[i] for i in torch.topk(load[:, k], 3).indices)
        print(f"topic {k:2d} | NPMI {scores[k]:+.3f} | {' '.join(vocab[i] for i in top[k])}"
              + shown)
    return scores


def run(cfg, given=frozenset()):
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    path = os.path.join(cfg.out_dir, f"{SCRIPT}.pt")
    ckpt = load_checkpoint(path, cfg, given) if cfg.resume or cfg.sample_only else None
    if cfg.sample_only:
        require(not cfg.data or cfg.data == ckpt["config"]["data"], f"--data {cfg.data} is not"
                f" the text {path} was trained on; --sample-only needs no --data")
        vocab = ckpt["vocab"]
        cfg = dataclasses.replace(cfg, **{k: ckpt["config"][k] for k in ("alpha", "eta")})
    else:
        docs = read_lines(cfg.data) if cfg.data else stdlib_modules()
        vocab, split = make_corpus(docs, cfg.min_df, cfg.max_df)
        if ckpt:
            trained_on = ckpt["config"]["data"] or "the default"
            require(ckpt["vocab"] == vocab, "this data's vocabulary differs from the checkpoint's;"
                    f" resume on the data it was trained on ({trained_on})")
        X = counts([ids for _, _, ids in split["train"]], len(vocab))
        everything = [ids for part in split.values() for _, _, ids in part]
        data = {"train": (X if cfg.model == "vb" else X.float()).to(device), "V": len(vocab),
                "held_out": [ids for _, _, ids in split["held_out"]],
                "occurs": counts(everything, len(vocab)) > 0,
                "groups": [g for _, g, _ in split["train"]] if not cfg.data else None}
    model = build(cfg, len(vocab)).to(device)
    optimizer = (torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.99, 0.999))
                 if cfg.model == "prodlda" else None)
    step = 0
    if ckpt:
        model.load_state_dict(ckpt["model"])
        if optimizer:
            optimizer.load_state_dict(ckpt["optimizer"])
        step = ckpt["step"]
        if not cfg.sample_only:  # --resume goes on with the same draws; sampling draws by --seed
            set_rng_states(ckpt["rng"], device)
            if cfg.model == "vb":
                set_numpy_state(model.random_state, ckpt["rng"]["numpy"])
    n_params = sum(t.numel() for t in model.state_dict().values())
    print(f"{SCRIPT}.py: {cfg.model}, {cfg.n_topics} topics, {n_params / 1e6:.2f}M parameters,"
          f" vocabulary {len(vocab):,}")
    if not cfg.sample_only:
        print(f"data: {len(split['train']):,} train / {len(split['held_out']):,} held-out"
              f" documents, {int(X.sum()):,} training words")
        if cfg.resume:
            print(f"resuming from {path} at step {step}")

        def save(step):
            rng = rng_states(device)
            if cfg.model == "vb":
                rng["numpy"] = numpy_state(model.random_state)
            save_checkpoint(path, {"script": SCRIPT, "config": dataclasses.asdict(cfg),
                                   "vocab": vocab, "step": step, "model": model.state_dict(),
                                   "optimizer": optimizer.state_dict() if optimizer else {},
                                   "rng": rng})

        log = open_metrics(os.path.join(cfg.out_dir, f"{SCRIPT}.jsonl"), cfg.resume)
        train(model, optimizer, data, cfg, step, save, log)
        model.eval()
        show_topics(model, vocab, data, cfg.num_words)
    model.eval()
    if cfg.sample_only and not cfg.prompt:  # what the checkpoint learned: its topics' words
        for k, top in enumerate(top_words(model.topic_word().detach().cpu(), cfg.num_words)):
            print(f"topic {k:2d} | {' '.join(vocab[i] for i in top)}")
    if cfg.prompt:
        index = {t: i for i, t in enumerate(vocab)}
        ids = [index[t] for t in words(cfg.prompt) if t in index]
        require(ids, "--prompt has no word of the vocabulary; try a longer text")
        dtype = torch.float64 if cfg.model == "vb" else torch.float32
        theta = model.transform(counts([ids], len(vocab), dtype).to(device))[0].detach().cpu()
        top = top_words(model.topic_word().detach().cpu(), 6)
        print(f"prompt: {len(ids)} known words: {' '.join(vocab[i] for i in ids[:20])}")
        for k in torch.argsort(theta, descending=True)[:5].tolist():
            print(f"{theta[k]:6.1%} topic {k:2d} | {' '.join(vocab[i] for i in top[k])}")
    alpha = cfg.alpha or (1 / cfg.n_topics if cfg.model == "vb" else 1.0)
    _, sampled = sample(model.topic_word().detach().cpu(), alpha, cfg.num_samples,
                        cfg.max_new_tokens, cfg.seed)
    for doc in sampled:
        print("-" * 80)
        print(" ".join(vocab[i] for i in doc))


if __name__ == "__main__":
    main()
