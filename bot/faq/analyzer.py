"""Chinese text → canonical tokens, shared by the FAQ matcher and keyword tag rules.

Pipeline: normalize_text → jieba (HMM on, so unknown words such as typos stay
whole and can be matched by pinyin later) → drop stopwords → map every synonym
to its group's canonical word (built-in lexicon + persona synonyms + entry
synonyms), so "尿不湿" and "纸尿裤", "yhq" and "优惠券" become the same token.

Dictionary loading: by default the analyzer uses jieba's default tokenizer
(`jieba.dt`). jieba loads its ~20 MB dictionary into that object lazily and
only once per process, so every component that builds a `TextAnalyzer()`
(FAQ, tagging, personas) shares one loaded dictionary without a cache of ours.
Pass `tokenizer=jieba.Tokenizer()` for an isolated dictionary (tests, tools).
Construction loads the dictionary (~0.3 s the first time, from jieba's cache
file, read in one piece rather than jieba's own object-by-object file reads):
build analyzers at start-up or in `asyncio.to_thread`, not inside a request.

Importing this module is cheap: jieba is imported by the first analyzer
(without the pkg_resources import it would otherwise pull in, see
_RefusePkgResources), and pypinyin (~0.3 s to import) only when a homophone
lookup is first needed; the sound table for homophone correction is filled
then, not at construction. Words that cannot sound like a known word (one
character, digits) are decided without it, and a FAQ index build puts off
correcting its entries' unknown words until the first match
(`defer_sounds`, `FaqMatcher.settle`), so loading a persona needs no pypinyin.

Words added to the dictionary (lexicon entries, persona product names) are
additive and harmless to share: they only make jieba keep those words whole.
"""

from __future__ import annotations

import importlib.abc
import logging
import marshal
import math
import os
import re
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from math import log
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bot.faq.normalize import normalize_text

if TYPE_CHECKING:
    import jieba

_DATA = resources.files("bot.faq") / "data"
#: Runs of Latin letters/digits (and spaces), kept whole by TextAnalyzer.scan_words.
_LATIN_RUN = re.compile(r"([a-z0-9 ]+)")
_DIGIT = re.compile(r"[0-9]")
#: libyaml's safe loader when PyYAML has it: the lexicon loads in ~10 ms instead of ~0.1 s.
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: Private dictionaries kept for reuse (~20 MB each): a few personas and their last versions.
_PRIVATE_DICTIONARIES_KEPT = 4


class _RefusePkgResources(importlib.abc.MetaPathFinder):
    """Makes `import pkg_resources` fail in one thread while it imports jieba.

    jieba's `_compat` imports pkg_resources (setuptools, ~0.2 s: a third of a
    cold analyzer) only to open jieba's own data files, and falls back to
    `open()` on the same files when that import fails. Nothing else in the
    bot imports pkg_resources. Per thread, so an import elsewhere meanwhile
    is unaffected.
    """

    def __init__(self) -> None:
        self._thread = threading.get_ident()

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pkg_resources" and threading.get_ident() == self._thread:
            raise ImportError("pkg_resources is not needed to import jieba")


def _import_jieba() -> None:
    if "jieba" in sys.modules or "pkg_resources" in sys.modules:
        return
    finder = _RefusePkgResources()
    sys.meta_path.insert(0, finder)
    try:
        import jieba  # noqa: F401, PLC0415
    finally:
        sys.meta_path.remove(finder)


def _default_tokenizer() -> jieba.Tokenizer:
    _import_jieba()  # ~0.05 s, imported by the first analyzer, not by this module
    import jieba  # noqa: PLC0415

    jieba.setLogLevel(logging.WARNING)
    return jieba.dt


def _load_dictionary(tokenizer: jieba.Tokenizer) -> None:
    """`tokenizer.initialize()`, but reading jieba's cache file in one piece.

    jieba unpickles its cache with `marshal.load(file)`, which calls the file's
    `readinto` once per object: ~500k words make that 1-1.5 s, where
    `marshal.loads` of the same bytes takes ~0.3 s. Anything unusual (custom
    dictionary, no or stale cache, read error) goes to jieba's own code, which
    also writes the cache.
    """
    import jieba  # noqa: PLC0415

    if tokenizer.initialized:
        return
    with tokenizer.lock:
        if tokenizer.initialized or tokenizer.dictionary != jieba.DEFAULT_DICT:
            pass
        elif jieba.DICT_WRITING.get(tokenizer.dictionary) is None:  # nobody writing the cache
            name = tokenizer.cache_file or "jieba.cache"  # the path jieba itself uses
            path = os.path.join(tokenizer.tmp_dir or tempfile.gettempdir(), name)
            try:
                with open(path, "rb") as cache:
                    freq, total = marshal.loads(cache.read())
                if isinstance(freq, dict) and freq and total > 0:
                    tokenizer.FREQ, tokenizer.total = freq, total
                    tokenizer.initialized = True
            except (OSError, EOFError, ValueError, TypeError):
                pass
    tokenizer.initialize()  # no-op when loaded above


#: jieba's block patterns and HMM module, looked up once (not per call of `_cut`).
_JIEBA_PARTS: tuple[Any, Any, Any] | None = None


def _jieba_parts() -> tuple[Any, Any, Any]:
    global _JIEBA_PARTS  # noqa: PLW0603 - filled once, on first use
    import jieba  # noqa: PLC0415
    from jieba import finalseg  # noqa: PLC0415

    _JIEBA_PARTS = (jieba.re_han_default, jieba.re_skip_default, finalseg)
    return _JIEBA_PARTS


def _cut(tokenizer: jieba.Tokenizer, sentence: str) -> list[str]:
    """`tokenizer.lcut(sentence, HMM=True)`, the same words about twice as fast.

    jieba builds a DAG of dictionary words, then picks the most probable route
    with a generator of tuples per character; this does both in one backward
    pass with the same arithmetic (and tie-break: the longer word), and hands
    runs of single characters to jieba's HMM exactly as jieba does. Used for
    plain `jieba.Tokenizer`s only; tests compare it with jieba on every entry
    of the benchmark knowledge base.
    """
    han, skip, finalseg = _JIEBA_PARTS or _jieba_parts()
    tokenizer.check_initialized()
    freq_of = tokenizer.FREQ
    get = freq_of.get
    log_total = log(tokenizer.total)
    out: list[str] = []
    for block in han.split(sentence):
        if not block:
            continue
        if not han.match(block):
            for piece in skip.split(block):
                if skip.match(piece):
                    out.append(piece)
                else:
                    out.extend(piece)
            continue
        n = len(block)
        score = [0.0] * (n + 1)
        end = [0] * (n + 1)
        for k in range(n - 1, -1, -1):
            best = -math.inf
            best_end = -1
            i = k
            freq = get(block[k])
            while freq is not None:  # a word or a word's prefix
                if freq:
                    value = log(freq) - log_total + score[i + 1]
                    if value >= best:  # ties: the later end, as max() over (score, end)
                        best, best_end = value, i
                i += 1
                if i >= n:
                    break
                freq = get(block[k : i + 1])
            if best_end < 0:  # no dictionary word starts here: the character alone
                best, best_end = log(get(block[k]) or 1) - log_total + score[k + 1], k
            score[k] = best
            end[k] = best_end
        x = 0
        buf = ""
        while x < n:
            y = end[x] + 1
            if y - x == 1:
                buf += block[x]
            else:
                if buf:
                    _flush(buf, get, finalseg, out)
                    buf = ""
                out.append(block[x:y])
            x = y
        if buf:
            _flush(buf, get, finalseg, out)
    return out


def _flush(buf: str, get: Callable[[str], Any], finalseg: Any, out: list[str]) -> None:
    """A run of single characters: jieba's HMM when it is not a dictionary word."""
    if len(buf) == 1:
        out.append(buf)
    elif not get(buf):
        out.extend(finalseg.cut(buf))
    else:
        out.extend(buf)


#: Text jieba-rs cuts differently from jieba: CJK outside jieba's 4E00-9FD5 (extension A, the
#: 9FD6+ tail, compatibility ideographs, supplementary planes) is one block there, single
#: characters here. Such text goes through the Python cut; normalized text has no other difference
#: (tests compare both on a large corpus).
_RUST_CUTS_DIFFERENTLY = re.compile("[\u3400-\u4dbf\u9fd6-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]")
#: A word that no text contains, carrying jieba's total frequency beyond the sum of its words
#: (jieba's add_word adds a changed word's new frequency without taking its old one off).
_TOTAL_PAD = "\ue000"


def _rust_cutter(tokenizer: jieba.Tokenizer, *, wait: bool = False) -> Any:
    """jieba-rs (the `rjieba` binding) loaded with exactly `tokenizer`'s dictionary and total: the
    same algorithm, dictionary and HMM as jieba, ~20x faster per message. Kept on the tokenizer
    (one per dictionary; `_add_word` drops it when the dictionary changes).

    Loading it takes ~0.4 s, so the first call starts that in a thread and returns None; until it
    is ready (and without rjieba installed) the caller cuts with jieba's own algorithm (`_cut`).
    `wait=True` loads it right here (tools, tests)."""
    cutter = getattr(tokenizer, "_siyu_rust_cutter", None)
    if wait and (cutter is None or isinstance(cutter, _Loading)):
        token = tokenizer._siyu_rust_cutter = _Loading()  # a load under way in a thread is dropped
        _load_rust_cutter(tokenizer, token)
        return _rust_cutter(tokenizer)
    if cutter is None:
        token = tokenizer._siyu_rust_cutter = _Loading()
        threading.Thread(target=_load_rust_cutter, args=(tokenizer, token), name="rjieba-load", daemon=True).start()
        return None
    return None if isinstance(cutter, _Loading) or cutter is False else cutter


class _Loading:
    """Marks a tokenizer whose jieba-rs copy is being loaded (identity: a stale load is dropped)."""


def _load_rust_cutter(tokenizer: jieba.Tokenizer, token: _Loading) -> None:
    try:
        import rjieba  # noqa: PLC0415
    except ImportError:
        tokenizer._siyu_rust_cutter = False
        return
    tokenizer.check_initialized()
    words, total = dict(tokenizer.FREQ), tokenizer.total  # a copy: the dictionary may change meanwhile
    cutter = rjieba.Jieba.empty()
    listed = 0
    for word, freq in words.items():
        if freq:  # jieba also stores every word's prefixes, with 0
            cutter.add_word(word, freq, None)
            listed += freq
    if total > listed:
        cutter.add_word(_TOTAL_PAD, total - listed, None)
    if getattr(tokenizer, "_siyu_rust_cutter", None) is token:  # else the dictionary changed: load again later
        tokenizer._siyu_rust_cutter = cutter


_lazy_pinyin: Callable[[str], list[str]] | None = None


def _pinyin_of(word: str) -> str:
    global _lazy_pinyin  # noqa: PLW0603 - imported once, on first use
    if _lazy_pinyin is None:
        from pypinyin import lazy_pinyin  # noqa: PLC0415 - ~0.3 s to import

        _lazy_pinyin = lazy_pinyin
    return "".join(_lazy_pinyin(word))


class LexiconError(ValueError):
    """A lexicon or stopword file is missing or malformed."""


def load_lexicon(path: Path | None = None) -> list[list[str]]:
    """Synonym groups from YAML: `groups: [[canonical, variant, ...], ...]`.

    `path`: one such file, or a folder of them; default: the built-in lexicon,
    one file per domain in `bot/faq/data/lexicon/` (read in name order)."""
    if path is None or Path(path).is_dir():
        folder = _DATA / "lexicon" if path is None else Path(path)
        files = sorted((f for f in folder.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)
        return [group for file in files for group in _load_lexicon_text(file.read_text("utf-8"), file.name)]
    return _load_lexicon_text(Path(path).read_text("utf-8"), Path(path).name)


def _load_lexicon_text(text: str, name: str) -> list[list[str]]:
    try:
        data = yaml.load(text, Loader=_YAML_LOADER) or {}
    except yaml.YAMLError as exc:
        raise LexiconError(f"lexicon {name} is not valid YAML: {exc}") from exc
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(groups, list):
        raise LexiconError(f"lexicon {name} must be a mapping with a 'groups' list")
    result: list[list[str]] = []
    for group in groups:
        if not isinstance(group, list) or not all(isinstance(w, (str, int)) for w in group):
            raise LexiconError(f"lexicon group must be a list of words: {group!r}")
        words = [normalize_text(str(w)) for w in group]
        words = [w for w in words if w]
        if len(words) >= 2:
            result.append(words)
    return result


def load_wordlist(name: str) -> frozenset[str]:
    """One word per line; '#' starts a comment."""
    words: set[str] = set()
    for line in (_DATA / name).read_text("utf-8").splitlines():
        word = normalize_text(line.split("#", 1)[0])
        if word:
            words.add(word)
    return frozenset(words)


class _SynonymTable:
    """Union of synonym groups: every word points at one canonical word.

    Groups that share a word are merged, so a persona's 纸尿裤: [NB码尿裤]
    joins the built-in 纸尿裤/尿不湿 group instead of starting a new one.
    """

    def __init__(self) -> None:
        self.canonical: dict[str, str] = {}
        self._members: dict[str, set[str]] = {}

    def add_group(self, words: Sequence[str]) -> None:
        words = [w for w in words if w]
        if not words:
            return
        # The first canonical already known among the words wins; else the first word.
        target = next((self.canonical[w] for w in words if w in self.canonical), words[0])
        members = self._members.setdefault(target, {target})
        self.canonical.setdefault(target, target)
        for word in words:
            other = self.canonical.get(word)
            if other is not None and other != target:
                for moved in self._members.pop(other, {other}):
                    self.canonical[moved] = target
                    members.add(moved)
            self.canonical[word] = target
            members.add(word)

    def copy(self) -> _SynonymTable:
        clone = _SynonymTable()
        clone.canonical = dict(self.canonical)
        clone._members = {k: set(v) for k, v in self._members.items()}
        return clone


class _Memo:
    """Bounded memo of jieba segmentations and pinyin, shared by derived analyzers.

    Rebuilding a persona's FAQ index re-analyzes mostly unchanged entries;
    remembering their segmentation makes the rebuild cheap. Segmentation
    depends on the dictionary, so adding a word to it clears the memo.
    """

    def __init__(self, max_items: int = 200_000) -> None:
        self.max_items = max_items
        self.segments: dict[str, tuple[str, ...]] = {}
        #: Dictionary-only segmentations (see TextAnalyzer.scan_words), by text.
        self.scans: dict[str, tuple[str, ...]] = {}
        self.sounds: dict[str, str] = {}

    def remember(self, table: dict[str, Any], key: str, value: Any) -> None:
        if len(table) >= self.max_items:
            table.clear()  # crude but bounded; a rebuild refills it
        table[key] = value


class TextAnalyzer:
    """Normalize, segment, drop stopwords and canonicalize synonyms."""

    def __init__(
        self,
        *,
        user_words: Iterable[str] = (),
        synonyms: Mapping[str, Sequence[str]] | None = None,
        tokenizer: jieba.Tokenizer | None = None,
        lexicon_path: Path | None = None,
    ) -> None:
        self._tokenizer = tokenizer if tokenizer is not None else _default_tokenizer()
        _load_dictionary(self._tokenizer)
        self._fast_cut = type(self._tokenizer).__name__ == "Tokenizer" and type(
            self._tokenizer
        ).__module__ == "jieba"
        self._memo = _Memo()
        self._last_cut: tuple[str, tuple[str, ...]] | None = None
        self._stopwords = load_wordlist("stopwords.txt")
        self._smalltalk = load_wordlist("smalltalk.txt")
        self._generic = load_wordlist("generic.txt")
        self._table = _SynonymTable()
        #: word → its tokens in `analyze` (see _tokens_of); per analyzer, as it depends on the table.
        self._word_tokens: dict[str, tuple[str, ...]] = {}
        #: pinyin → canonical word (None: two meanings share the sound), filled on
        #: first use from `_pending_sounds`, the (word, canonical) pairs added so far.
        self._sounds: dict[str, str | None] = {}
        self._pending_sounds: list[tuple[str, str]] = []
        #: Unknown words whose homophone correction was put off (see defer_sounds).
        self._deferred: set[str] | None = None
        #: Called before the sound table is first needed (see FaqMatcher: it may
        #: still have to settle what this analyzer's vocabulary is).
        self._before_sounds: Callable[[], None] | None = None
        # The built-in lexicon is the same for everyone: it may go into the shared dictionary.
        self._shares_tokenizer = False
        for group in load_lexicon(lexicon_path):
            self._add_group(group)
        # Anything else (a persona's product names and synonyms) must not change how
        # another persona's text is cut: the first such word copies the dictionary.
        self._shares_tokenizer = True
        #: Private dictionaries by the words that made them, shared by every analyzer derived
        #: from this one: rebuilding a persona with unchanged words reuses its dictionary and
        #: the segmentations remembered with it.
        self._private_dictionaries: OrderedDict[tuple[str, ...], tuple[jieba.Tokenizer, _Memo]] = OrderedDict()
        self._extend(user_words, synonyms or {}, ())

    # --- building -----------------------------------------------------------

    def derive(
        self,
        *,
        user_words: Iterable[str] = (),
        synonyms: Mapping[str, Sequence[str]] | None = None,
        vocabulary: Iterable[str] = (),
    ) -> TextAnalyzer:
        """A copy with more words/synonyms, sharing the loaded dictionary (cheap).

        `vocabulary`: extra known words (e.g. every token of a FAQ knowledge base)
        that unknown, homophone-typed words may be corrected to.
        """
        if self._before_sounds is not None:
            self._before_sounds()  # the clone copies a settled vocabulary
        clone = object.__new__(TextAnalyzer)
        clone._deferred = None
        clone._before_sounds = None
        clone._tokenizer = self._tokenizer
        clone._shares_tokenizer = True
        clone._fast_cut = self._fast_cut
        clone._memo = self._memo
        clone._last_cut = None
        clone._private_dictionaries = self._private_dictionaries
        user_words = list(user_words)
        key = (*map(normalize_text, user_words), "\x00",
               *(normalize_text(w) for head, variants in (synonyms or {}).items() for w in (head, *variants)))
        cached = self._private_dictionaries.get(key) if len(key) > 1 else None
        if cached is not None:
            self._private_dictionaries.move_to_end(key)
            clone._tokenizer, clone._memo = cached
            clone._fast_cut = True
        clone._stopwords = self._stopwords
        clone._smalltalk = self._smalltalk
        clone._generic = self._generic
        clone._table = self._table.copy()
        clone._word_tokens = {}
        clone._sounds = self._sounds  # copied on write (see _sound_table)
        clone._pending_sounds = list(self._pending_sounds)
        clone._extend(user_words, synonyms or {}, vocabulary)
        if cached is None and not clone._shares_tokenizer:
            self._private_dictionaries[key] = (clone._tokenizer, clone._memo)
            while len(self._private_dictionaries) > _PRIVATE_DICTIONARIES_KEPT:
                self._private_dictionaries.popitem(last=False)
            clone._shares_tokenizer = True  # now also the cache's: a further word copies again
        return clone

    def _extend(
        self,
        user_words: Iterable[str],
        synonyms: Mapping[str, Sequence[str]],
        vocabulary: Iterable[str],
    ) -> None:
        for word in user_words:
            word = normalize_text(word)
            self._add_word(word)
            self._add_sound(word, word)
        for head, variants in synonyms.items():
            self._add_group([normalize_text(w) for w in [head, *variants]])
        for word in vocabulary:
            self._add_sound(word, self.canonical(word))

    def _add_group(self, words: Sequence[str]) -> None:
        for word in words:
            self._add_word(word)
        self._table.add_group(words)
        for word in words:
            self._add_sound(word, self.canonical(word))

    def _add_sound(self, word: str, canonical: str) -> None:
        # Only words of 2+ CJK characters: single syllables are far too ambiguous.
        if len(word) < 2 or not all("\u4e00" <= c <= "\u9fff" for c in word):
            return
        self._pending_sounds.append((word, canonical))

    def _sound_table(self) -> dict[str, str | None]:
        """The homophone table, with every pending word added (pypinyin needed from here)."""
        if self._before_sounds is not None:
            self._before_sounds()
        pending = self._pending_sounds
        if not pending:
            return self._sounds
        sounds = dict(self._sounds)  # never mutate: derived analyzers may share it
        for word, canonical in pending:
            sound = self.pinyin(word)
            known = sounds.get(sound, canonical)
            # Two different meanings with one sound: don't guess.
            sounds[sound] = canonical if known == canonical else None
        # Replaying a pair already in the table changes nothing, so a concurrent
        # caller that still sees the old pending list gets the same table.
        self._sounds = sounds
        self._pending_sounds = []
        return sounds

    def defer_sounds(self) -> set[str]:
        """Put off homophone correction of unknown words: `analyze` gives their
        dictionary pieces instead and adds them to the returned set. Lets a FAQ
        index be built without importing pypinyin (~0.3 s) at start-up; see
        `stop_deferring` for what the caller must do before relying on it."""
        self._deferred = set()
        return self._deferred

    def stop_deferring(self) -> None:
        """Correct unknown words again; forget the tokens given while deferring."""
        deferred, self._deferred = self._deferred, None
        for word in deferred or ():
            self._word_tokens.pop(word, None)

    def reset_vocabulary(self, parent: TextAnalyzer, vocabulary: Iterable[str]) -> None:
        """Make this analyzer's homophone targets those of `parent.derive(vocabulary=...)`.
        Only before its sound table was built (see `_before_sounds`)."""
        fresh = parent.derive(vocabulary=vocabulary)
        self._sounds, self._pending_sounds = fresh._sounds, fresh._pending_sounds
        self._word_tokens = {}

    def _add_word(self, word: str) -> None:
        # Keep multi-character words whole; "免运费" must not become 免/运费.
        if len(word) < 2 or " " in word:
            return
        if self._tokenizer.lcut(word, HMM=False) != [word]:
            if self._shares_tokenizer:
                self._take_private_tokenizer()
            # Raise the word's frequency just enough for jieba to keep it whole.
            self._tokenizer.suggest_freq(word, tune=True)
            self._tokenizer._siyu_rust_cutter = None  # rebuilt from the changed dictionary on first use
            self._memo.segments.clear()
            self._memo.scans.clear()
            self._last_cut = None

    def _take_private_tokenizer(self) -> None:
        """Copy-on-write of jieba's dictionary (~15 ms, ~20 MB): one persona's words stay its own."""
        import jieba  # noqa: PLC0415

        shared = self._tokenizer
        shared.check_initialized()
        private = jieba.Tokenizer(shared.dictionary)
        private.FREQ = dict(shared.FREQ)
        private.total = shared.total
        private.initialized = True
        self._tokenizer = private
        self._fast_cut = True
        self._memo = _Memo()
        self._shares_tokenizer = False

    def prepare_fast_cut(self) -> None:
        """Start loading jieba-rs with this analyzer's dictionary now, in a thread (see `_rust_cutter`),
        so the first customers are not the ones who wait for it."""
        if self._fast_cut:
            _rust_cutter(self._tokenizer)

    # --- analysis -----------------------------------------------------------

    def words(self, text: str, *, memo: bool = False) -> Sequence[str]:
        """Normalized jieba tokens, nothing dropped or mapped.

        `memo=True` remembers the result: for texts analyzed again and again,
        such as FAQ entries on every index rebuild (not for customer messages).
        """
        if memo and (known := self._memo.segments.get(text)) is not None:
            return known
        normalized = normalize_text(text)
        # Several handlers read one message (tag rules, then the FAQ): it is cut once.
        last = self._last_cut
        if last is not None and last[0] == normalized:
            return last[1]
        if self._fast_cut:
            rust = _rust_cutter(self._tokenizer)
            if rust is not None and not _RUST_CUTS_DIFFERENTLY.search(normalized):
                cut = rust.cut(normalized, True)
            else:
                cut = _cut(self._tokenizer, normalized)
        else:
            cut = self._tokenizer.lcut(normalized, HMM=True)
        words = tuple(w for w in cut if w.strip())
        self._last_cut = (normalized, words)  # one assignment: safe to read from another thread
        if memo:
            self._memo.remember(self._memo.segments, text, words)
        return words

    def canonical(self, word: str) -> str:
        return self._table.canonical.get(word, word)

    def is_stopword(self, word: str) -> bool:
        return word in self._stopwords

    def is_smalltalk(self, word: str) -> bool:
        """Greetings and politeness ("在吗", "谢谢"): no question content."""
        return word in self._smalltalk

    def is_generic(self, word: str) -> bool:
        """Question words and light verbs (怎么, 多久, 使用): the kind of question, not its topic."""
        return word in self._generic

    def analyze(self, text: str, *, memo: bool = False) -> list[str]:
        """Canonical content tokens of `text`, in order (duplicates kept)."""
        return self._tokens(self.words(text, memo=memo))

    def scan(self, text: str, *, memo: bool = False) -> list[str]:
        """`analyze` with a cheaper segmentation (`scan_words`): for long texts
        that only need their dictionary words found, such as FAQ answers."""
        return self._tokens(self.scan_words(text, memo=memo))

    def _tokens(self, words: Iterable[str]) -> list[str]:
        known = self._word_tokens
        tokens: list[str] = []
        for word in words:
            out = known.get(word)
            if out is None:
                out = self._tokens_of(word)
            tokens.extend(out)
        return tokens

    def _tokens_of(self, word: str) -> tuple[str, ...]:
        """What one segmented word contributes to `analyze`; remembered per analyzer
        (a pure function of the word once the analyzer is built), bounded."""
        out: tuple[str, ...]
        if word in self._stopwords:
            out = ()
        elif word in self._table.canonical or self._tokenizer.FREQ.get(word):
            canon = self.canonical(word)
            out = () if canon in self._stopwords else (canon,)
        else:
            out = tuple(self._unknown(word))
        if len(self._word_tokens) >= self._memo.max_items:
            self._word_tokens.clear()
        self._word_tokens[word] = out
        return out

    def scan_words(self, text: str, *, memo: bool = False) -> Sequence[str]:
        """Normalized words by forward maximum matching on jieba's dictionary:
        at each position the longest dictionary word (jieba's prefix entries
        end the search), else one character; runs of Latin letters and digits
        whole. No route probabilities and no HMM, so ~2.5x cheaper than `words`;
        the words differ from jieba's only where jieba's route splits a long
        match differently, and unknown words are left in characters."""
        if memo and (known := self._memo.scans.get(text)) is not None:
            return known
        self._tokenizer.check_initialized()
        get = self._tokenizer.FREQ.get
        out: list[str] = []
        append = out.append
        for part in _LATIN_RUN.split(normalize_text(text)):
            if not part or part.isspace():
                continue
            if part.isascii():
                out.extend(part.split())
                continue
            # No spaces in here: _LATIN_RUN takes them.
            i, n = 0, len(part)
            while i < n:
                word = part[i]
                j = i + 1
                freq = get(word)
                while freq is not None and j < n:  # a word or a word's prefix: go on
                    j += 1
                    prefix = part[i:j]
                    freq = get(prefix)
                    if freq:
                        word = prefix
                append(word)
                i += len(word)
        words = tuple(out)
        if memo:
            self._memo.remember(self._memo.scans, text, words)
        return words

    def sounds_like(self, word: str) -> str | None:
        """The canonical known word pronounced like `word` (油费 → 运费 via 邮费), if unique."""
        if not self._may_sound_like(word):
            return None
        sounds = self._sound_table()
        return sounds.get(self.pinyin(word)) if sounds else None

    def _unknown(self, word: str) -> list[str]:
        """A word jieba's HMM invented: a homophone typo, or a typo glued to a word."""
        if self._deferred is not None and self._may_sound_like(word):
            self._deferred.add(word)
            return self.pieces(word)
        corrected = self.sounds_like(word)
        if corrected:
            return [corrected]
        # Otherwise trust the dictionary over the HMM's guess ("钱会" → 钱).
        return self.pieces(word)

    @staticmethod
    def _may_sound_like(word: str) -> bool:
        """False when no known word can share `word`'s pinyin, decided without
        pypinyin: the table holds words of 2+ CJK characters, whose pinyin has no
        digits, and pypinyin keeps digits as they are (numbers, sizes like 5kg)."""
        return len(word) >= 2 and not _DIGIT.search(word)

    def pieces(self, word: str) -> list[str]:
        """Dictionary-only split of one token (no HMM), canonicalized, stopwords dropped.

        Used as backoff when the HMM glued a typo to a real word ("券用" → 券, 用).
        """
        out = []
        rust = _rust_cutter(self._tokenizer) if self._fast_cut else None
        if rust is not None and not _RUST_CUTS_DIFFERENTLY.search(word):
            cut = rust.cut(word, False)
        else:
            cut = self._tokenizer.lcut(word, HMM=False)
        for piece in cut:
            if piece.strip() and piece not in self._stopwords:
                canon = self.canonical(piece)
                if canon not in self._stopwords:
                    out.append(canon)
        return out

    def pinyin(self, word: str) -> str:
        """Toneless pinyin, for homophone typos (发漂 → fapiao = 发票)."""
        sound = self._memo.sounds.get(word)
        if sound is None:
            sound = _pinyin_of(word)
            self._memo.remember(self._memo.sounds, word, sound)
        return sound
