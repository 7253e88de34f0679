"""The benchmark's hybrid peers: BM25 over the corpus, fused with a dense ranking exactly as Qdrant's RRF fuses."""

from __future__ import annotations

import numpy as np
from qdrant_client import QdrantClient, models

from prime_retriever.stores.base import point_id
from prime_retriever.text.documents import Document
from training.bench.hybrid import BM25Ranker, rrf_fuse

DOCS = [
    Document("cats", "Cats are small domesticated carnivores that purr.", "Cat"),
    Document("dogs", "Dogs are loyal animals and bark at strangers.", "Dog"),
    Document("lions", "Lions are big cats living in prides.", "Lion", scope="zoo"),
    Document("tigers", "Tigers are the largest cats; they hunt alone.", "Tiger", scope="zoo"),
    Document("cars", "Cars have engines and four wheels.", "Car"),
]


def test_bm25_ranks_term_matches_within_scope_and_without_exclusions() -> None:
    bm25 = BM25Ranker(DOCS)
    ranked = bm25.rank("which cats purr?", 5)
    assert ranked[0] == "cats" and set(ranked) == {"cats", "lions", "tigers"}  # "cat" stems alike; no match no hit
    assert bm25.rank("cats", 5, scope="zoo") == bm25.rank("cats", 5, scope="zoo", exclude_ids=["cats"])
    assert set(bm25.rank("cats", 5, scope="zoo")) == {"lions", "tigers"}
    assert "cats" not in bm25.rank("cats purr", 5, exclude_ids=["cats"])
    assert bm25.rank("quantum chromodynamics", 5) == []


def test_rrf_fuse_is_qdrants_own_fusion_of_the_two_prefetches() -> None:
    rng = np.random.default_rng(0)
    client = QdrantClient(location=":memory:")
    dense_config = models.VectorParams(size=8, distance=models.Distance.COSINE)
    client.create_collection("c", vectors_config={"dense": dense_config},
                             sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)})
    ids = [f"d{i}" for i in range(40)]
    points = []
    for i, d in enumerate(ids):
        terms = sorted(rng.choice(30, size=4, replace=False).tolist())
        points.append(models.PointStruct(
            id=point_id(d), payload={"doc_id": d},
            vector={"dense": rng.normal(size=8).tolist(),
                    "bm25": models.SparseVector(indices=terms, values=[1.0 + (i % 3)] * 4)}))
    client.upsert("c", points)
    q_dense = rng.normal(size=8).tolist()
    q_sparse = models.SparseVector(indices=[1, 5, 9, 13], values=[1.0] * 4)
    dense = [p.payload["doc_id"] for p in client.query_points("c", query=q_dense, using="dense", limit=20).points
             if p.payload]
    sparse = [p.payload["doc_id"] for p in client.query_points("c", query=q_sparse, using="bm25", limit=20).points
              if p.payload]
    fused = client.query_points("c", prefetch=[models.Prefetch(query=q_dense, using="dense", limit=20),
                                               models.Prefetch(query=q_sparse, using="bm25", limit=20)],
                                query=models.FusionQuery(fusion=models.Fusion.RRF), limit=10).points
    qdrant = [p.payload["doc_id"] for p in fused if p.payload]
    ours = rrf_fuse([dense, sparse], 10)
    assert len(sparse) > 3 and len(set(dense) & set(sparse)) > 0
    assert ours == qdrant
