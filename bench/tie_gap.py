"""How many documents the fp32 rescoring of near ties costs, and the agreement it buys, per gap.

    .venv/bin/python bench/tie_gap.py [--shapes short,mixed,long] [--queries 60] [--gaps 0,1e-4,2e-4,5e-4,1e-3]
        [--models-dir DIR]

A version as `bench/serving_latency.py` writes it (`--models-dir`: one it wrote, else a new one, the
openvino and onnx variants built beside it). Each of `--queries` held-out queries against 20
candidates, per text shape, scored once by the onnx variant (fp32's scores to 6e-8: the reference) and
once by the openvino variant in bf16 without its rescoring; then, per gap, the near ties of the bf16
scores (`eduranker.pipeline.scoring.near_ties`, the first 10 of the ranking and the one below) are
given their fp32 scores, as serving does. Printed per gap: documents rescored per request, NDCG@10 and
ROC-AUC against the reference's, and the share of queries with the reference's top-10 order.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import packages_corpus  # noqa: E402
import serving_latency  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="short,mixed,long")
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--gaps", default="0,1e-4,2e-4,5e-4,1e-3")
    parser.add_argument("--models-dir", help="a folder bench/serving_latency.py wrote (versions/v0001)")
    args = parser.parse_args()

    import torch
    from sklearn.metrics import roc_auc_score

    from eduranker.pipeline.evaluation import ndcg_at_k
    from eduranker.pipeline.scoring import near_ties
    from eduranker.serving.loaded import load_checked

    torch.set_num_threads(1)
    corpus = packages_corpus.build(per_query=50, hard=30, seed=0)
    names = [p.name for p in corpus.packages]
    random.Random(0).shuffle(names)
    train, held = names[:40], names[40:]  # as serving_latency's default --train-pairs 320
    if args.models_dir:
        models = Path(args.models_dir)
    else:
        models = Path(tempfile.mkdtemp(prefix="tie-gap-"))
        options = argparse.Namespace(train_pairs=320, max_length=256, variants="onnx,openvino", interleaved=None)
        serving_latency.write_version(models, corpus, train, options)
    folder, cpu = models / "versions" / "v0001", torch.device("cpu")
    reference = load_checked(folder, "v0001", cpu, 256, 8, "onnx")
    bf16 = dataclasses.replace(load_checked(folder, "v0001", cpu, 256, 8, "openvino"), exact=None)
    print(f"reference served as {reference.variant}, bf16 side as {bf16.variant} ({bf16.model.precision})")
    for shape in args.shapes.split(","):
        requests = serving_latency.requests_for(held[: args.queries], corpus, 20, shape)
        exact = [reference.score(q, d) for q, d, _ in requests]
        rough = [bf16.score(q, d) for q, d, _ in requests]
        labels = [np.asarray(y) for _, _, y in requests]
        pairs = zip(exact, labels, strict=True)
        ndcg = float(np.mean([ndcg_at_k(y[np.argsort(-s, kind="stable")], 10) for s, y in pairs]))
        auc = float(roc_auc_score(np.concatenate(labels), np.concatenate(exact)))
        for gap in [float(g) for g in args.gaps.split(",")]:
            fixed, rescored = [], 0
            for e, r in zip(exact, rough, strict=True):
                ties = near_ties(r, gap, 10) if gap > 0 else np.zeros(0, dtype=np.int64)
                r = r.copy()
                r[ties] = e[ties]
                rescored += ties.size
                fixed.append(r)
            same = np.mean([list(np.argsort(-f, kind="stable")[:10]) == list(np.argsort(-e, kind="stable")[:10])
                            for f, e in zip(fixed, exact, strict=True)])  # fmt: skip
            nd = np.mean([ndcg_at_k(y[np.argsort(-f, kind="stable")], 10) for f, y in zip(fixed, labels, strict=True)])
            au = roc_auc_score(np.concatenate(labels), np.concatenate(fixed))
            print(f"{shape:<6} gap {gap:7.1e}: rescored {rescored / len(requests):4.1f} of 20 a request   "
                  f"NDCG@10 {nd - ndcg:+.4f}   ROC-AUC {au - auc:+.4f}   same top-10 {same:6.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
