"""Inference speed and hardware-utilisation helpers: evaluation dtype, in-memory merge, agreement, MFU.

One place for each decision:

- :func:`resolve_dtype`: which dtype inference runs in (``auto`` = bfloat16 where the
  device has native bf16, else float32).
- :func:`inference_precision`: the model's storage for that dtype while it predicts (bfloat16: every floating
  tensor in bf16, no autocast; float32: as it is).
- :func:`merged_in_memory`: an adapter folded into its base weights for the duration of a
  ``with`` block (LoRA and the other peft tuners that can merge), unmerged afterwards.
- :func:`frozen_weights_in`: frozen linear weights stored in the autocast dtype while training.
- :func:`agreement`: how far a fast path's logits are from float32's.
- :class:`BatchPadding`: how every batch of tokenized reviews is padded (training, evaluation, windows).
- :func:`matmul_peak_flops`, :func:`training_flops_per_token`, :func:`mfu`: model FLOPs utilisation.
"""

from __future__ import annotations

import contextlib
import time

from peftsent import training_args
from peftsent.errors import ModelError

DTYPES = ("auto", "bfloat16", "float32")

#: batches are padded to a multiple of this many tokens (see :class:`BatchPadding`)
PAD_TO_MULTIPLE_OF = 32



class BatchPadding:
    """THE collator of every path that batches tokenized reviews: training (train and eval datasets of the
    run's Trainer), ``Trainer.predict`` in :func:`peftsent.inference.predict_logits`, the windows of
    :func:`peftsent.inference.window_logits` and :func:`peftsent.predict.text_logits`, so the same review meets
    the same padding in ``train``, ``eval`` and ``predict``.

    Each batch is padded to its longest row rounded up to a multiple of ``pad_to_multiple_of`` tokens
    (default :data:`PAD_TO_MULTIPLE_OF`), never beyond ``max_length`` (the token policy's length, which already
    leaves room for a prompt method's virtual tokens) unless a row is longer. Why: oneDNN, PyTorch's CPU
    matmul library under bf16 autocast, caches a primitive with its own scratch memory for every distinct
    matrix shape (up to 1,024); length-sorted batches padded to their longest row make a new shape almost
    every batch, and the quick LoRA recipe's RSS grew by about 20 MiB per optimizer step. With at most
    ``max_length / 32`` lengths (8 at 256 tokens) it stays flat (``README.md``, Performance). Multiples of 8 or
    more also suit GPU tensor cores (the ``pad_to_multiple_of`` of ``transformers.DataCollatorWithPadding``).
    The padded positions are masked: logits change by float rounding only. Padding always goes on the right,
    whatever the tokenizer's ``padding_side``: BERT-family encoders read absolute positions and pool the first
    token, so a left-padded row would be read from shifted positions with a pad token in place of ``[CLS]``.

    ``features``: rows with ``input_ids`` (and ``attention_mask``, ``token_type_ids``, ``labels``).
    Returns a ``transformers.BatchEncoding`` of (batch, padded length) int64 tensors.
    """

    def __init__(self, tokenizer, max_length: int, pad_to_multiple_of: int = PAD_TO_MULTIPLE_OF):
        if int(pad_to_multiple_of) < 1:
            raise ValueError(f"pad_to_multiple_of: expected a positive number of tokens, found {pad_to_multiple_of}")
        self.tokenizer, self.max_length, self.pad_to_multiple_of = tokenizer, int(max_length), int(pad_to_multiple_of)

    def padded_length(self, longest: int) -> int:
        """Tokens per row of a batch whose longest row has ``longest`` tokens."""
        multiple = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return max(longest, min(multiple, self.max_length))

    def __call__(self, features):
        from transformers.data.data_collator import pad_without_fast_tokenizer_warning

        if not features:
            raise ValueError("BatchPadding: expected at least one row, found an empty batch")
        target = self.padded_length(max(len(f["input_ids"]) for f in features))
        batch = pad_without_fast_tokenizer_warning(self.tokenizer, features, padding="max_length", max_length=target,
                                                   padding_side="right", return_tensors="pt")
        for key in ("label", "label_ids"):  # as transformers.DataCollatorWithPadding names them
            if key in batch:
                batch["labels"] = batch.pop(key)
        return batch


def device_of(model) -> str:
    """``"cuda"`` or ``"cpu"``: where the model's first parameter lives."""
    return next(model.parameters()).device.type


def resolve_dtype(requested: str = "auto") -> str:
    """``"bfloat16"`` or ``"float32"``. ``auto``: bfloat16 where :func:`peftsent.training_args.bf16_available`.

    Raises ValueError for anything but ``auto``, ``bfloat16``, ``float32``.
    """
    if requested not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {requested!r}")
    if requested != "auto":
        return requested

    return "bfloat16" if training_args.bf16_available() else "float32"


def run_dtype(recipe) -> str:
    """Inference precision of a run's own evaluations: ``bfloat16`` when the run trained under bf16 autocast
    (``train.bf16``, ``auto`` resolved as training resolves it), else ``float32``. Train's final evaluation
    and, by default, eval/predict of the run use it, so ``peftsent.eval RUN`` reproduces metrics.json."""
    bf16 = recipe.train.get("bf16")
    if bf16 == "auto":
        bf16 = training_args.bf16_available() and not recipe.train.get("fp16")
    return "bfloat16" if bf16 else "float32"


def target_dtype(requested: str, run=None, model=None) -> str:
    """The one decision of inference precision: ``requested`` (auto, bfloat16, float32); ``auto`` is the run's
    own (:func:`run_dtype`) when the target belongs to a run (``run``: a rundir.Run or None), else
    :func:`resolve_dtype`'s (bfloat16 where the device has native bf16). ``model``: the loaded model; an ONNX
    export (``runtime`` ``onnxruntime``, :mod:`peftsent.onnx_runtime`) runs at the precision it was exported in,
    so ``auto`` is ``float32`` there (the graph's int8 weights are the graph's own). Raises ValueError for other
    values, ModelError for ``bfloat16`` on an ONNX export."""
    if getattr(model, "runtime", None) == "onnxruntime":
        resolve_dtype(requested)  # ValueError for an unknown value
        if requested == "bfloat16":
            raise ModelError(f"--dtype bfloat16: an ONNX export runs at the precision it was exported in "
                             f"({model.precision} weights, see its export.json); use --dtype auto")
        return "float32"
    if requested == "auto" and run is not None:
        return run_dtype(run.recipe())
    return resolve_dtype(requested)


def _quantized(model) -> bool:
    """True for a model on a quantized (bitsandbytes 4-bit) base, whose storage must not be recast."""
    base = getattr(model, "base_model", model)
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_4bit", False)
                or getattr(getattr(model, "config", None), "quantization_config", None) is not None)


@contextlib.contextmanager
def inference_precision(model, dtype: str):
    """THE precision of every inference path (``Trainer.predict`` in :func:`peftsent.inference.predict_logits`,
    :func:`peftsent.inference.window_logits`, :func:`peftsent.predict.text_logits`): train's final evaluation,
    ``eval`` and ``predict`` run a model the same way for the same ``dtype``.

    ``float32``: the model as it is. ``bfloat16``: for the duration of the block every floating-point parameter
    and buffer (the encoder, an unmerged adapter's weights, the head) is stored in bfloat16, and the forward
    runs without autocast, so matmuls, LayerNorm, GELU and attention all read and write bf16 (PyTorch's bf16
    kernels accumulate in float32). At exit the float32 tensors come back bit for bit. Enter it after
    :func:`merged_in_memory`: an adapter is folded into the base weights in float32, then rounded once.
    Why not autocast: on CPU it runs LayerNorm and the residual stream in float32 and casts every matmul's
    input, ``aten::copy_`` took 15 % of evaluation time. bf16 storage evaluated 1.22x faster than autocast in
    ``benchmarks/throughput.py --quick --eval-reviews 512 --rounds 5`` (faster in 10 of 16 interleaved rounds
    over five runs of a noisy machine), and the main job's agreement with float32 stays 256 of 256 (README,
    Performance). The agreement of every bf16 evaluation is measured and
    reported (:func:`peftsent.inference.predict_checked`). A quantized (4-bit) base keeps its storage and runs
    under bf16 autocast instead.
    Yields the number of tensors stored in bf16 (0 for float32). Raises ValueError for an unknown ``dtype``.
    """
    import torch

    if resolve_dtype(dtype) != "bfloat16":
        yield 0
        return
    if _quantized(model):
        with torch.autocast(device_type=device_of(model), dtype=torch.bfloat16):
            yield 0
        return
    with _stored_in_bf16(_not_bf16(model)) as stored:
        yield stored


def _not_bf16(model) -> list:
    """The floating-point parameters and buffers of ``model`` not stored in bfloat16 yet."""
    import torch

    return [t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point() and t.dtype != torch.bfloat16]


def store_for_inference(model, dtype: str) -> int:
    """Store ``model`` for good as :func:`inference_precision` stores it inside its block, for a model that only
    ever runs in ``dtype`` (a server's): the same bf16 bits (each float32 tensor rounded once, after any merge),
    without the float32 copies the block keeps to give back at exit. Later :func:`inference_precision` blocks of
    the same dtype find nothing to cast. ``float32`` and a quantized base (autocast at every block): nothing
    changes. Returns the number of tensors cast."""
    import torch

    if resolve_dtype(dtype) != "bfloat16" or _quantized(model):
        return 0
    tensors = _not_bf16(model)
    for tensor in tensors:
        tensor.data = tensor.data.to(torch.bfloat16)
    return len(tensors)


@contextlib.contextmanager
def _stored_in_bf16(tensors):
    """Each tensor's data stored in bfloat16 for the block, the original tensors given back at exit, also when a
    cast fails part-way (out of memory, Ctrl-C). Yields how many were cast."""
    import torch

    kept = []
    try:
        for tensor in tensors:
            original = tensor.data
            tensor.data = original.to(torch.bfloat16)
            kept.append((tensor, original))
        yield len(kept)
    finally:
        for tensor, original in kept:
            tensor.data = original


#: peft types whose unmerge is not exact (IA3 divides by its learned scales): evaluated unmerged
_INEXACT_UNMERGE = {"IA3"}


def batch_order(lengths, adapter_names=None):
    """The order in which rows (texts, or windows) of ``lengths`` tokens run through a model at inference: by
    length (stable), so a batch pads only to its own longest row; with ``adapter_names`` (one per row, peft's mixed
    batches) by adapter first, so each adapter's rows of a batch are one contiguous block (a slice, not a gather,
    in :func:`peftsent.serve`'s mixed LoRA forward). Each row's logits do not depend on the order. Returns
    (rows,) int64 indices."""
    import numpy as np

    lengths = np.asarray(lengths)
    if adapter_names is None:
        return np.argsort(lengths, kind="stable")
    names = np.asarray(adapter_names, dtype=object)
    _, codes = np.unique(names.astype(str), return_inverse=True)
    return np.lexsort((lengths, codes))


def can_merge(model) -> bool:
    """True for a peft model whose active adapter folds into the base weights and back exactly
    (LoRA, AdaLoRA, LoHa, LoKr, VeRA, ...: unmerging subtracts the same delta).

    False for plain models, prompt methods, bottleneck adapters, IA3 (unmerge divides by
    the scales, which peft warns is inexact) and quantized bases (a 4-bit base is never
    merged into: DESIGN.md, Merging).
    """
    try:
        from peft import PeftModel
    except ImportError:
        return False
    if not isinstance(model, PeftModel):
        return False
    config = model.peft_config[model.active_adapter]
    if config.is_prompt_learning or str(getattr(config.peft_type, "value", config.peft_type)) in _INEXACT_UNMERGE \
            or _quantized(model):
        return False
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    return bool(layers) and all(hasattr(m, "merge") and hasattr(m, "unmerge") for m in layers)


@contextlib.contextmanager
def merged_in_memory(model):
    """Inside the block, a mergeable peft model runs with its adapter folded into the base weights.

    One matmul per linear layer instead of base + low-rank path (1.3-1.8x faster inference
    on CPU, measured in benchmarks/throughput.py). peft's ``merge_adapter`` /
    ``unmerge_adapter``; the base weights come back to within float32 rounding (~1e-7).
    Yields True when merged, False when the model is left as it is (see :func:`can_merge`).
    """
    if not can_merge(model):
        yield False
        return
    model.merge_adapter()
    try:
        yield True
    finally:
        model.unmerge_adapter()


@contextlib.contextmanager
def frozen_weights_in(model, dtype: str):
    """While training under ``dtype`` autocast (``bfloat16``), the weights of frozen ``nn.Linear`` layers (an
    adapter method's pretrained encoder) are stored in bfloat16; at exit the original float32 tensors return.

    Autocast casts a float32 weight to bf16 at every matmul, and caches the cast only for weights that
    require grad, so a frozen weight is cast again in every forward (torch.profiler: ``aten::copy_`` 19 % of
    a quick LoRA step on CPU). Storing it in bf16 gives the same bits (the same round-to-nearest cast),
    without the copies (``copy_`` fell to 10 %; the step's speed changed within noise, ``--levers``: 10.57
    against 10.46 samples/s), and half the frozen weights' memory. Weights that train, biases, LayerNorm and
    embeddings stay float32.
    Only peft models: their checkpoints hold the adapter alone, so no bf16 tensor reaches a checkpoint (a
    bottleneck run's checkpoint is the whole state dict, and ``--resume`` where ``bf16: auto`` means float32
    would load the rounded weights for good). Base layers under DoRA are skipped: DoRA reads the base weight
    outside the matmul (its row norms, in float32), where bf16 storage would change the result.
    Yields the number of weights stored in bf16 (0 for float32 training, full fine-tuning, non-peft methods).
    """
    import torch
    from peft import PeftModel

    frozen = []
    if dtype == "bfloat16" and isinstance(model, PeftModel):
        dora = {id(m.get_base_layer()) for m in model.modules() if getattr(m, "lora_magnitude_vector", None)}
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, torch.nn.Linear) and isinstance(weight, torch.nn.Parameter) \
                    and id(module) not in dora and not weight.requires_grad and weight.dtype == torch.float32:
                frozen.append(weight)
    with _stored_in_bf16(frozen) as stored:
        yield stored


def agreement(fast_logits, reference_logits) -> dict:
    """How a fast path's logits (n, 2) compare with float32's (n, 2).

    Returns ``prediction_agreement`` (fraction of equal argmax), ``max_abs_dlogit``,
    ``max_abs_dprob`` (probability of the positive class) and ``n``.
    """
    import numpy as np

    fast, ref = np.asarray(fast_logits, dtype=np.float64), np.asarray(reference_logits, dtype=np.float64)
    softmax = lambda x: np.exp(x - x.max(-1, keepdims=True)) / np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)  # noqa: E731
    return {
        "n": int(len(ref)),
        "prediction_agreement": float((fast.argmax(-1) == ref.argmax(-1)).mean()) if len(ref) else 1.0,
        "max_abs_dlogit": float(np.abs(fast - ref).max()) if len(ref) else 0.0,
        "max_abs_dprob": float(np.abs(softmax(fast)[:, -1] - softmax(ref)[:, -1]).max()) if len(ref) else 0.0,
    }


# ---------------------------------------------------------------- MFU


def matmul_peak_flops(dtype: str = "bfloat16", n: int = 2048, seconds: float = 1.0, device: str = "cpu") -> float:
    """Measured peak of ``torch.matmul`` on two (n, n) matrices: FLOP/s (2 n^3 per product), best of the window."""
    import torch

    kind = getattr(torch, dtype)
    a, b = torch.randn(n, n, dtype=kind, device=device), torch.randn(n, n, dtype=kind, device=device)
    torch.matmul(a, b)  # warm-up (oneDNN/AMX kernel selection)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.matmul(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def encoder_sizes(config) -> dict:
    """Layers ``L``, width ``d``, feed-forward width ``d_ff`` of a BERT/RoBERTa/DistilBERT config."""
    get = lambda *names: next(int(getattr(config, n)) for n in names if hasattr(config, n))  # noqa: E731
    return {"L": get("num_hidden_layers", "n_layers"), "d": get("hidden_size", "dim"),
            "d_ff": get("intermediate_size", "hidden_dim")}


def training_flops_per_token(config, tokens_per_review: float, full: bool, adapter_params: int = 0) -> float:
    """Model FLOPs of one training token (forward + backward), from the config alone.

    N = L (4 d^2 + 2 d d_ff) non-embedding matmul weights (embedding lookups are not matmuls).
    Forward: 2 N + 4 L T d (attention scores Q K^T and weighted values, 2 T d each, T = tokens per review).
    Backward: activation gradients cost one forward (2 N + 4 L T d); weight gradients another 2 N,
    only where the weights train. So full fine-tuning is 6 N + 12 L T d (Kaplan et al. 2020,
    arXiv:2001.08361, section 2.1; PaLM, Chowdhery et al. 2022, arXiv:2204.02311, appendix B), and
    frozen-weight LoRA is 4 N + 12 L T d (the attention matmuls have no weights: their backward is
    always 2x forward) plus 6 x the adapter's own parameters. The classifier head is negligible.
    """
    sizes = encoder_sizes(config)
    n = sizes["L"] * (4 * sizes["d"] ** 2 + 2 * sizes["d"] * sizes["d_ff"])
    attention = 12 * sizes["L"] * tokens_per_review * sizes["d"]
    return (6 * n if full else 4 * n + 6 * adapter_params) + attention


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the measured peak (0..1)."""
    return tokens_per_second * flops_per_token / peak_flops if peak_flops else 0.0
