"""The stand-in's deterministic "model": word-overlap routing and passage search (pure functions).

Text is lowercased, split into ASCII words, stripped of a small stopword list and of a plural
``s``; documents are scored against a query with BM25. No randomness, no ML.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

STOPWORDS = frozenset(
    """a an the and or but if of to in on for with at by from is are was were be been being do
    does did i you we they it its this that these those my our your their me us what which who
    whom how when where why can could should would will shall may might must have has had there
    here as about into than then so not no just also any all some more most other such only own
    same too very get got please tell need want each every im ive id dont doesnt isnt s t""".split()
)
_SUFFIXES = (
    "ations",
    "ation",
    "ating",
    "ated",
    "ates",
    "ate",
    "ings",
    "ing",
    "ed",
    "es",
    "s",
    "e",
    "ly",
)
_WORD = re.compile(r"[a-z0-9]+")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
INTRO_WEIGHT = 0.5


def tokenize(text: str) -> list[str]:
    """Lowercased, stemmed content words of ``text``."""
    words = _WORD.findall(text.lower().replace("'", ""))
    return [stem(word) for word in words if word not in STOPWORDS]


def stem(word: str) -> str:
    """A crude suffix stripper: "authenticate"/"authentication" -> "authentic", "retries" ->
    "retri", "keys" -> "key"; at least four letters always remain."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            if suffix == "s" and word.endswith("ss"):
                break
            word = word[: -len(suffix)]
            break
    return word[:-1] + "i" if word.endswith("y") and len(word) > 4 else word


def bm25_scores(
    query: Sequence[str], docs: Sequence[Sequence[str]], k1: float = 1.2, b: float = 0.75
) -> list[float]:
    """BM25 score of each tokenized document for the tokenized query."""
    if not docs:
        return []
    n_docs = len(docs)
    avg_len = sum(len(d) for d in docs) / n_docs or 1.0
    doc_freq: Counter[str] = Counter()
    for doc in docs:
        doc_freq.update(set(doc))
    scores = []
    for doc in docs:
        tf = Counter(doc)
        score = 0.0
        for term in set(query):
            if term not in tf:
                continue
            idf = math.log(1 + (n_docs - doc_freq[term] + 0.5) / (doc_freq[term] + 0.5))
            freq = tf[term]
            score += idf * freq * (k1 + 1) / (freq + k1 * (1 - b + b * len(doc) / avg_len))
        scores.append(score)
    return scores


@dataclass(frozen=True)
class Passage:
    """One searchable piece of a source: the text under one Markdown heading."""

    source_name: str
    heading: str
    body: str
    tokens: tuple[str, ...]
    weight: float = 1.0


def split_passages(source_name: str, text: str) -> list[Passage]:
    """Cut a Markdown document at its headings (ignoring ``#`` inside code fences).

    A document without headings is cut at blank-line paragraphs instead. Sections with no body
    are dropped. Section headings (not the document title) count twice, so they weigh more.
    """
    sections: list[tuple[str, int, list[str]]] = [("", 0, [])]
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match:
            sections.append((match.group(2), len(match.group(1)), []))
        else:
            sections[-1][2].append(line)
    if len(sections) == 1:
        sections = [("", 0, [p]) for p in re.split(r"\n\s*\n", text)]
    passages = []
    file_words = tokenize(source_name.rsplit(".", 1)[0])
    # Every section of "REST API setup guide" is about the REST API: the title counts for all.
    title = next((heading for heading, level, _lines in sections if level == 1), "")
    title_words = tokenize(title)
    for heading, level, lines in sections:
        body = "\n".join(lines).strip()
        if not body:
            continue
        heading_words = tokenize(heading) * (2 if level > 1 else 1)
        context = file_words + (title_words if level > 1 else [])
        tokens = tuple(heading_words + context + tokenize(body))
        # A document's introduction is an overview: it should not outrank the section itself.
        weight = INTRO_WEIGHT if level == 1 and len(sections) > 2 else 1.0
        passages.append(Passage(source_name, heading, body, tokens, weight))
    return passages


def best_passage(query: str, passages: Sequence[Passage]) -> tuple[Passage | None, float]:
    """The passage scoring highest for ``query`` (first one on ties), or None if nothing matches."""
    raw = bm25_scores(tokenize(query), [p.tokens for p in passages])
    scores = [score * p.weight for score, p in zip(raw, passages, strict=True)]
    if not scores or max(scores) <= 0:
        return None, 0.0
    index = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return passages[index], scores[index]


@dataclass(frozen=True)
class Candidate:
    """A specialist the coordinator may delegate to, with the texts routing looks at."""

    name: str
    profile: str
    passages: tuple[Passage, ...]


def route(query: str, candidates: Sequence[Candidate], kb_weight: float = 0.5) -> int | None:
    """Index of the candidate that best fits ``query``, or None when there are no candidates.

    The score is the BM25 match against the candidate's profile (role description, agent name,
    KB descriptions), normalised to the best candidate, plus ``kb_weight`` times the normalised
    score of its best passage: a stand-in for the general knowledge an LLM coordinator brings.
    Ties go to the earlier candidate.
    """
    if not candidates:
        return None
    words = tokenize(query)
    profile = _normalise(bm25_scores(words, [tokenize(c.profile) for c in candidates]))
    evidence = _normalise([best_passage(query, c.passages)[1] for c in candidates])
    totals = [p + kb_weight * e for p, e in zip(profile, evidence, strict=True)]
    return max(range(len(candidates)), key=lambda i: (totals[i], -i))


def _normalise(scores: list[float]) -> list[float]:
    top = max(scores, default=0.0)
    return [s / top if top > 0 else 0.0 for s in scores]
