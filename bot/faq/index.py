"""BM25F inverted index over FAQ entries.

Each entry has several fields of tokens (keywords, question, examples, answer);
a field weight multiplies term frequency before BM25 saturation (BM25F), so a
word that is an entry's keyword counts more than one seen in an example.

Postings hold the finished per-(token, entry) BM25 contribution, laid out as
one compressed array (token → slice of entry ids and weights), so scoring a
query is a few slices summed by numpy: cost follows the query's tokens and
their posting lengths, not the number of entries.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: Field → weight on term frequency. Keywords are curated evidence, the question
#: is the canonical phrasing, examples are paraphrases, the answer is long and
#: noisy (it only helps recall for facts mentioned nowhere else, e.g. 青海).
DEFAULT_FIELD_WEIGHTS: Mapping[str, float] = {
    "keywords": 3.0,
    "question": 2.0,
    "examples": 1.5,
    "answer": 0.5,
}


@dataclass(frozen=True)
class Bm25Params:
    k1: float = 0.8
    b: float = 0.6


def bm25_idf(n_docs: int, df: int) -> float:
    """Robertson–Spärck Jones IDF, kept positive: log(1 + (N - df + 0.5) / (df + 0.5))."""
    return math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))


class Bm25Index:
    def __init__(
        self,
        docs: Sequence[Mapping[str, Sequence[str]]],
        *,
        field_weights: Mapping[str, float] = DEFAULT_FIELD_WEIGHTS,
        params: Bm25Params = Bm25Params(),
        long_posting: int = 256,
    ) -> None:
        self.long_posting = long_posting
        self.n_docs = len(docs)
        self.params = params
        weighted_tf: list[Counter[str]] = []
        lengths: list[float] = []
        for doc in docs:
            tf: Counter[str] = Counter()
            length = 0.0
            for field_name, tokens in doc.items():
                weight = field_weights.get(field_name, 0.0)
                if weight <= 0:
                    continue
                for token in tokens:
                    tf[token] += weight
                length += weight * len(tokens)
            weighted_tf.append(tf)
            lengths.append(length)
        avg_length = (sum(lengths) / len(lengths)) if lengths and sum(lengths) else 1.0

        df: Counter[str] = Counter()
        for tf in weighted_tf:
            df.update(tf.keys())
        self.idf: dict[str, float] = {t: bm25_idf(self.n_docs, n) for t, n in df.items()}
        #: Weight given to a query word no entry contains: as rare as the rarest word.
        self.unknown_idf = bm25_idf(max(self.n_docs, 1), 1)

        k1, b = params.k1, params.b
        postings: dict[str, tuple[list[int], list[float]]] = {}
        for doc_id, (tf, length) in enumerate(zip(weighted_tf, lengths)):
            norm = k1 * (1.0 - b + b * length / avg_length)
            for token, freq in tf.items():
                ids, weights = postings.setdefault(token, ([], []))
                ids.append(doc_id)
                weights.append(self.idf[token] * freq * (k1 + 1.0) / (freq + norm))

        # Compressed layout: one array of ids and one of weights, a slice per token.
        self._slices: dict[str, tuple[int, int]] = {}
        all_ids: list[int] = []
        all_weights: list[float] = []
        for token, (ids, weights) in postings.items():
            self._slices[token] = (len(all_ids), len(all_ids) + len(ids))
            all_ids.extend(ids)
            all_weights.extend(weights)
        self._ids = np.asarray(all_ids, dtype=np.intp)
        self._weights = np.asarray(all_weights, dtype=np.float64)
        # Short postings are faster to add up in plain Python than through numpy's
        # per-call overhead, so keep them as tuples too.
        self._pairs: dict[str, tuple[tuple[int, float], ...]] = {
            token: tuple(zip(ids, weights)) for token, (ids, weights) in postings.items()
        }
        self._max_weight = {t: max(w) for t, (_, w) in postings.items()}
        # Common words (long postings) are looked up per candidate instead of summed.
        self._lookup: dict[str, dict[int, float]] = {
            t: dict(zip(ids, w)) for t, (ids, w) in postings.items() if len(ids) > long_posting
        }

    def __contains__(self, token: str) -> bool:
        return token in self._slices

    @property
    def vocabulary(self) -> Iterable[str]:
        return self._slices.keys()

    def postings(self, token: str) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        """Entry ids containing `token` and the token's BM25 score in each (views)."""
        start, end = self._slices[token]
        return self._ids[start:end], self._weights[start:end]

    def pairs(self, token: str) -> tuple[tuple[int, float], ...]:
        """The same postings as (entry id, weight) tuples."""
        return self._pairs[token]

    def max_weight(self, token: str) -> float:
        return self._max_weight[token]

    def weight_in(self, token: str) -> Mapping[int, float]:
        """entry id → weight, for words with more than `long_posting` entries."""
        return self._lookup[token]

    def posting_length(self, token: str) -> int:
        start, end = self._slices[token]
        return end - start

    def max_contribution(self, token: str) -> float:
        """Upper bound of one token's score (tf → ∞): the query-side normalizer."""
        return self.idf.get(token, self.unknown_idf) * (self.params.k1 + 1.0)
