"""Seconds per pass of lda.py's variational Bayes against scikit-learn's LatentDirichletAllocation,
same run, same corpus, same settings, same starting topics (the same random_state).

A pass: one batch update over the training documents (E-step and M-step), or, online, one update
per minibatch of --batch-size documents in order. The two are timed alternately, --repeats times
after --warmup, and since both start from the same lambda and make the same updates they stay
in step (the last line prints how far apart their topics are). The corpus: lda.py's default,
one document per standard-library module. Prints the medians and the ratio ours / sklearn's
(goal: at most 1.0). sklearn's one pass is its private _em_step, the step fit() loops over.

    python benchmarks/bench_lda.py [--threads 1] [--repeats 7]
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lda  # noqa: E402


def one_pass(model, X, method, batch_size, ours):
    """Seconds for one pass of `model` (ours: lda.LDA on a tensor; else sklearn's on an array)."""
    D = X.shape[0]
    t0 = time.perf_counter()
    if method == "batch":
        model.em_step(X) if ours else model._em_step(X, total_samples=D, batch_update=True)
    else:
        for i in range(0, D, batch_size):
            if ours:
                model.em_step(X[i:i + batch_size], D)
            else:
                model._em_step(X[i:i + batch_size], total_samples=D, batch_update=False)
    return time.perf_counter() - t0


def main():
    from sklearn.decomposition import LatentDirichletAllocation
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-topics", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch's intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    vocab, split = lda.make_corpus(lda.stdlib_modules(), 5, 0.5)
    X = lda.counts([ids for _, _, ids in split["train"]], len(vocab))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {X.shape[0]} documents,"
          f" {X.shape[1]} words, {int(X.sum()):,} tokens, K={args.n_topics}; median of"
          f" {args.repeats} passes after {args.warmup} warm-up, alternating")
    print(f"{'method':6s} | {'ours s/pass':>11s} | {'sklearn s/pass':>14s} | ratio | topics apart")
    for method in ("batch", "online"):
        ours = lda.LDA(args.n_topics, X.shape[1], random_state=args.seed)
        ref = LatentDirichletAllocation(n_components=args.n_topics, learning_method=method,
                                        batch_size=args.batch_size, random_state=args.seed)
        ref._init_latent_vars(X.shape[1])
        times = {"ours": [], "sklearn": []}
        for i in range(args.warmup + args.repeats):
            for who in ("ours", "sklearn") if i % 2 == 0 else ("sklearn", "ours"):
                t = one_pass(ours if who == "ours" else ref, X if who == "ours" else X.numpy(),
                             method, args.batch_size, who == "ours")
                if i >= args.warmup:
                    times[who].append(t)
        a, b = (statistics.median(times[w]) for w in ("ours", "sklearn"))
        apart = np.abs(ours.components_.numpy() - ref.components_).max() / ref.components_.max()
        print(f"{method:6s} | {a:11.3f} | {b:14.3f} | {a / b:5.2f}x | {apart:.1e}", flush=True)


if __name__ == "__main__":
    main()
