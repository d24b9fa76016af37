"""ONNX mechanics: export a plain ``transformers`` classifier to ONNX, quantize it to dynamic int8, and run an
exported graph in ONNX Runtime behind the same interface as a PyTorch classifier.

``OnnxClassifier`` (:func:`load_onnx`) is a ``torch.nn.Module`` whose forward runs an
``onnxruntime.InferenceSession`` and returns an output with ``.logits`` (batch, num_labels), like
``AutoModelForSequenceClassification``: every scoring path (``Trainer.predict`` in
:func:`peftsent.inference.predict_logits`, :func:`peftsent.inference.window_logits`, ``peftsent.predict``) runs
an export unchanged. Needs the ``export`` extra (``pip install 'peftsent[export]'``: onnx, onnxruntime).
"""

from __future__ import annotations

import json
from pathlib import Path

from peftsent.errors import ModelError

#: the graph file of an export directory
ONNX_FILE = "model.onnx"
#: what an export records about itself (format, precision, parity, versions): written by ``peftsent.export``
EXPORT_FILE = "export.json"
#: ONNX operator set of the export (ONNX Runtime >= 1.14 runs it; LayerNormalization is native from 17)
OPSET = 17
#: graph inputs in the order the exported forward takes them
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
EXTRA = "pip install 'peftsent[export]'  (onnx, onnxruntime)"


def require_onnx() -> None:
    """Raise ModelError naming the extra to install when onnx or onnxruntime is missing."""
    missing = []
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ModelError(f"ONNX export and inference need {' and '.join(missing)}, which are not installed: {EXTRA}")


def is_onnx_dir(path: Path) -> bool:
    """True for a directory holding an exported graph (``model.onnx``) beside its ``config.json``."""
    return (Path(path) / ONNX_FILE).is_file() and (Path(path) / "config.json").is_file()


def graph_inputs(model, tokenizer) -> list[str]:
    """The inputs an export takes: input_ids and attention_mask, plus token_type_ids where both the tokenizer
    makes them and the model's forward accepts them (BERT; not DistilBERT or RoBERTa)."""
    import inspect

    accepted = inspect.signature(model.forward).parameters
    made = set(getattr(tokenizer, "model_input_names", INPUT_NAMES))
    return [n for n in INPUT_NAMES if n in accepted and (n in made or n != "token_type_ids")]


def export_onnx(model, tokenizer, path: Path) -> list[str]:
    """Write ``model`` (a plain float32 ``transformers`` classifier, eval mode) as ONNX to ``path``.

    ``torch.onnx.export`` (TorchScript tracing, opset :data:`OPSET`), dynamic batch and sequence axes; inputs
    (batch, sequence) int64 (:func:`graph_inputs`), output ``logits`` (batch, num_labels) float32.
    Returns the input names.
    """
    import warnings

    import torch

    names = graph_inputs(model, tokenizer)
    # two reviews of different lengths: the traced example must hold padding, or the tracer may record a graph
    # without the attention mask (transformers may skip an all-ones mask), which scores padded batches wrongly
    example = tokenizer(["a review", "a review " * 4], padding=True, return_tensors="pt")
    assert not bool(example["attention_mask"].all()), "the traced example needs padding"
    args = tuple(example[n] if n in example else torch.zeros_like(example["input_ids"]) for n in names)

    class _Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *tensors):
            return self.inner(**dict(zip(names, tensors))).logits

    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
    # the tracer warns about every Python branch on a tensor (mask padding, SDPA's causal flag); what the graph
    # computes is checked instead, on real reviews of several lengths (peftsent.export's parity check)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Logits(model.eval()), args, str(path), input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    return names


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 of an exported float32 graph (``onnxruntime.quantization.quantize_dynamic``): int8 weights
    of every MatMul, signed, one scale per output channel; activations quantized per batch at run time.

    Per channel, not per tensor: on a MiniLM-L6 LoRA run (200 IMDb validation reviews, ONNX Runtime 1.32) one
    scale per tensor moved probabilities by up to 0.134 and changed 6.5 % of the predictions, one per channel
    by up to 0.067 and 2.5 %."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)


class _Output(dict):
    """What a classifier's forward returns, reduced to ``logits`` (attribute and key, as ``ModelOutput``)."""

    @property
    def logits(self):
        return self["logits"]


def load_onnx(directory: Path, threads: int | None = None):
    """An :class:`OnnxClassifier` over ``directory/model.onnx`` (config.json gives ``id2label``, ``num_labels``).

    ``threads``: ONNX Runtime's intra-op threads (None: torch's, which follows OMP_NUM_THREADS).
    Raises ModelError when onnxruntime is missing or the graph cannot be loaded.
    """
    require_onnx()
    import onnxruntime as ort
    import torch
    from transformers import AutoConfig

    directory = Path(directory)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    try:
        session = ort.InferenceSession(str(directory / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        config = AutoConfig.from_pretrained(str(directory))
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelError(f"ONNX export {directory} could not be loaded: {err}") from None
    record = directory / EXPORT_FILE
    precision = json.loads(record.read_text()).get("precision", "float32") if record.is_file() else "float32"
    return onnx_classifier(session, config, precision)


def onnx_classifier(session, config, precision: str = "float32"):
    """An ``OnnxClassifier`` module over ``session`` (the class is defined on first use: torch is imported
    inside functions only)."""
    return _classifier_class()(session, config, precision)


_CLASS = []


def _classifier_class():
    if _CLASS:
        return _CLASS[0]
    import numpy as np
    import torch

    class OnnxClassifier(torch.nn.Module):
        """An ONNX Runtime session as a sequence classifier: ``forward(input_ids, attention_mask,
        token_type_ids=None) -> output.logits`` (batch, num_labels) float32 on the CPU.

        ``config``: the exported model's ``transformers`` config (``id2label``, ``num_labels``, model type);
        ``precision``: ``float32`` or ``int8`` (the graph's weights). One placeholder parameter gives the
        module a device for code that asks; casting it (bf16 storage) changes nothing: the graph runs as
        exported.
        """

        runtime = "onnxruntime"

        def __init__(self, session, config, precision):
            super().__init__()
            self.session, self.config, self.precision = session, config, precision
            self.input_names = [i.name for i in session.get_inputs()]
            self.placeholder = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None):
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            feed = {}
            for name in self.input_names:
                value = given[name]
                if value is None:  # token_type_ids of a single sentence: zeros
                    value = torch.zeros_like(input_ids)
                feed[name] = value.detach().cpu().numpy().astype(np.int64)
            logits = self.session.run(["logits"], feed)[0]
            return _Output(logits=torch.from_numpy(np.asarray(logits, dtype=np.float32)).to(input_ids.device))

    _CLASS.append(OnnxClassifier)
    return OnnxClassifier
