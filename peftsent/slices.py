"""Error-analysis slices: documented rules that flag reviews by the kind of language in them.

Every rule reads the review text only (never the gold label or the model's output), uses the
VADER lexicon and negation list shipped by the ``vaderSentiment`` package (Hutto & Gilbert 2014,
"VADER: A Parsimonious Rule-based Model for Sentiment Analysis of Social Media Text"), and is
tested on hand-written reviews it must catch and must not catch (tests/test_slices.py).
HTML line breaks (``<br />``, as in IMDb) are read as sentence breaks.

``mixed``
    Both strong positive and strong negative content: VADER's ``pos`` and ``neg`` scores of the
    whole review (shares of the text's sentiment-bearing words, negation handled by VADER) are
    both at least :data:`MIXED_MIN_SHARE`.
``contrast``
    A contrastive connective (:data:`CONNECTIVES`) joins two clauses of opposite polarity: the
    VADER compound of the clause before and of the clause after are one >= +0.05 and one <= -0.05
    (VADER's own neutral band). Clauses: inside a sentence, the text before and after the
    connective; for a sentence-initial "although/though/whereas/while", the subordinate clause up to
    the first comma and the rest; for a sentence-initial "but/however/yet/...", the previous
    sentence and this one.
``negation``
    A negation word (VADER's ``NEGATE`` list, plus any word with "n't", as VADER's ``negated``)
    within :data:`NEGATION_WINDOW` words before a VADER lexicon word of |valence| >=
    :data:`SENTIMENT_MIN_VALENCE` (VADER looks at the same 3 preceding words).
``sarcasm``
    A heuristic, not a detector: any cue of :data:`SARCASM_CUES`, written-irony markers after
    Carvalho et al. 2009 ("Clues for Detecting Irony in User-Generated Contents"): a single
    lower-case positive lexicon word in quotation marks (scare quotes: 'the "best" scene'; quoted
    titles are capitalised or longer and do not count), a stock ironic phrase, or an explicit sarcasm
    tag. Its precision on movie reviews is unmeasured; it misses sarcasm without such cues.
"""

from __future__ import annotations

import functools
import re

import numpy as np

SLICES = ("mixed", "contrast", "negation", "sarcasm")
#: minimum VADER pos and neg share (each, of the whole review) for ``mixed``
MIXED_MIN_SHARE = 0.1
#: VADER's neutral band on the compound score: |compound| < 0.05 is neutral
POLARITY_THRESHOLD = 0.05
CONNECTIVES = ("but", "however", "although", "though", "yet", "whereas", "nevertheless", "nonetheless", "while")
#: connectives that open a subordinate clause when they start a sentence ("Although X, Y")
SUBORDINATING = ("although", "though", "whereas", "while")
#: words before a sentiment word in which a negation counts (VADER's own window)
NEGATION_WINDOW = 3
SENTIMENT_MIN_VALENCE = 1.0
#: cue name -> regular expression over the lower-cased review (the scare-quote cue is checked in code)
SARCASM_CUES = {
    "ironic phrase": re.compile(
        r"\b(yeah,? right|oh,? (great|joy|goody|wonderful|brilliant|perfect)\b|gee,? thanks|thanks a lot\b|"
        r"thanks for nothing|big surprise|what a surprise|how original|just what (i|we|the world) needed|"
        r"as if that|because that makes (perfect |total )?sense)"),
    "sarcasm tag": re.compile(r"(^|\s)/s\b|#sarcasm|\(sarcasm\)|\bnot!"),
}
#: one quoted word, straight or curly quotes (scare quotes; a quoted title is capitalised or longer)
_QUOTED = re.compile(r"[\"“]\s*([\w'-]+)\s*[\"”]")
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")
_WORDS = re.compile(r"[a-z]+(?:'[a-z]+)?")


@functools.lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def _clean(text: str) -> str:
    return re.sub(r"<br\s*/?>", "\n", text).replace("’", "'")


def _polarity(text: str) -> int:
    """+1, -1 or 0: VADER compound against the neutral band."""
    compound = _vader().polarity_scores(text)["compound"] if text.strip() else 0.0
    return 1 if compound >= POLARITY_THRESHOLD else -1 if compound <= -POLARITY_THRESHOLD else 0


def is_mixed(text: str) -> bool:
    """VADER pos and neg shares of the review both >= MIXED_MIN_SHARE."""
    scores = _vader().polarity_scores(_clean(text))
    return scores["pos"] >= MIXED_MIN_SHARE and scores["neg"] >= MIXED_MIN_SHARE


def _clause_pairs(text: str):
    """(before, after) clause pairs around each contrastive connective."""
    pattern = re.compile(r"\b(" + "|".join(CONNECTIVES) + r")\b", re.IGNORECASE)
    sentences = [s for s in _SENTENCES.split(_clean(text)) if s.strip()]
    for i, sentence in enumerate(sentences):
        for match in pattern.finditer(sentence):
            before, after = sentence[:match.start()], sentence[match.end():]
            if before.strip(" \t\"'(-,;:"):
                yield before, after
            elif match.group(1).lower() in SUBORDINATING and "," in after:
                clause, _, rest = after.partition(",")
                yield clause, rest
            elif i > 0:
                yield sentences[i - 1], after


def is_contrast(text: str) -> bool:
    """A connective of CONNECTIVES between clauses of opposite VADER polarity."""
    return any(_polarity(a) * _polarity(b) < 0 for a, b in _clause_pairs(text))


def is_negation(text: str) -> bool:
    """A VADER negation within NEGATION_WINDOW words before a lexicon word of |valence| >= SENTIMENT_MIN_VALENCE."""
    from vaderSentiment.vaderSentiment import negated

    lexicon = _vader().lexicon
    words = _WORDS.findall(_clean(text).lower())
    for i, word in enumerate(words):
        if abs(lexicon.get(word, 0.0)) >= SENTIMENT_MIN_VALENCE and not negated([word]):
            if negated(words[max(0, i - NEGATION_WINDOW):i]):
                return True
    return False


def sarcasm_cues(text: str) -> list[str]:
    """Names of the SARCASM_CUES (and ``scare quotes``) found in the review."""
    cleaned = _clean(text)
    found = [name for name, pattern in SARCASM_CUES.items() if pattern.search(cleaned.lower())]
    lexicon = _vader().lexicon
    if any(word.islower() and lexicon.get(word, 0.0) > 0 for word in _QUOTED.findall(cleaned)):
        found.append("scare quotes")
    return found


def is_sarcasm(text: str) -> bool:
    """At least one sarcasm cue (a heuristic: see the module docstring)."""
    return bool(sarcasm_cues(text))


RULES = {"mixed": is_mixed, "contrast": is_contrast, "negation": is_negation, "sarcasm": is_sarcasm}


def slice_flags(texts, names=SLICES) -> dict[str, np.ndarray]:
    """Slice name -> (n,) bool array: which reviews each rule flags. ``texts``: (n,) str."""
    texts = list(texts)
    return {name: np.fromiter((RULES[name](t) for t in texts), dtype=bool, count=len(texts)) for name in names}
