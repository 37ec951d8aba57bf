"""word2vec.py against gensim's Word2Vec: same corpus, same tokens, same hyperparameters, one run.

Corpus: a prefix of ../shared/data/word2vec/enwiki_wikiextractor_sample.txt.gz, <doc> lines
dropped, lowercased, split into runs of letters, one paragraph a line; both tools read the
same prepared file (a line is a sentence for both). Hyperparameters: skip-gram, dim 100,
window 5, negative 5, sample 1e-3, min-count 5, 5 epochs (gensim: workers=2; word2vec.py:
one run per --batch-size and --workers given). All sets of vectors are scored by word2vec.py's
evaluation (analogies: top-1 among the 30000 most frequent words, 3CosAdd; WordSim353:
Spearman), gensim's put into word2vec.py's vocabulary order first so that both answer the same
questions; gensim's own analogy evaluation of its vectors is printed as a cross-check.
words/s = in-vocabulary corpus words x epochs / training seconds (vocabulary building excluded
for both). --words 100000000 (more than the sample holds) takes all of it: 9,225,568 words.

gensim is not a requirement of the project: install it for this script only
(`pip install gensim`). On a quiet machine:
    python benchmarks/bench_word2vec.py --words 100000000 --workers 2 1
"""
import argparse
import gzip
import os
import re
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import word2vec as w2v  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "shared", "data", "word2vec")
LETTERS = re.compile(r"[^\W\d_]+")


def prepare(words, path):
    """The first `words` words of the wiki sample, as described above, written to `path`."""
    n = 0
    with gzip.open(os.path.join(DATA, "enwiki_wikiextractor_sample.txt.gz"), "rt",
                   encoding="utf-8") as f, open(path, "w", encoding="utf-8") as out:
        for line in f:
            if line.startswith("<doc") or line.startswith("</doc>"):
                continue
            tokens = LETTERS.findall(line.lower())
            if tokens:
                out.write(" ".join(tokens) + "\n")
                n += len(tokens)
                if n >= words:
                    break
    return n


def evaluate(model, stoi):
    sections = w2v.evaluate_analogies(model, os.path.join(DATA, "questions-words.txt"), stoi)
    summary = w2v.analogy_summary(sections)
    rho, used, total = w2v.evaluate_similarity(model, os.path.join(DATA, "wordsim353.tsv"), stoi)
    return summary, (rho, used, total)


def vocabulary(path, cfg):
    """word2vec.py's vocabulary of the prepared file: (sentences, itos, counts, stoi)."""
    sentences = w2v.tokenize(w2v.load_text(path))
    itos, counts = w2v.build_vocab(sentences, cfg.min_count)
    return sentences, itos, counts, {w: i for i, w in enumerate(itos)}


def run_ours(path, cfg):
    sentences, itos, counts, stoi = vocabulary(path, cfg)
    corpus = w2v.encode(sentences, stoi)
    torch.manual_seed(cfg.seed)
    model = w2v.Word2Vec(len(itos), cfg.dim)
    t0 = time.time()
    w2v.train(model, corpus, counts, cfg)
    seconds = time.time() - t0
    return model, stoi, len(corpus[0]) * cfg.epochs / seconds, seconds


def run_gensim(path, cfg):
    from gensim.models import Word2Vec
    from gensim.models.word2vec import LineSentence
    model = Word2Vec(vector_size=cfg.dim, window=cfg.window, negative=cfg.negative,
                     sample=cfg.sample, min_count=cfg.min_count, sg=0 if cfg.cbow else 1,
                     workers=2, seed=cfg.seed)
    sentences = LineSentence(path)
    model.build_vocab(sentences)
    t0 = time.time()
    model.train(sentences, total_examples=model.corpus_count, epochs=cfg.epochs)
    seconds = time.time() - t0
    kv = model.wv
    words = sum(kv.get_vecattr(w, "count") for w in kv.index_to_key)
    own, _ = kv.evaluate_word_analogies(os.path.join(DATA, "questions-words.txt"),
                                        restrict_vocab=30000, case_insensitive=True)
    # gensim's vectors in word2vec.py's vocabulary order, so that both are asked the same
    # questions among the same 30000 words (the two orders differ only among words of equal
    # count, but that moves a few hundred questions in or out of the restricted set)
    _, itos, _, stoi = vocabulary(path, cfg)
    if sorted(itos) != sorted(kv.index_to_key):
        sys.exit("bench_word2vec.py: gensim's vocabulary is not word2vec.py's")
    ours = w2v.Word2Vec(len(itos), cfg.dim)
    with torch.no_grad():
        ours.emb_in.weight.copy_(torch.from_numpy(kv[itos]))
    return ours, stoi, words * cfg.epochs / seconds, seconds, own


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words", type=int, default=2_000_000, help="corpus prefix, in words")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[w2v.Config.batch_size],
                        help="one word2vec.py run per batch size and --workers, all in one run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="word2vec.py's --workers (Hogwild threads)")
    parser.add_argument("--work", default="/tmp/bench_word2vec", help="where the corpus goes")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    path = os.path.join(args.work, f"wiki_{args.words}.txt")
    n = prepare(args.words, path)
    cfg = w2v.Config(data=path, dim=100, window=5, negative=5, sample=1e-3, min_count=5,
                     epochs=5, eval_interval=10 ** 9)
    print(f"corpus: {n:,} words of the wiki sample; skip-gram, dim 100, window 5, negative 5,"
          f" sample 1e-3, min-count 5, 5 epochs; torch threads {torch.get_num_threads()},"
          f" gensim workers 2", flush=True)
    rows = []
    g_model, g_stoi, g_wps, g_sec, g_own = run_gensim(path, cfg)
    rows.append(("gensim Word2Vec", g_model, g_stoi, g_wps, g_sec))
    print(f"gensim done in {g_sec:.0f}s; its own analogy score: {100 * g_own:.1f}%", flush=True)
    for batch_size in args.batch_size:
        for workers in args.workers:
            cfg.batch_size, cfg.workers = batch_size, workers
            o_model, o_stoi, o_wps, o_sec = run_ours(path, cfg)
            rows.append((f"word2vec.py (batch {batch_size}, workers {workers})", o_model, o_stoi,
                         o_wps, o_sec))
    print("| | analogy semantic | syntactic | total | coverage | WordSim353 Spearman (pairs)"
          " | words/s | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, model, stoi, wps, sec in rows:
        summary, (rho, used, total) = evaluate(model, stoi)
        acc = {k: 100 * c / max(a, 1) for k, (c, a, _) in summary.items()}
        cov = 100 * summary["total"][1] / max(summary["total"][2], 1)
        print(f"| {name} | {acc['semantic']:.1f}% | {acc['syntactic']:.1f}% | {acc['total']:.1f}%"
              f" | {cov:.1f}% | {rho:.3f} ({used}/{total}) | {wps / 1e3:.0f}k | {sec:.0f} |")
    for name, _, _, wps, _ in rows[1:]:
        print(f"{name} / gensim words/s: {wps / g_wps:.2f}")


if __name__ == "__main__":
    main()
