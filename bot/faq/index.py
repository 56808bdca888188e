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
    ) -> None:
        self.n_docs = len(docs)
        self.params = params
        # One row per (entry, distinct word): word number, entry, weighted tf.
        numbers: dict[str, int] = {}
        word_of_row: list[int] = []
        doc_of_row: list[int] = []
        tf_of_row: list[float] = []
        lengths: list[float] = []
        for doc_id, doc in enumerate(docs):
            tf: dict[str, float] = {}
            length = 0.0
            for field_name, tokens in doc.items():
                weight = field_weights.get(field_name, 0.0)
                if weight <= 0:
                    continue
                get = tf.get
                for token in tokens:
                    tf[token] = get(token, 0.0) + weight
                length += weight * len(tokens)
            lengths.append(length)
            setdefault = numbers.setdefault
            word_of_row.extend([setdefault(token, len(numbers)) for token in tf])
            doc_of_row.extend([doc_id] * len(tf))
            tf_of_row.extend(tf.values())
        avg_length = (sum(lengths) / len(lengths)) if lengths and sum(lengths) else 1.0

        vocabulary = list(numbers)
        word_ids = np.asarray(word_of_row, dtype=np.intp)
        df = np.bincount(word_ids, minlength=len(vocabulary)).tolist()
        idf = [bm25_idf(self.n_docs, n) for n in df]
        self.idf: dict[str, float] = dict(zip(vocabulary, idf))
        #: Weight given to a query word no entry contains: as rare as the rarest word.
        self.unknown_idf = bm25_idf(max(self.n_docs, 1), 1)

        # BM25 per row, vectorized with the same operations in the same order as
        # idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg_length)).
        k1, b = params.k1, params.b
        norms = k1 * (1.0 - b + b * np.asarray(lengths, dtype=np.float64) / avg_length)
        tfs = np.asarray(tf_of_row, dtype=np.float64)
        doc_ids = np.asarray(doc_of_row, dtype=np.intp)
        row_weights = np.asarray(idf, dtype=np.float64)[word_ids] * tfs * (k1 + 1.0) / (tfs + norms[doc_ids])

        # Compressed layout: one array of ids and one of weights, a slice per word
        # (entry ids ascending within a slice: the sort is stable).
        order = np.argsort(word_ids, kind="stable")
        self._ids = doc_ids[order]
        self._weights = row_weights[order]
        ends = np.cumsum(df).tolist()
        starts = [end - n for end, n in zip(ends, df)]
        self._slices: dict[str, tuple[int, int]] = dict(zip(vocabulary, zip(starts, ends)))
        self._max_weight: dict[str, float] = dict(
            zip(vocabulary, np.maximum.reduceat(self._weights, starts).tolist() if starts else [])
        )
        #: (entry id, weight) tuples per word, made on first use (short postings are
        #: faster to add up in plain Python than through numpy's per-call overhead).
        self._pairs: dict[str, tuple[tuple[int, float], ...]] = {}

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
        pairs = self._pairs.get(token)
        if pairs is None:
            start, end = self._slices[token]
            pairs = tuple(zip(self._ids[start:end].tolist(), self._weights[start:end].tolist()))
            self._pairs[token] = pairs  # bounded by the vocabulary
        return pairs

    def max_weight(self, token: str) -> float:
        return self._max_weight[token]

    def posting_length(self, token: str) -> int:
        start, end = self._slices[token]
        return end - start

    def max_contribution(self, token: str) -> float:
        """Upper bound of one token's score (tf → ∞): the query-side normalizer."""
        return self.idf.get(token, self.unknown_idf) * (self.params.k1 + 1.0)
