"""What switching ``model.name`` costs: size, LoRA share and CPU training speed of the supported models.

    python benchmarks/model_sizes.py [--steps 3] [--batch-size 16] [--max-length 256] [--recipe recipes/lora.yaml]

One row per model: distilbert-base-uncased, bert-base-uncased, roberta-base and the embedded
minilm-l6. A hub model is built from its config.json where the local Hugging Face cache has it;
otherwise from transformers' default config of its class, which equals the hub config
(DistilBertConfig(), BertConfig(), RobertaConfig(vocab_size=50265, max_position_embeddings=514,
type_vocab_size=1, layer_norm_eps=1e-5, pad/bos/eos ids 1/0/2)). Weights are random: sizes and
speed do not depend on their values. minilm-l6 loads its real weights.

Each model gets the recipe's method section resolved for it (``model.name`` switched, nothing
else; default recipes/lora.yaml: r=8 on every linear layer, the head trained whole), and is
trained on a tiny slice of offline IMDb reviews (embedded uncased WordPiece tokenizer; RoBERTa's
own tokenizer is not offline, and the speed depends on the token count, not the ids): batches of
--batch-size reviews padded/truncated to --max-length tokens, AdamW, bf16 autocast where
peftsent's training uses it (train.bf16: auto). The models are timed interleaved, one optimizer
step each per round, after one warm-up step each, so a change in machine load hits every row
alike; the table shows the median step, as wall-clock reviews/s and as reviews per CPU-second
(this process's CPU time, all threads), which a busy machine changes less. The load average
before and after is printed: on a shared machine, state it with the numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

HUB = ("distilbert-base-uncased", "bert-base-uncased", "roberta-base")


def _hub_config(name: str):
    """(config, where it came from): the cached hub config.json, else the class defaults equal to it."""
    from transformers import AutoConfig, BertConfig, DistilBertConfig, RobertaConfig

    from peftsent.hub import cached_snapshot

    snapshot = cached_snapshot(name, "config.json")
    if snapshot is not None:
        return AutoConfig.from_pretrained(snapshot), "hub config (local cache), random weights"
    defaults = {
        "distilbert-base-uncased": DistilBertConfig,
        "bert-base-uncased": BertConfig,
        "roberta-base": lambda: RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                                              layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2),
    }
    return defaults[name](), "default config = hub config, random weights"


def _model(name: str):
    """(float32 sequence-classification model with 2 labels, provenance)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from peftsent.modeling import load_base_model, quiet_transformers
    from peftsent.registry import ID2LABEL, LABEL2ID, resolve_model

    if name not in HUB:
        return load_base_model(resolve_model(name).location), "embedded weights"
    config, origin = _hub_config(name)
    config.num_labels, config.id2label, config.label2id = len(ID2LABEL), ID2LABEL, LABEL2ID
    torch.manual_seed(0)
    with quiet_transformers():
        return AutoModelForSequenceClassification.from_config(config, dtype=torch.float32), origin


def _facts(config) -> tuple[int, int]:
    layers = getattr(config, "num_hidden_layers", None) or config.n_layers
    hidden = getattr(config, "hidden_size", None) or config.dim
    return layers, hidden


def _batches(batch_size: int, max_length: int, count: int):
    """``count`` batches of real offline IMDb reviews, (batch_size, max_length) token ids each."""
    import torch

    from peftsent.data import load_splits
    from peftsent.modeling import load_tokenizer
    from peftsent.recipe import DataSection
    from peftsent.registry import resolve_model

    data = DataSection(name="imdb-offline", max_train_samples=max(2, batch_size * count))
    texts = load_splits(data, ["train"])["train"]["text"][: batch_size * count]
    tokenizer = load_tokenizer(resolve_model("minilm-l6").location)
    encoded = tokenizer(texts, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt")
    labels = torch.arange(len(texts)) % 2
    return [({k: v[i:i + batch_size] for k, v in encoded.items() if k in ("input_ids", "attention_mask")},
             labels[i:i + batch_size]) for i in range(0, len(texts), batch_size)]


class _Trainee:
    """One model wrapped by the recipe's method, with its optimizer; ``step()`` = one timed optimizer step."""

    def __init__(self, name: str, recipe_path: str, learning_rate: float = 1e-4):
        import torch

        from peftsent.modeling import parameter_report, wrap_model
        from peftsent.recipe import load_recipe

        self.name = name
        self.recipe = load_recipe(recipe_path, [f"model.name={name}"])
        base, self.origin = _model(name)
        self.layers, self.hidden = _facts(base.config)
        self.model = wrap_model(base, self.recipe, total_steps=1000)
        head = self.recipe.method.get("modules_to_save") or []
        self.report = parameter_report(self.model, head, full=self.recipe.method_name == "full")
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=learning_rate)
        self.seconds: list[float] = []
        """wall-clock seconds of each timed step"""
        self.cpu_seconds: list[float] = []
        """CPU seconds (all threads of this process) of each timed step"""

    def step(self, batch, labels, bf16: bool) -> tuple[float, float]:
        """One optimizer step; returns (wall seconds, CPU seconds)."""
        import torch

        self.model.train()
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = self.model(**batch, labels=labels).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start, time.process_time() - cpu_start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per model (after 1 warm-up)")
    parser.add_argument("--batch-size", type=int, default=16, help="reviews per optimizer step")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per review")
    parser.add_argument("--recipe", default="recipes/lora.yaml", help="recipe whose method each model gets")
    parser.add_argument("--models", nargs="+", default=[*HUB, "minilm-l6"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, as training)")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from peftsent.training_args import bf16_available

    bf16 = bf16_available()
    load_before = os.getloadavg()
    batches = _batches(args.batch_size, args.max_length, args.steps + 1)
    trainees = [_Trainee(name, args.recipe) for name in args.models]
    for round_ in range(args.steps + 1):  # round 0 warms up
        for trainee in trainees:
            batch, labels = batches[round_ % len(batches)]
            seconds, cpu_seconds = trainee.step(batch, labels, bf16)
            if round_:
                trainee.seconds.append(seconds)
                trainee.cpu_seconds.append(cpu_seconds)
            print(f"  round {round_} {trainee.name}: {seconds:.1f} s wall, {cpu_seconds:.1f} s CPU", flush=True)
    load_after = os.getloadavg()

    print(f"\n{args.recipe} (method {trainees[0].recipe.method_name}), batch {args.batch_size} x "
          f"{args.max_length} tokens, bf16 autocast {'on' if bf16 else 'off'}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; median of {args.steps} interleaved steps; "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after\n")
    print("| model | parameters | layers | hidden | trainable | trainable share | s / step | reviews/s "
          "| reviews per CPU-second | built from |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for t in trainees:
        step, cpu = statistics.median(t.seconds), statistics.median(t.cpu_seconds)
        print(f"| `{t.name}` | {t.report.total / 1e6:.1f}M | {t.layers} | {t.hidden} | {t.report.trainable:,} | "
              f"{t.report.to_dict()['trainable_percent']:.2f}% | {step:.1f} | {args.batch_size / step:.2f} | "
              f"{args.batch_size / cpu:.2f} | {t.origin} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
