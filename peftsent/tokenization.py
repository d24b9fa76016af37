"""The token policy: how many tokens of a review a model sees, and which ones.

One function, :func:`token_policy`, decides it for every path that tokenizes
(training, the end-of-training evaluation, ``peftsent.eval``, ``predict``,
merge's parity probe, and the tokenizer settings saved beside the weights), from

* the model's usable positions (``registry.usable_positions``; RoBERTa loses 2 to its padding offset),
* the recipe's ``model.max_length`` (tokens per review, special tokens included) and ``model.truncation``,
* the positions a prompt method prepends (``num_virtual_tokens`` of the model's own peft config).

Truncation modes (``model.truncation``):

``head``       the first ``max_length`` tokens (the tokenizer's default).
``tail``       the last ``max_length`` tokens (a tokenizer with ``truncation_side='left'``).
``head+tail``  the first ``H`` and the last ``max_length - H`` review tokens (special tokens kept), with
               ``H = min(128, ceil(budget / 4))`` and ``budget = max_length - special tokens``: Sun et al. 2019
               ("How to Fine-Tune BERT for Text Classification?") keep 128 + 382 of 510; below
               ``max_length`` 512 + 2 the head shrinks to a quarter of the budget (max_length 128: 32 + 94),
               so the tail always gets most of the room.

Scoring a review longer than ``max_length`` (``model.long_reviews``, ``TokenPolicy.long_reviews``):

``truncate``   score the truncated review (the tokens training saw), one forward pass.
``window``     score overlapping windows of ``max_length`` tokens, ``stride`` tokens shared (default
               ``max_length // 2``), and average their logits (:func:`peftsent.inference.window_logits`); a
               review that fits is one window and scores as under ``truncate``. Training is unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from peftsent.methods import METHODS, method_spec
from peftsent.registry import ARCHITECTURES, usable_positions

TRUNCATIONS = ("head", "tail", "head+tail")
#: how a review longer than max_length is scored (see the module docstring)
LONG_REVIEWS = ("truncate", "window")
#: review tokens kept from the start under head+tail (Sun et al. 2019), at most
HEAD_TOKENS = 128


@dataclass(frozen=True)
class TokenPolicy:
    """Tokens per review and which of them survive truncation."""

    max_length: int
    """tokens per review after truncation, special tokens included (virtual tokens not included)"""
    truncation: str = "head"
    """``head``, ``tail`` or ``head+tail`` (see the module docstring)"""
    long_reviews: str = "truncate"
    """how a longer review is scored: ``truncate`` or ``window`` (see the module docstring)"""
    stride: int | None = None
    """``window``: tokens shared by consecutive windows; None: ``max_length // 2``"""

    def head_tokens(self, budget: int) -> int:
        """Review tokens kept from the start under head+tail, for ``budget`` review tokens in all."""
        return min(HEAD_TOKENS, math.ceil(budget / 4))

    def encode(self, tokenizer, texts: list[str]) -> dict[str, list]:
        """Tokenize ``texts`` under this policy.

        Returns lists per review: ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the
        tokenizer makes them), ``length`` (tokens after truncation), ``n_tokens`` (tokens before
        truncation, special tokens included) and ``truncated`` (bool). No padding.
        """
        import transformers

        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # the untruncated pass warns about long sequences
        try:
            full = tokenizer(list(texts), truncation=False, return_special_tokens_mask=True)
        finally:
            transformers.logging.set_verbosity(verbosity)
        columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in full]
        out: dict[str, list] = {c: [] for c in (*columns, "length", "n_tokens", "truncated")}
        for row in range(len(full["input_ids"])):
            keep = self._kept_positions(full["special_tokens_mask"][row])
            for column in columns:
                values = full[column][row]
                out[column].append([values[i] for i in keep])
            out["length"].append(len(keep))
            out["n_tokens"].append(len(full["input_ids"][row]))
            out["truncated"].append(len(keep) < len(full["input_ids"][row]))
        return out

    def _kept_positions(self, special_mask: list[int]) -> list[int]:
        """Positions of one untruncated encoding that survive: leading/trailing specials + chosen review tokens."""
        n = len(special_mask)
        if n <= self.max_length:
            return list(range(n))
        front = 0
        while front < n and special_mask[front]:
            front += 1
        back = n
        while back > front and special_mask[back - 1]:
            back -= 1
        content = list(range(front, back))
        budget = max(0, self.max_length - (n - len(content)))
        if self.truncation == "head":
            chosen = content[:budget]
        elif self.truncation == "tail":
            chosen = content[len(content) - budget:] if budget else []
        else:
            head = self.head_tokens(budget)
            chosen = content[:head] + (content[len(content) - (budget - head):] if budget > head else [])
        return [*range(front), *chosen, *range(back, n)]

    def for_scoring(self, long_reviews: str = "auto", stride: int | None = None) -> "TokenPolicy":
        """The policy an evaluation or prediction scores with: ``long_reviews`` ``auto`` keeps this policy's own
        (a run's recipe, a saved model's tokenizer config), ``truncate`` / ``window`` replace it; ``stride``
        (window only) replaces the stride. Raises ValueError for an unknown mode or a stride without windows."""
        check_scoring_request(long_reviews, stride)
        mode = self.long_reviews if long_reviews == "auto" else long_reviews
        if stride is not None and mode != "window":
            check_scoring_request(mode, stride)  # auto on a truncating target: the same message
        if mode != "window":
            return replace(self, long_reviews=mode, stride=None)
        return replace(self, long_reviews=mode, stride=stride if stride is not None else
                       (self.stride if self.long_reviews == "window" else None))

    def configure(self, tokenizer):
        """Set a tokenizer's own settings to this policy where a plain tokenizer can express it.

        ``model_max_length`` = ``max_length``; ``truncation_side`` = ``left`` for tail, ``right`` otherwise;
        ``padding_side`` = ``right`` (how every peftsent batch is padded, whatever the base tokenizer said).
        head+tail cannot be expressed: a plain ``pipeline(..., truncation=True)`` user of a head+tail model
        gets head truncation (the first ``max_length`` tokens). The mode itself is saved as
        ``peftsent_truncation`` in tokenizer_config.json (read back by :func:`saved_truncation`), so a copied
        adapter or merged model keeps it under peftsent. Returns the tokenizer.
        """
        side = "left" if self.truncation == "tail" else "right"
        tokenizer.model_max_length, tokenizer.truncation_side = self.max_length, side
        tokenizer.init_kwargs["truncation_side"] = side  # save_pretrained writes init_kwargs, not the attribute
        tokenizer.padding_side = tokenizer.init_kwargs["padding_side"] = "right"  # as peftsent.speed.BatchPadding pads
        tokenizer.init_kwargs[SAVED_TRUNCATION_KEY] = self.truncation
        tokenizer.init_kwargs[SAVED_LONG_REVIEWS_KEY] = self.long_reviews
        tokenizer.init_kwargs[SAVED_STRIDE_KEY] = self.stride
        return tokenizer


def check_scoring_request(long_reviews: str, stride: int | None) -> None:
    """A command line's ``--long-reviews`` / ``--stride``, checked before any model loads: the mode is ``auto`` or
    one of :data:`LONG_REVIEWS`, and a stride never comes with ``truncate``. Raises ValueError."""
    if long_reviews not in ("auto", *LONG_REVIEWS):
        raise ValueError(f"--long-reviews {long_reviews}: expected auto, {', '.join(LONG_REVIEWS)}")
    if stride is not None and long_reviews == "truncate":
        raise ValueError(f"--stride {stride} applies to windows only; add --long-reviews window")


#: tokenizer_config.json key holding a saved model's truncation mode (head, tail, head+tail)
SAVED_TRUNCATION_KEY = "peftsent_truncation"
#: tokenizer_config.json keys holding how a saved model scores long reviews (truncate, window) and its stride
SAVED_LONG_REVIEWS_KEY, SAVED_STRIDE_KEY = "peftsent_long_reviews", "peftsent_stride"


def saved_long_reviews(tokenizer) -> tuple[str, int | None]:
    """(long_reviews, stride) a peftsent export saved with its tokenizer, else ``("truncate", None)``."""
    saved = tokenizer.init_kwargs.get(SAVED_LONG_REVIEWS_KEY)
    if saved not in LONG_REVIEWS:
        return "truncate", None
    stride = tokenizer.init_kwargs.get(SAVED_STRIDE_KEY)
    return saved, (int(stride) if isinstance(stride, int) and not isinstance(stride, bool) else None)


def saved_truncation(tokenizer) -> str:
    """The truncation mode a peftsent export saved with its tokenizer (``peftsent_truncation``), else the
    tokenizer's own ``truncation_side`` (left: tail, right: head)."""
    saved = tokenizer.init_kwargs.get(SAVED_TRUNCATION_KEY)
    if saved in TRUNCATIONS:
        return saved
    return "tail" if getattr(tokenizer, "truncation_side", "right") == "left" else "head"


def virtual_tokens_of(model) -> int:
    """Positions a prompt method prepends to every input (its ``num_virtual_tokens``), else 0.

    Which methods prepend positions is the method registry's ``virtual_tokens_option`` (prompt and
    p-tuning; prefix tuning has virtual tokens but they take no input positions).
    """
    configs = getattr(model, "peft_config", None) or {}
    config = configs.get(getattr(model, "active_adapter", "default")) or next(iter(configs.values()), None)
    name = str(getattr(getattr(config, "peft_type", None), "value", "")).lower()
    option = method_spec(name).virtual_tokens_option if name in METHODS else None
    return int(getattr(config, option, 0) or 0) if option else 0


def token_policy(model, max_length: int, truncation: str = "head", long_reviews: str = "truncate",
                 stride: int | None = None) -> TokenPolicy:
    """THE token policy of ``model`` (a built or loaded model, peft-wrapped or not).

    ``max_length``: requested tokens per review (``model.max_length``), capped at the model's usable
    positions less the prompt method's virtual tokens. ``truncation``: one of :data:`TRUNCATIONS`.
    ``long_reviews`` / ``stride``: how longer reviews are scored (:data:`LONG_REVIEWS`; the stride is
    checked against the capped length by :func:`peftsent.inference.window_stride` where windows are made).
    Raises ValueError for an unknown truncation or long-review mode.
    """
    if truncation not in TRUNCATIONS:
        raise ValueError(f"model.truncation: expected one of {', '.join(TRUNCATIONS)}, found {truncation!r}")
    if long_reviews not in LONG_REVIEWS:
        raise ValueError(f"model.long_reviews: expected one of {', '.join(LONG_REVIEWS)}, found {long_reviews!r}")
    return TokenPolicy(review_tokens(model.config, max_length, virtual_tokens_of(model)), truncation,
                       long_reviews, stride if long_reviews == "window" else None)


def section_policy(model, section) -> TokenPolicy:
    """:func:`token_policy` of ``model`` under a recipe's ``model`` section (``max_length``, ``truncation``,
    ``long_reviews``, ``stride``): what train and every loaded target (peftsent.loading) call."""
    return token_policy(model, section.max_length, section.truncation, section.long_reviews, section.stride)


def review_tokens(model_config, requested: int, virtual: int = 0) -> int:
    """Tokens a review may have: ``requested``, capped at the usable positions less ``virtual`` prompt positions.

    The one formula of the cap; :func:`token_policy` (every tokenizing path) and the recipe-time check
    (``modeling.max_input_tokens``, before any weights load) both call it.
    """
    if model_config.model_type in ARCHITECTURES:
        limit = usable_positions(model_config)
    else:
        limit = int(getattr(model_config, "max_position_embeddings", requested))
    return min(int(requested), limit - virtual)


#: a review is "mostly unknown tokens" to a model when at least this share of its tokens (special tokens not
#: counted) is the tokenizer's unknown token: e.g. Chinese text to an English uncased WordPiece vocabulary.
#: Such a review is scored from [UNK] embeddings alone, so its label says nothing about the text.
UNKNOWN_SHARE = 0.5


def unknown_shares(tokenizer, texts: list[str]) -> list[float]:
    """Share of each review's tokens that are ``tokenizer.unk_token_id``, in [0, 1], over the whole review
    (untruncated, special tokens not counted). A review with no token at all counts as 1.0 (the model sees
    nothing of it); a tokenizer without an unknown token (byte-level BPE never needs one) gives 0.0 for all."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None or not texts:
        return [0.0] * len(texts)
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the untruncated pass warns about long sequences
    try:
        ids = tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
    finally:
        transformers.logging.set_verbosity(verbosity)
    return [sum(i == unk for i in row) / len(row) if row else 1.0 for row in ids]


def mostly_unknown(share: float) -> bool:
    """True if a review whose unknown-token share is ``share`` is mostly unknown (>= :data:`UNKNOWN_SHARE`)."""
    return share >= UNKNOWN_SHARE
