"""``peftsent serve TARGET [NAME=TARGET ...]``: an HTTP server that labels reviews, micro-batched across clients.

Endpoints (FastAPI on uvicorn; ``pip install "peftsent[serve]"``):

- ``POST /v1/predict`` ``{"texts": ["...", ...], "model": NAME}`` -> ``{"model": NAME, "predictions": [{"label",
  "score", "probabilities"}, ...]}``, one prediction per text in order: the same numbers as ``peftsent predict``
  (the token policy, long-review scoring and calibration temperature of each target; class names from the model's
  ``id2label``). ``model`` may be left out when one model is served (else: the first one).
- ``GET /v1/models``: the served models; ``GET /health``; ``GET /metrics`` (Prometheus text format: requests,
  texts, batch sizes, latency, errors); ``GET /``: a page to paste a review into.

Requests are micro-batched: ``--workers`` threads (default one per CPU core) each take a batch of up to
``--max-batch-size`` texts (closed ``--max-wait-ms`` after its first text) and score it with one intra-op thread
per core they own, in forward passes of at most :data:`FORWARD_ROWS` rows sorted by length (long reviews over
windows, as the model's policy scores them): on 2 cores, two single-threaded batches side by side served 3-9 %
more requests/s than one batch on two threads (docs/deploy.md). Each worker has its own tokenizers (fast
tokenizers are not thread-safe). Workers left idle take a share of the batch another one gathered; a lone batch
(no other worker busy, nothing queued) runs on every core.

Several LoRA adapters on one base, ``--adapters merged`` (the default): each adapter is merged, as ``predict``
merges it, into its own copy of the layers it changes; everything it leaves unchanged (embeddings, LayerNorms,
biases, untouched layers) is one tensor shared by all of them (:func:`_share_unchanged`). So an extra adapter costs
the layers it changes, not a model: for LoRA on every linear layer of MiniLM-L6, its 10.6M encoder weights (21 MiB
in bf16) of the model's 22.7M; for query/value LoRA, a third of that. Every adapter scores at the one-adapter speed
with exactly predict's weights. ``--adapters mixed``: the adapters stay unmerged on one shared base and texts of
different adapters run in the same forward passes, each row through its own adapter (peft's ``adapter_names``,
passed per thread so that workers share the base: :func:`_rows_per_thread`), so an extra adapter costs only its
own low-rank matrices and head; every row pays the low-rank path (slower), and in bf16 the numbers differ from
predict's by bf16 rounding (predict merges in float32 first). For many adapters on a
large base. Merged and other model directories, full runs, other adapters and hub ids load on their own.

Bad requests are 4xx answers that name the problem (400 invalid JSON, 404 unknown model, 413 too many or too long
texts or too large a body, 422 a missing or wrong field or an empty text); SIGTERM (or Ctrl+C) stops taking
connections, answers the requests in flight and exits 0.
"""

import asyncio
import dataclasses
import json
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from peftsent import __version__
from peftsent.calibration import temperature_for
from peftsent.cli import add_inference_arguments, make_parser, positive_int, run_cli
from peftsent.errors import DataError, PeftsentError
from peftsent.loading import add_adapter, adapter_head_labels, load_target, shared_adapter_source, target_run
from peftsent.modeling import label_config
from peftsent.predict import labelled, policy_logits
from peftsent.speed import can_merge, store_for_inference, target_dtype
from peftsent.tokenization import check_scoring_request

#: texts one micro-batch of a worker holds at most (a request with more runs alone)
DEFAULT_MAX_BATCH_SIZE = 32
#: rows (texts, or windows of long reviews) one forward pass holds at most: a micro-batch runs in passes of this
#: size, sorted by length, so a pass pads only to its own longest row (on MiniLM-L6 in bf16 on one core a window
#: of 256 tokens cost the same CPU time in passes of 4, 8 or 32 rows: 45-47 ms)
FORWARD_ROWS = 8
#: milliseconds the worker waits after a batch's first text for other requests' texts to join it
DEFAULT_MAX_WAIT_MS = 10
#: texts one request may hold
DEFAULT_MAX_TEXTS = 64
#: characters one text may have (the longest IMDb review has 13,704)
DEFAULT_MAX_CHARS = 20_000
#: the name of a target given without NAME=
DEFAULT_NAME = "default"
#: the characters a model name may use
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: how LoRA adapters on one base are held (``--adapters``): each merged into its own copy of the layers it
#: changes, or all unmerged on one base and mixed per row (peft's ``adapter_names``)
ADAPTER_MODES = ("merged", "mixed")

EPILOG = """examples:
  peftsent serve runs/quick/lora
  peftsent serve runs/quick/lora/merged --port 8080
  peftsent serve lora=runs/quick/lora dora=runs/quick/dora full=runs/quick/full --max-batch-size 64

  curl -s localhost:8000/v1/predict -H 'content-type: application/json' \\
       -d '{"texts": ["A wonderful film.", "Dull and far too long."], "model": "default"}'
  {"model": "default", "predictions": [{"label": "positive", "score": 0.97, "probabilities": {...}}, ...]}

LoRA runs on the same base share the tensors their adapters leave unchanged (--adapters merged) or one base
model, mixed per row (--adapters mixed). Open http://HOST:PORT/ to try a review.
"""


class RequestError(Exception):
    """A bad request: ``status`` (4xx) and a message that names the problem; the server answers and goes on."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason = status, reason


@dataclass
class Served:
    """One served model: a loaded target and how its texts are scored."""

    name: str
    target: str
    loaded: object
    """:class:`peftsent.loading.Loaded`; adapters on one base share ``loaded.model``"""
    policy: object
    """the :class:`peftsent.tokenization.TokenPolicy` texts are scored under (``--long-reviews``, ``--stride``)"""
    dtype: str
    """inference precision (:func:`peftsent.speed.target_dtype`)"""
    temperature: float
    """the calibration temperature logits are divided by (1.0: none)"""
    base: str | None = None
    """the base model location of a LoRA adapter (:func:`peftsent.loading.shared_adapter_source`), whose unchanged
    tensors it shares with the other adapters on that base; None for anything else"""
    shared_with: list = field(default_factory=list)
    """the names of the served models sharing memory with it, itself included (:func:`_shares_memory`: one mixed
    base, or tensors merged adapters leave unchanged); ``shares_base_with`` in ``GET /v1/models``"""
    adapter: str | None = None
    """``--adapters mixed``: its adapter's name inside the ``PeftModel`` it shares with other adapters (rows of a
    forward pass name it in ``adapter_names``); None when its model is its own (merged)"""

    @property
    def labels(self) -> list[str]:
        """Class names in the order of ``loaded.canonical``'s columns (``Loaded.labels``, from the model's id2label)."""
        return list(self.loaded.labels)

    def batch_key(self) -> tuple:
        """Texts of served models with equal keys run in the same forward passes."""
        return id(self.loaded.model), id(self.loaded.tokenizer), self.policy, self.dtype

    def describe(self) -> dict:
        """The model's entry in ``GET /v1/models``."""
        return {"name": self.name, "target": self.target, "kind": self.loaded.kind, "labels": self.labels,
                "max_length": self.policy.max_length, "long_reviews": self.policy.long_reviews,
                "temperature": self.temperature, "dtype": self.dtype, "shares_base_with": self.shared_with,
                "adapters": "mixed" if self.adapter is not None else "merged"}


def parse_targets(args: list[str]) -> list[tuple[str, str]]:
    """``TARGET`` / ``NAME=TARGET`` arguments -> (name, target) pairs; one bare target is named ``default``.

    An argument that is an existing path is a target even if it holds ``=``. Raises DataError for a bad or
    repeated name, or two targets without names.
    """
    pairs, problems = [], []
    for arg in args:
        name, sep, target = arg.partition("=")
        if not sep or Path(arg).expanduser().exists():
            name, target = DEFAULT_NAME, arg
        elif not NAME_PATTERN.fullmatch(name) or not target:
            problems.append(f"'{arg}': expected NAME=TARGET with a NAME of letters, digits, '_', '.', '-' "
                            f"(up to 64) and a TARGET")
            continue
        pairs.append((name, target))
    names = [name for name, _ in pairs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        problems.append(f"model name(s) {', '.join(map(repr, repeated))} given twice; name every target: NAME=TARGET "
                        f"(a target without a name is called '{DEFAULT_NAME}')")
    if problems:
        raise DataError("; ".join(problems))
    return pairs


def load_models(pairs: list[tuple[str, str]], dtype: str = "auto", long_reviews: str = "auto",
                stride: int | None = None, label_order: str | None = None,
                allow_random_weights: bool = False, adapters: str = "merged") -> dict[str, Served]:
    """Load every (name, target), each as ``peftsent predict`` loads and scores it; LoRA adapters on the same base
    share memory as ``adapters`` says.

    ``dtype``, ``long_reviews``, ``stride``, ``label_order``, ``allow_random_weights``: as in ``peftsent predict``.
    ``adapters``: ``merged`` (default): each adapter is merged into its own copy of the layers it changes (as
    predict merges it) and stored in its precision (:func:`_prepare`); every tensor it leaves unchanged is shared
    (:func:`_share_unchanged`). ``mixed``: adapters on one base are loaded into one ``PeftModel``
    (:func:`peftsent.loading.add_adapter`), one per precision (``dtype``: the adapters scored in bf16 share one
    base, those in float32 another), stay unmerged, and run in mixed batches (:func:`_prepare_mixed`); a base
    with a single adapter is merged as above. Returns name -> Served in the given order. Raises a
    PeftsentError subclass (ModelError, RunDirError, DataError) for a target that cannot be loaded or scored so,
    ValueError for an unknown ``adapters``.
    """
    if adapters not in ADAPTER_MODES:
        raise ValueError(f"adapters={adapters!r}: expected one of {', '.join(ADAPTER_MODES)}")
    served: dict[str, Served] = {}
    # (base location, precision) -> the first adapter on it, whose PeftModel others join: adapters scored in
    # other precisions get a base of their own, stored for good in theirs (casting a shared base for one
    # adapter's batch would change it under another worker's batch)
    hosts: dict[tuple[str, str], Served] = {}
    for name, target in pairs:
        source = shared_adapter_source(target)
        base = source[1] if source else None
        loaded, adapter, key = None, None, (base, target_dtype(dtype, target_run(target)))
        if adapters == "mixed" and base is not None:
            host = hosts[key].loaded if key in hosts else None
            reason = _unmixable(target, source[0], host)  # from its files: before it can touch a shared base
            if reason is None and host is not None:  # join the host's PeftModel: its own weights are all it adds
                adapter = _adapter_key(name, host.model.peft_config)
                loaded = add_adapter(host, target, adapter, label_order, allow_random_weights)
                reason = _variant(host.model, adapter)
                if reason is not None:
                    host.model.delete_adapter(adapter)
                    loaded = adapter = None
            if reason is None and host is None:
                loaded = load_target(target, label_order=label_order, allow_random_weights=allow_random_weights)
                reason = _variant(loaded.model, loaded.model.active_adapter)
                adapter = None if reason else loaded.model.active_adapter
            if reason is not None:
                print(f"serving {name}: {reason}; merged on its own (--adapters merged)", file=sys.stderr)
        if loaded is None:
            loaded = load_target(target, label_order=label_order, allow_random_weights=allow_random_weights)
        try:
            policy = loaded.policy.for_scoring(long_reviews, stride)
        except ValueError as err:
            raise DataError(f"{name}={target}: {err}") from None
        entry = Served(name, target, loaded, policy, target_dtype(dtype, loaded.run, loaded.model),
                       temperature_for(loaded) or 1.0, base=base, adapter=adapter)
        if adapter is not None and key not in hosts:
            hosts[key] = entry  # prepared once every adapter has joined (or merged, if none does)
        elif adapter is None:
            _merge_and_share(entry, served.values())
        served[name] = entry
        _share_tokenizer(entry, served.values())
        trim_memory()  # the float32 copies of this load go back to the system before the next one
    for host in hosts.values():
        joined = [entry for entry in served.values()
                  if entry.adapter is not None and entry.loaded.model is host.loaded.model]
        if len(joined) > 1:
            _prepare_mixed(joined)
        else:  # no other adapter joined it: one adapter, merged as predict merges it
            host.adapter = None
            _merge_and_share(host, [entry for entry in served.values() if entry is not host])
    for entry in served.values():
        entry.shared_with = [other.name for other in served.values() if _shares_memory(entry, other)]
    return served


def _shares_memory(a: Served, b: Served) -> bool:
    """True when ``a`` and ``b`` run on one model (an adapter mixed on a base, or the same object) or hold one
    tensor in common (merged adapters sharing what they leave unchanged, :func:`_share_unchanged`)."""
    if a is b or a.loaded.model is b.loaded.model:
        return True
    tensors = [getattr(served.loaded.model, "parameters", None) for served in (a, b)]
    if None in tensors:  # an exported (ONNX Runtime) model
        return False
    held = {id(t) for t in tensors[0]()}
    return any(id(t) in held for t in tensors[1]())


def _share_tokenizer(entry: Served, others) -> None:
    """Give ``entry`` the tokenizer of the first of ``others`` whose tokenizer splits texts the same way
    (:func:`_same_tokenizer`): one object, so every worker holds one copy of it, not one per served model (a
    MiniLM tokenizer copy took 7.7 MiB), and the texts of adapters mixed on one base share forward passes
    (:meth:`Served.batch_key`)."""
    for other in others:
        if other is entry or other.loaded.tokenizer is entry.loaded.tokenizer:
            return
        if _same_tokenizer(entry.loaded.tokenizer, other.loaded.tokenizer):
            entry.loaded = dataclasses.replace(entry.loaded, tokenizer=other.loaded.tokenizer)
            return


def _merge_and_share(entry: Served, others) -> None:
    """Prepare ``entry`` on a model of its own (:func:`_prepare`: merged, stored in its precision) and share every
    tensor it holds unchanged with the first other merged adapter on its base (:func:`_share_unchanged`)."""
    _prepare(entry)
    first = next((other for other in others if entry.base and other.base == entry.base and other.adapter is None
                  and other.loaded.model is not entry.loaded.model), None)
    if first is not None:
        _share_unchanged(entry.loaded.model, first.loaded.model)


#: LoRA options whose adapter cannot share a base with others: (config field, why), each when set (not None,
#: False, empty or ``"none"``)
_UNMIXABLE_OPTIONS = (
    ("use_dora", "a DoRA adapter cannot run in mixed batches (peft refuses adapter_names with DoRA)"),
    ("bias", "its run trained the base model's biases (bias: {}), which every adapter on a shared base would get"),
    ("trainable_token_indices", "its run trained token embeddings (trainable_token_indices), which mixed batches "
                                "do not switch per row"),
    ("layer_replication", "its run replicated base layers (layer_replication), which a shared base cannot hold "
                          "per adapter"),
    ("target_parameters", "its run adapted parameters (target_parameters), which peft does not mix per row"),
)
#: ``init_lora_weights`` of adapters that leave the base weights alone: peft's PiSSA, OLoRA, CorDA, LoftQ and
#: LoRA-GA (``lora_ga_init``: ``W - scaling * B @ A``), and any other, take their start out of the base weights
_MIXABLE_INITS = (True, False, "gaussian", "eva", "orthogonal")


def _unmixable(target: str, adapter_dir, host) -> str | None:
    """Why the LoRA adapter of ``target`` (saved in ``adapter_dir``) cannot run in mixed batches on ``host``'s base
    model (a Loaded, or None for the first adapter on a base), read from its files before anything loads (None:
    nothing found; :func:`_variant` checks the loaded layers). An adapter that changes the base model itself
    (trained biases, replicated layers, an initialisation taken out of the base weights: :data:`_MIXABLE_INITS`)
    would change it for every adapter on it, and neither trained tokens nor parameter targets (peft refuses them)
    switch per row (:data:`_UNMIXABLE_OPTIONS`); the adapters of one base model share its ``config`` and so must
    share its classes (``id2label``: count and names, :func:`peftsent.loading.adapter_head_labels`)."""
    from peft import PeftConfig

    config = PeftConfig.from_pretrained(str(adapter_dir))
    for option, reason in _UNMIXABLE_OPTIONS:
        value = getattr(config, option, None)
        if value not in (None, False, "none") and not (hasattr(value, "__len__") and not len(value)):
            return reason.format(value)
    if getattr(config, "init_lora_weights", True) not in _MIXABLE_INITS:
        return (f"its adapter started from the base weights (init_lora_weights: {config.init_lora_weights}), "
                f"which peft changes on loading it, for every adapter on a shared base")
    if host is not None:
        ours = label_config(adapter_head_labels(target))["id2label"]
        theirs = {int(i): name for i, name in host.model.config.id2label.items()}
        if ours != theirs:
            return f"its classes {ours} differ from those of the adapter it would share a base with ({theirs})"
    return None


def _variant(model, adapter: str) -> str | None:
    """Why ``adapter`` of the loaded ``model`` cannot run in mixed batches: a LoRA variant on its layers (peft
    mixes no variant; DoRA is already refused from its config, :data:`_UNMIXABLE_OPTIONS`); None: plain LoRA."""
    from peft.tuners.lora import LoraLayer

    variants = sorted({type(layer.lora_variant[adapter]).__name__ for layer in model.modules()
                       if isinstance(layer, LoraLayer) and adapter in getattr(layer, "lora_variant", {})})
    return f"a LoRA variant ({', '.join(variants)}) cannot run in mixed batches" if variants else None


def _adapter_key(name: str, taken) -> str:
    """A peft adapter name for a served name, none of ``taken`` (the names the model holds already: served names
    that differ only in '.', '-' and '_' map to one name, and loading an adapter under a name it holds replaces
    that adapter's weights); peft keeps its own names, and '.' would split module paths."""
    key = stem = "served_" + name.replace(".", "_").replace("-", "_")
    count = 1
    while key in taken:
        count += 1
        key = f"{stem}_{count}"
    return key


def _same_tokenizer(a, b) -> bool:
    """True when ``a`` and ``b`` split every text into the same ids (same class, vocabulary, normalizer,
    special tokens and sides, and ``split_special_tokens``: whether "[SEP]" written in a review is the separator
    or text, a setting of the Python tokenizer that its serialized backend does not show), and every other
    setting it was made with (``init_kwargs`` but its file locations), so served models may share one tokenizer
    object (:func:`_share_tokenizer`) and adapters on one base their forward passes."""
    if type(a) is not type(b):
        return False
    backend = [getattr(t, "backend_tokenizer", None) for t in (a, b)]
    if None in backend or backend[0].to_str() != backend[1].to_str():
        return False
    if not all(getattr(a, key, None) == getattr(b, key, None) for key in (
            "all_special_tokens", "split_special_tokens", "padding_side", "truncation_side", "model_max_length",
            "model_input_names")):
        return False
    # and every setting it was made with (tokenizer_config.json), but where its files lie: a setting a later
    # transformers passes per call, as it does split_special_tokens, keeps two tokenizers apart too
    return _tokenizer_settings(a) == _tokenizer_settings(b)


#: ``init_kwargs`` of a tokenizer that say where its files are, not how it splits a text
_TOKENIZER_PATH_KEYS = frozenset({"name_or_path", "vocab_file", "tokenizer_file", "merges_file", "is_local",
                                  "local_files_only", "_commit_hash"})


def _tokenizer_settings(tokenizer) -> dict:
    return {key: value for key, value in getattr(tokenizer, "init_kwargs", {}).items()
            if key not in _TOKENIZER_PATH_KEYS}


def _prepare_mixed(entries: list[Served]) -> None:
    """Adapters sharing one base model for mixed batches: eval mode, unmerged; every module peft keeps per adapter
    (the head, BERT's pooler) made able to run a mixed batch (:func:`_mix_any_head`); the rows' adapters passed per
    thread (:func:`_rows_per_thread`); stored for good in their one precision (``entries`` share a ``dtype``,
    :func:`load_models`; :func:`peftsent.speed.store_for_inference`: in bf16 the low-rank matrices too, so the
    numbers are predict's within bf16 rounding). Never cast per batch: another worker may be running on it."""
    import torch

    model = entries[0].loaded.model
    model.eval()
    if torch.cuda.is_available():
        model.to("cuda")
    _mix_any_head(model)
    _rows_per_thread(model)
    (dtype,) = {entry.dtype for entry in entries}
    store_for_inference(model, dtype)


#: the ``adapter_names`` of the forward pass the current thread is running (:func:`_rows_per_thread`)
_ROWS = threading.local()


def _rows_per_thread(model) -> None:
    """Let several threads run mixed batches on one ``PeftModel`` at once.

    peft hands ``model(..., adapter_names=[...])`` to the layers by registering forward hooks on the shared
    modules for the duration of the call (``LoraModel._enable_peft_forward_hooks``): two threads' calls would each
    see both sets of hooks (and an exception leaves them registered). Here each LoRA layer and per-adapter module
    gets one permanent hook that reads the names of the calling thread's forward pass, which the model's
    ``_enable_peft_forward_hooks`` (replaced on this instance) sets for the duration of the call.
    """
    import contextlib
    import types

    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer
    from peft.tuners.lora.layer import VARIANT_KWARG_KEYS
    from peft.utils import ModulesToSaveWrapper

    @contextlib.contextmanager
    def per_thread(self, *args, **kwargs):
        names = kwargs.pop("adapter_names", None)
        if names is None:
            yield
            return
        if self.training:
            raise ValueError("adapter_names: the model is in training mode")
        _ROWS.adapter_names, _ROWS.groups = names, _row_groups(names)
        try:
            yield
        finally:
            _ROWS.adapter_names = _ROWS.groups = None

    def inject(module, args, kwargs):
        names = getattr(_ROWS, "adapter_names", None)
        if names is not None:
            kwargs["adapter_names"] = names
        return args, kwargs

    global _VARIANT_KEYS
    _VARIANT_KEYS = tuple(VARIANT_KWARG_KEYS)
    for module in model.modules():
        if isinstance(module, (LoraLayer, ModulesToSaveWrapper)):
            module.register_forward_pre_hook(inject, with_kwargs=True)
        if isinstance(module, LoraLinear) and not module.lora_variant:
            module._mixed_batch_forward = types.MethodType(_grouped_lora_forward, module)
    model.base_model._enable_peft_forward_hooks = types.MethodType(per_thread, model.base_model)


#: peft's LoRA-variant keyword arguments, which :func:`_grouped_lora_forward` keeps from the base layer (set once
#: peft is imported, by :func:`_rows_per_thread`)
_VARIANT_KEYS: tuple[str, ...] = ()


def _row_groups(adapter_names: list[str]) -> list[tuple[str, object]]:
    """(adapter, rows) for each adapter of a forward pass's rows, in order of first appearance: ``rows`` a slice
    where its rows are one contiguous block (as :func:`peftsent.speed.batch_order` arranges them), else an index
    tensor."""
    import torch

    groups = []
    for adapter in dict.fromkeys(adapter_names):
        picked = [i for i, name in enumerate(adapter_names) if name == adapter]
        contiguous = picked[-1] - picked[0] + 1 == len(picked)
        groups.append((adapter, slice(picked[0], picked[-1] + 1) if contiguous else torch.as_tensor(picked)))
    return groups


def _groups_of(adapter_names: list[str]) -> list[tuple[str, object]]:
    """:func:`_row_groups` of a forward pass's ``adapter_names``: the calling thread's, computed once per pass
    (:func:`_rows_per_thread`), else computed here."""
    if getattr(_ROWS, "adapter_names", None) is adapter_names and _ROWS.groups is not None:
        return _ROWS.groups
    return _row_groups(adapter_names)


def _grouped_lora_forward(self, x, *args, adapter_names: list[str], **kwargs):
    """peft's ``lora.Linear._mixed_batch_forward`` (the base layer on every row, then each adapter's
    ``lora_B(lora_A(dropout(x))) * scaling`` added to its own rows), with each adapter's rows taken as a slice
    and added in place where they are one block: peft gathers them with a list index and scatters the result
    back in every LoRA layer (``aten::index`` and ``index_put_``: 11 % of a mixed pass's CPU time on MiniLM-L6).
    The same operations on the same rows, so the same numbers. ``x``: (batch, ..., in_features)."""
    for key in _VARIANT_KEYS:  # a LoRA variant's arguments (aLoRA's offsets): not the base layer's
        kwargs.pop(key, None)
    result = self.base_layer(x, *args, **kwargs)
    for adapter, rows in _groups_of(adapter_names):
        if adapter not in self.lora_A:  # "__base__", or a layer this adapter leaves alone
            continue
        lora_A, lora_B = self.lora_A[adapter], self.lora_B[adapter]
        delta = lora_B(lora_A(self.lora_dropout[adapter](x[rows].to(lora_A.weight.dtype)))) * self.scaling[adapter]
        result[rows] += delta.to(result.dtype)
    return result


def _mix_any_head(model) -> None:
    """Let every module a peft model keeps per adapter (the classification head, BERT's pooler) run a mixed batch.

    peft's ``ModulesToSaveWrapper._mixed_batch_forward`` refuses modules other than Linear, Embedding and Conv
    (BERT's ``pooler``, RoBERTa's ``classifier`` are modules of their own), though their input is batch-first
    too: this instance-level replacement does what peft does for a Linear, per adapter's rows, for any module.
    """
    import types

    from peft.utils import ModulesToSaveWrapper

    for module in model.modules():
        if isinstance(module, ModulesToSaveWrapper):
            module._mixed_batch_forward = types.MethodType(_mixed_head_forward, module)


def _mixed_head_forward(self, input, *args, adapter_names: list[str], **kwargs):
    """Rows of ``input`` (batch first) through the copy of the module of their adapter; results in row order."""
    import torch

    outputs, positions, every = [], [], torch.arange(input.shape[0])
    for adapter, rows in _groups_of(adapter_names):
        module = self.modules_to_save[adapter] if adapter in self.modules_to_save else self.original_module
        outputs.append(module(input[rows], *args, **kwargs))
        positions.append(every[rows])
    return torch.cat(outputs)[torch.argsort(torch.cat(positions)).to(input.device)]


def _prepare(entry: Served) -> None:
    """Eval mode; a mergeable adapter merged into its base weights in float32 (as predict does, so the numbers
    are predict's); then stored for good in the served precision (:func:`peftsent.speed.store_for_inference`:
    the bf16 bits predict's :func:`peftsent.speed.inference_precision` gives, cast once, not at every batch)."""
    import torch

    model = entry.loaded.model
    if not isinstance(model, torch.nn.Module):  # an exported model (ONNX Runtime): scored as loading gives it
        return
    model.eval()
    if torch.cuda.is_available():
        model.to("cuda")
    if can_merge(model):
        model.merge_adapter()
    store_for_inference(model, entry.dtype)


def _tensor_key(module_name: str, leaf: str) -> str:
    """A tensor's name with peft's wrapping left out (``query.base_layer.weight`` -> ``query.weight``), so a layer
    one adapter wraps and another does not still compare."""
    return f"{module_name}.{leaf}".replace(".base_layer.", ".")


def _share_unchanged(model, reference) -> int:
    """Point every parameter and buffer of ``model`` whose name, shape, dtype, device and values equal one of
    ``reference``'s at ``reference``'s tensor (the old one is freed). Both are prepared (merged, stored in their
    precision) and never written again, so sharing cannot change a number. Returns the bytes shared.

    For two LoRA adapters on one base this shares the embeddings, LayerNorms, biases and every layer the adapters
    leave alone; each keeps its own merged copy of the layers it changes (for ``all-linear`` on MiniLM-L6: the
    10.6M encoder weights, 21 MiB in bf16) and its head."""
    import torch

    tensors = {}
    for module_name, module in reference.named_modules():
        for store in (module._parameters, module._buffers):
            tensors.update({_tensor_key(module_name, leaf): t for leaf, t in store.items() if t is not None})
    shared = 0
    for module_name, module in model.named_modules():
        for store in (module._parameters, module._buffers):
            for leaf, tensor in list(store.items()):
                same = tensors.get(_tensor_key(module_name, leaf))
                if (tensor is None or same is None or same is tensor or same.shape != tensor.shape
                        or same.dtype != tensor.dtype or same.device != tensor.device or not torch.equal(same, tensor)):
                    continue
                store[leaf] = same
                shared += tensor.numel() * tensor.element_size()
    return shared


def trim_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim(0)``; elsewhere nothing): freed
    tensors and tokenizer buffers otherwise stay in the RSS of a long-running server, as fragments of several
    threads' arenas."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        import ctypes
        import ctypes.util
        import platform

        _MALLOC_TRIM = False
        if platform.libc_ver()[0] == "glibc":
            try:
                _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
            except (OSError, AttributeError):
                pass
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


#: glibc's malloc_trim once looked up; False where there is none
_MALLOC_TRIM = None


def score(jobs: list[tuple[Served, list[str]]], batch_size: int = FORWARD_ROWS) -> list[list[dict]]:
    """Predictions for a micro-batch: ``jobs`` are (served model, texts) pairs; returns one list of predictions
    per job, one dict per text: ``label``, ``score`` and ``probabilities`` (by class name), rounded to 6 places
    as ``peftsent predict`` prints them.

    Texts of one served model run together, sorted by length, in forward passes of at most ``batch_size`` rows
    (windows of long reviews as the model's policy scores them, :func:`peftsent.predict.policy_logits`); texts of
    adapters mixed on one base (``--adapters mixed``) share the passes, each row through its own adapter. Logits
    are divided by each model's temperature before the softmax. Not thread-safe for one ``Served`` (its tokenizer):
    each worker scores with its own copies (:func:`worker_copy`); a mixed base takes each thread's
    ``adapter_names`` from that thread (:func:`_rows_per_thread`), so workers share it.
    """
    import torch

    rows = [(entry, text, job) for job, (entry, texts) in enumerate(jobs) for text in texts]
    groups: dict[tuple, list[int]] = {}
    for index, (entry, _, _) in enumerate(rows):
        groups.setdefault(entry.batch_key(), []).append(index)
    results: list[list[dict]] = [[] for _ in jobs]
    predictions: list[dict | None] = [None] * len(rows)
    with torch.inference_mode():
        for indices in groups.values():
            first = rows[indices[0]][0]
            names = None if first.adapter is None else [rows[i][0].adapter for i in indices]
            logits = policy_logits(first.loaded, [rows[i][1] for i in indices], batch_size, first.dtype,
                                   first.policy, adapter_names=names)
            for i, row in zip(indices, logits):
                predictions[i] = _prediction(rows[i][0], row)
    for (_, _, job), prediction in zip(rows, predictions):
        results[job].append(prediction)
    return results


def worker_copy(models: dict[str, Served]) -> dict[str, Served]:
    """``models`` for one worker thread: the same model weights, a tokenizer of its own (a fast tokenizer is not
    safe to use from two threads at once, and scoring windows sets its ``truncation_side``); models that share a
    tokenizer (:func:`_share_tokenizer`) share its copy, so adapters mixed on one base still share passes."""
    import copy

    copies: dict[int, object] = {}
    for entry in models.values():
        copies.setdefault(id(entry.loaded.tokenizer), copy.deepcopy(entry.loaded.tokenizer))
    return {name: dataclasses.replace(entry, loaded=dataclasses.replace(
        entry.loaded, tokenizer=copies[id(entry.loaded.tokenizer)])) for name, entry in models.items()}


def _prediction(entry: Served, logits) -> dict:
    """One text's logits (num_labels,) -> label, score and probabilities, as ``peftsent predict`` prints them."""
    import torch

    canonical = torch.as_tensor(entry.loaded.canonical(logits[None, :]))[0] / entry.temperature
    return labelled(entry.labels, torch.softmax(canonical, dim=-1).tolist())


def default_workers() -> int:
    """One worker per CPU core this process may run on (one on a GPU: its kernels already fill it)."""
    try:
        import torch

        if torch.cuda.is_available():
            return 1
    except ImportError:
        pass
    return _cores()


def _cores() -> int:
    """CPU cores this process may run on (its affinity where the OS has one)."""
    import os

    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@dataclass
class _Job:
    served: Served
    texts: list[str]
    future: asyncio.Future


class Batcher:
    """Collects requests' texts into micro-batches that ``workers`` threads score, each its own batch at a time
    with its own tokenizers (:func:`worker_copy`) and ``cores // workers`` intra-op threads (small matmuls scale
    badly across threads: two batches on one core each beat one batch on two). A batch closes at
    ``max_batch_size`` texts or ``max_wait_ms`` after its first text, and runs in forward passes of
    ``forward_rows`` rows; while the workers compute, the next batch gathers. A request whose client went away
    before its batch ran is dropped, one that leaves later is answered into the void."""

    def __init__(self, models: dict[str, Served], max_batch_size: int, max_wait_ms: float, metrics: "Metrics",
                 workers: int = 1, forward_rows: int = FORWARD_ROWS):
        import collections
        import queue
        from concurrent.futures import ThreadPoolExecutor

        self.max_batch_size, self.max_wait, self.forward_rows = max_batch_size, max_wait_ms / 1000, forward_rows
        self.metrics, self.workers = metrics, workers
        self.views: queue.SimpleQueue = queue.SimpleQueue()  # one worker_copy per worker, taken for a batch
        for _ in range(workers):
            self.views.put(worker_copy(models))
        cores = _cores()
        self.cores, self.threads = cores, max(1, cores // workers)  # intra-op threads: all, and a worker's share
        # each batch sets its thread's intra-op threads (:meth:`_score`)
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="peftsent-model")
        self.queue: asyncio.Queue = asyncio.Queue()
        self.gathering: asyncio.Lock | None = None  # one batch gathers at a time
        self.pending: collections.deque = collections.deque()  # jobs left for the next batch, before the queue's
        self.stopping = False
        self.busy = 0  # workers scoring a batch now
        self.tasks: list[asyncio.Task] = []
        self.trimmed = time.monotonic()

    def start(self) -> None:
        self.gathering = asyncio.Lock()
        self.tasks = [asyncio.get_running_loop().create_task(self._run()) for _ in range(self.workers)]

    async def stop(self) -> None:
        """Finish the batches queued so far, then stop the workers."""
        await self.queue.put(None)
        await asyncio.gather(*self.tasks)
        self.executor.shutdown(wait=True)

    async def submit(self, served: Served, texts: list[str]) -> list[dict]:
        """Predictions for ``texts`` once their batch has run."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(served, texts, future))
        return await future

    async def _next_batch(self) -> tuple[list[_Job], bool]:
        """(jobs of one batch, whether the queue was told to stop). A job that does not fit goes back to the front
        of ``pending``, where the next batch starts."""
        loop = asyncio.get_running_loop()
        first = self.pending.popleft() if self.pending else await self.queue.get()
        if first is None:
            return [], True
        jobs, size, deadline = [first], len(first.texts), loop.time() + self.max_wait
        while size < self.max_batch_size:
            if self.pending:
                job = self.pending.popleft()
            else:
                try:
                    job = await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    break
            if job is None:
                return jobs, True
            if size + len(job.texts) > self.max_batch_size:
                self.pending.appendleft(job)
                break
            jobs.append(job)
            size += len(job.texts)
        return jobs, False

    def _share(self, jobs: list[_Job]) -> list[_Job]:
        """The jobs this worker keeps when other workers are idle: about its share of the texts (split by
        request); the rest go back to the front of ``pending`` for the next worker, so that a few clients keep
        every core busy instead of one worker scoring all their texts while the others wait."""
        idle = self.workers - self.busy - 1
        if idle <= 0 or len(jobs) < 2:
            return jobs
        share = -(-sum(len(job.texts) for job in jobs) // (idle + 1))
        kept, size = [], 0
        while jobs and (not kept or size < share):
            kept.append(jobs.pop(0))
            size += len(kept[-1].texts)
        self.pending.extendleft(reversed(jobs))
        return kept

    async def _run(self) -> None:
        """One worker's loop: gather a batch (one worker at a time), score it on the worker's thread, answer."""
        loop = asyncio.get_running_loop()
        while True:
            async with self.gathering:
                if self.stopping and not self.pending:
                    return
                jobs, told = await self._next_batch()
                self.stopping = self.stopping or told
                jobs = self._share([job for job in jobs if not job.future.done()])  # done: the client left
                # nothing else to do: a lone batch (one client) may use every core; else the worker's share
                alone = self.busy == 0 and not self.pending and self.queue.empty()
                self.busy += 1
            try:
                await self._answer(loop, jobs, self.cores if alone else self.threads)
            finally:
                self.busy -= 1

    async def _answer(self, loop, jobs: list[_Job], threads: int) -> None:
        """Score ``jobs`` on a worker thread with ``threads`` intra-op threads and answer them (a failing batch
        fails its requests, not the server)."""
        if not jobs:
            return
        self.metrics.batch_size.observe(sum(len(job.texts) for job in jobs))
        pairs = [(job.served.name, job.texts) for job in jobs]
        try:
            results = await loop.run_in_executor(self.executor, self._score, pairs, threads)
        except Exception as err:
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(err)
            return
        for job, result in zip(jobs, results):
            if not job.future.done():
                job.future.set_result(result)

    def _score(self, pairs: list[tuple[str, list[str]]], threads: int) -> list[list[dict]]:
        """On a worker thread: :func:`score` with a free worker's copies of the models; the C heap is trimmed
        at most once a second (:func:`trim_memory`), so the RSS of a long run stays flat."""
        import torch

        if torch.get_num_threads() != threads:  # this thread's own setting (OpenMP keeps it per thread)
            torch.set_num_threads(threads)
        view = self.views.get()
        try:
            return score([(view[name], texts) for name, texts in pairs], self.forward_rows)
        finally:
            self.views.put(view)
            if time.monotonic() - self.trimmed > TRIM_SECONDS:
                self.trimmed = time.monotonic()
                trim_memory()


#: seconds between two :func:`trim_memory` calls of a busy server
TRIM_SECONDS = 1.0


class Metrics:
    """The Prometheus metrics of one server (a registry of its own, so servers in one process do not mix)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("peftsent_requests", "predict requests answered, by model and HTTP status",
                                ["model", "status"], registry=self.registry)
        self.texts = Counter("peftsent_texts", "texts labelled, by model", ["model"], registry=self.registry)
        self.errors = Counter("peftsent_errors", "predict requests refused or failed, by reason", ["reason"],
                              registry=self.registry)
        self.latency = Histogram("peftsent_request_latency_seconds", "predict request latency, seconds from the "
                                 "request's arrival to its answer", registry=self.registry,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2, 5, 10, 30))
        self.batch_size = Histogram("peftsent_batch_size", "texts per micro-batch the worker scored",
                                    registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))


@dataclass
class Limits:
    """What one request may hold (documented in ``--help`` and docs/deploy.md)."""

    max_texts: int = DEFAULT_MAX_TEXTS
    max_chars: int = DEFAULT_MAX_CHARS

    @property
    def max_body_bytes(self) -> int:
        """The largest request body read: every text at its longest in 4-byte UTF-8, JSON-escaped, plus slack."""
        return self.max_texts * (self.max_chars * 6 + 16) + 4096


def parse_request(body: bytes, models: dict[str, Served], limits: Limits) -> tuple[Served, list[str]]:
    """A predict request body -> (served model, texts). Raises RequestError naming the problem."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(400, "invalid_json", f"the body is not valid JSON ({err}); expected "
                           '{"texts": ["a review", ...], "model": "NAME"}') from None
    if not isinstance(payload, dict):
        raise RequestError(422, "invalid_field", f"expected a JSON object {{\"texts\": [...], \"model\": ...}}, "
                           f"got {type(payload).__name__}")
    unknown = sorted(set(payload) - {"texts", "model"})
    if unknown:
        raise RequestError(422, "invalid_field", f"unknown field(s) {', '.join(map(repr, unknown))}; "
                           f"expected 'texts' and optionally 'model'")
    if "texts" not in payload:
        raise RequestError(422, "missing_field", "missing field 'texts': a list of reviews to label")
    texts = payload["texts"]
    if not isinstance(texts, list) or not texts:
        raise RequestError(422, "invalid_field", f"'texts' must be a non-empty list of strings, got "
                           f"{json.dumps(texts)[:80]}")
    if len(texts) > limits.max_texts:
        raise RequestError(413, "too_many_texts", f"{len(texts)} texts in one request; at most {limits.max_texts} "
                           f"(split the request, or start the server with a larger --max-texts)")
    not_text = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    empty = [i for i, text in enumerate(texts) if isinstance(text, str) and not text.strip()]
    long = [i for i, text in enumerate(texts) if isinstance(text, str) and len(text) > limits.max_chars]
    if not_text or empty:
        where = (f"not strings at indices {not_text[:10]}" if not_text else "") + \
                ("; " if not_text and empty else "") + (f"empty at indices {empty[:10]}" if empty else "")
        raise RequestError(422, "empty_text" if empty and not not_text else "invalid_field",
                           f"'texts' must hold non-empty strings: {where}")
    if long:
        raise RequestError(413, "text_too_long", f"texts at indices {long[:10]} are longer than {limits.max_chars} "
                           f"characters (the longest has {max(len(texts[i]) for i in long)}); shorten them, or start "
                           f"the server with a larger --max-chars")
    name = payload.get("model", next(iter(models)))
    if not isinstance(name, str) or name not in models:
        raise RequestError(404, "unknown_model", f"unknown model {json.dumps(name)}; served: {', '.join(models)}")
    return models[name], texts


async def _read_body(request, limit: int) -> bytes:
    """The request body, refused (413) once it passes ``limit`` bytes, declared or streamed."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, "body_too_large", f"the body has {declared} bytes; at most {limit} "
                           f"(--max-texts x --max-chars)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, "body_too_large", f"the body passed {limit} bytes (--max-texts x --max-chars)")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(models: dict[str, Served], max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
               max_wait_ms: float = DEFAULT_MAX_WAIT_MS, limits: Limits | None = None, workers: int | None = None):
    """The FastAPI application serving ``models`` (from :func:`load_models`) with ``workers`` scoring threads
    (default :func:`default_workers`); the batcher starts and stops with it."""
    import contextlib

    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    limits = limits or Limits()
    metrics = Metrics()
    state: dict = {"batcher": None}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["batcher"] = Batcher(models, max_batch_size, max_wait_ms, metrics, workers or default_workers())
        state["batcher"].start()
        yield
        await state["batcher"].stop()

    app = FastAPI(title="peftsent", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return PAGE

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(models)}

    @app.get("/v1/models")
    async def list_models():
        return {"models": [entry.describe() for entry in models.values()],
                "limits": {"max_texts": limits.max_texts, "max_chars": limits.max_chars}}

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/predict")
    async def predict(request: Request):  # a real annotation (no postponed evaluation here): FastAPI reads it
        started, name = time.perf_counter(), "-"
        try:
            entry, texts = parse_request(await _read_body(request, limits.max_body_bytes), models, limits)
            name = entry.name
            predictions = await state["batcher"].submit(entry, texts)
        except RequestError as err:
            metrics.errors.labels(err.reason).inc()
            metrics.requests.labels(name, str(err.status)).inc()
            return JSONResponse({"error": str(err)}, status_code=err.status)
        except Exception as err:  # a failed batch: this request fails, the server goes on
            metrics.errors.labels("internal").inc()
            metrics.requests.labels(name, "500").inc()
            return JSONResponse({"error": f"scoring failed: {type(err).__name__}: {err}"}, status_code=500)
        metrics.requests.labels(name, "200").inc()
        metrics.texts.labels(name).inc(len(texts))
        metrics.latency.observe(time.perf_counter() - started)
        return {"model": name, "predictions": predictions}

    return app


def serve(pairs: list[tuple[str, str]], host: str = "127.0.0.1", port: int = 8000,
          max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
          limits: Limits | None = None, workers: int | None = None, **load) -> int:
    """Load ``pairs`` (see :func:`load_models`, ``load``: its options) and serve them until SIGTERM / SIGINT.

    ``workers``: scoring threads (default :func:`default_workers`). Returns 0 after a signal: the listening socket
    closes, requests in flight are answered, the workers finish.
    """
    import uvicorn

    models = load_models(pairs, **load)
    workers = workers or default_workers()
    app = create_app(models, max_batch_size, max_wait_ms, limits, workers)
    for name, entry in models.items():
        together = [other.name for other in models.values() if other.loaded.model is entry.loaded.model]
        mixed = f", mixed with {', '.join(together)}" if entry.adapter is not None else ""
        print(f"serving {name}: {entry.target} ({entry.loaded.kind}, {entry.dtype}, "
              f"{entry.policy.long_reviews}, temperature {entry.temperature:g}{mixed})", file=sys.stderr)
    print(f"peftsent serve: http://{host}:{port}/ (POST /v1/predict, GET /v1/models /health /metrics), "
          f"{workers} worker{'s' if workers > 1 else ''}",
          file=sys.stderr, flush=True)
    # uvicorn re-raises a captured SIGTERM/SIGINT once it has shut down gracefully, so the handler in place
    # before it runs decides the exit status: these keep it 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=60)
    uvicorn.Server(config).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m peftsent.serve", "Serve models over HTTP with micro-batching.", EPILOG)
    parser.add_argument("targets", nargs="+", metavar="[NAME=]TARGET",
                        help="run directory, merged/model directory, adapter directory or hub id, optionally named "
                             f"(a target without a name is '{DEFAULT_NAME}'); LoRA runs on one base share its "
                             "unchanged layers")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1; "
                        "0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument("--max-batch-size", type=positive_int, default=DEFAULT_MAX_BATCH_SIZE,
                        help=f"texts per micro-batch (default: {DEFAULT_MAX_BATCH_SIZE})")
    parser.add_argument("--max-wait-ms", type=float, default=DEFAULT_MAX_WAIT_MS,
                        help=f"milliseconds a batch waits for more texts after its first (default: "
                             f"{DEFAULT_MAX_WAIT_MS})")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="threads scoring micro-batches side by side, each with CPU cores / N intra-op threads "
                             "(default: one per CPU core; 1 on a GPU)")
    parser.add_argument("--max-texts", type=positive_int, default=DEFAULT_MAX_TEXTS,
                        help=f"texts one request may hold; more: 413 (default: {DEFAULT_MAX_TEXTS})")
    parser.add_argument("--max-chars", type=positive_int, default=DEFAULT_MAX_CHARS,
                        help=f"characters one text may have; more: 413 (default: {DEFAULT_MAX_CHARS})")
    parser.add_argument("--adapters", choices=ADAPTER_MODES, default="merged",
                        help="LoRA runs on one base: merged = each merged into its own copy of the layers it changes "
                             "(unchanged tensors shared; predict's exact numbers, one-adapter speed; default), "
                             "mixed = one unmerged base, rows of every adapter in the same forward passes (peft's "
                             "adapter_names; an adapter costs only its own weights; slower, bf16 numbers within "
                             "rounding of predict's)")
    add_inference_arguments(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        pairs = parse_targets(args.targets)
        if args.max_wait_ms < 0:
            raise DataError(f"--max-wait-ms {args.max_wait_ms}: expected milliseconds >= 0")
        if not 0 <= args.port <= 65535:
            raise DataError(f"--port {args.port}: expected a TCP port in 0..65535")
        try:
            check_scoring_request(args.long_reviews, args.stride)  # before any model loads
        except ValueError as err:
            raise DataError(str(err)) from None
        try:
            import fastapi  # noqa: F401
            import prometheus_client  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError as err:
            raise PeftsentError(f"serve needs {err.name}: pip install 'peftsent[serve]'") from None
        return serve(pairs, args.host, args.port, args.max_batch_size, args.max_wait_ms,
                     Limits(args.max_texts, args.max_chars), args.workers, dtype=args.dtype, long_reviews=args.long_reviews,
                     stride=args.stride, label_order=args.label_order,
                     allow_random_weights=args.allow_random_weights, adapters=args.adapters)

    return run_cli(body, "peftsent.serve")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>peftsent</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
 textarea { width: 100%; height: 9rem; font: inherit; padding: .5rem; box-sizing: border-box; }
 button { font: inherit; padding: .4rem 1.2rem; margin-top: .5rem; }
 #label { font-size: 1.6rem; font-weight: bold; margin: 1rem 0 .5rem; }
 .row { display: flex; align-items: center; gap: .6rem; margin: .25rem 0; }
 .name { width: 8rem; } .bar { height: 1rem; background: #4a7bd0; } .value { width: 5rem; text-align: right; }
 #error { color: #b00020; white-space: pre-wrap; }
</style></head>
<body>
<h1>peftsent</h1>
<p>Paste a review and press <em>Label</em>.</p>
<label>Model <select id="model"></select></label>
<textarea id="text" placeholder="A wonderful film, with a story that stays with you."></textarea>
<button id="submit">Label</button>
<div id="result" hidden><div id="label"></div><div id="probabilities"></div></div>
<div id="error"></div>
<script>
const $ = (id) => document.getElementById(id);
fetch("/v1/models").then((r) => r.json()).then((body) => {
  for (const m of body.models) { const o = document.createElement("option"); o.value = o.textContent = m.name; $("model").append(o); }
});
$("submit").addEventListener("click", async () => {
  $("error").textContent = ""; $("result").hidden = true;
  const response = await fetch("/v1/predict", {method: "POST", headers: {"content-type": "application/json"},
    body: JSON.stringify({texts: [$("text").value], model: $("model").value})});
  const body = await response.json();
  if (!response.ok) { $("error").textContent = body.error; return; }
  const p = body.predictions[0];
  $("label").textContent = p.label + " (" + p.score.toFixed(3) + ")";
  $("probabilities").replaceChildren(...Object.entries(p.probabilities).map(([name, value]) => {
    const row = document.createElement("div"); row.className = "row";
    row.innerHTML = '<span class="name"></span><span class="bar"></span><span class="value"></span>';
    row.children[0].textContent = name; row.children[1].style.width = (value * 20) + "rem";
    row.children[2].textContent = value.toFixed(4); return row;
  }));
  $("result").hidden = false;
});
</script>
</body></html>
"""


if __name__ == "__main__":
    raise SystemExit(main())
