"""Frozen weights stored in bf16 while training (speed.frozen_weights_in): where it must not apply."""

import copy

import pytest

from peftsent.modeling import build_model
from peftsent.recipe import resolve_recipe
from peftsent.speed import frozen_weights_in

from conftest import tiny_recipe


def _step(model, batch):
    import torch

    model.train()
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ("distilbert", "bert", "roberta"))
@pytest.mark.parametrize("method", ("lora", "ia3", "full"))
def test_frozen_weights_in_bf16_give_the_same_training_step_and_come_back(arch, method, tiny_models, reviews_csv, tmp_path):
    """A bf16-autocast training step with frozen linear weights stored in bf16 gives the same loss and
    gradients as with them in float32 (autocast casts them anyway); at exit every tensor is float32 again."""
    import torch

    model, tokenizer, _ = build_model(resolve_recipe(tiny_recipe(tiny_models[arch], reviews_csv, tmp_path / "r",
                                                                 {"name": method})))
    batch = tokenizer(["a great movie, loved it", "awful and boring plot, the worst"], padding=True, return_tensors="pt")
    batch["labels"] = torch.tensor([1, 0])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    reference = _step(copy.deepcopy(model), batch)
    with frozen_weights_in(model, "bfloat16") as stored:
        frozen_linear = sum(1 for m in model.modules() if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad)
        assert stored == frozen_linear and (stored > 0) == (method != "full")
        loss, grads = _step(model, batch)
    assert loss == reference[0] and grads.keys() == reference[1].keys()
    assert all(torch.equal(grads[n], reference[1][n]) for n in grads)
    assert all(p.dtype == torch.float32 and torch.equal(p, before[n]) for n, p in model.named_parameters())
    with frozen_weights_in(model, "float32") as stored:
        assert stored == 0


@pytest.mark.parametrize("arch", ("distilbert", "bert"))
def test_dora_step_is_the_same_with_frozen_weights_in_bf16(arch, tiny_models, reviews_csv, tmp_path):
    """speed.frozen_weights_in promises 'the same bits' as float32 weights under autocast. DoRA (method lora,
    use_dora: true) reads the frozen base weight outside F.linear: peft's DoraLinearLayer.forward does
    ``weight.to(x.dtype)`` and takes its row norms in float32, so with the weight stored in bf16 the norm is
    that of the bf16-rounded weight, not of the float32 one the magnitude vector was initialised from."""
    import torch

    method = {"name": "lora", "use_dora": True, "init_lora_weights": False}  # B != 0: DoRA's norm depends on it
    model, tokenizer, _ = build_model(resolve_recipe(tiny_recipe(tiny_models[arch], reviews_csv, tmp_path / "r",
                                                                 method)))
    batch = tokenizer(["a great movie, loved it", "awful and boring plot, the worst"], padding=True,
                      return_tensors="pt")
    batch["labels"] = torch.tensor([1, 0])
    reference = _step(copy.deepcopy(model), batch)
    with frozen_weights_in(model, "bfloat16"):
        loss, grads = _step(model, batch)
    different = sorted(n for n in grads if not torch.equal(grads[n], reference[1][n]))
    assert loss == reference[0] and not different, (loss - reference[0], different[:4])


def test_eval_reproduces_a_bottleneck_run_resumed_where_bf16_auto_means_false(tiny_models, reviews_csv,
                                                                                     tmp_path, monkeypatch):
    """A bottleneck (or any non-peft) checkpoint is the Trainer's whole state dict; were it written while the
    frozen weights were stored in bf16 (speed.frozen_weights_in skips non-peft models for this reason): ``bf16: auto`` (the default) is resolved per machine: a run staged where it
    means true and resumed where it means false loads those bf16-rounded encoder weights into the float32
    model for good; metrics.json is then computed with a rounded encoder that eval (fresh base + adapter file)
    does not have, so eval no longer reproduces the run's metrics."""
    import json

    from transformers import TrainerCallback

    import peftsent.training_args as training_args
    import peftsent.train as train_module
    from peftsent.eval import evaluate
    from peftsent.rundir import checkpoints, stage_path

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise RuntimeError("interrupted")

    steps = dict(max_steps=4, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                 metric_for_best_model="log_loss", learning_rate=3e-2, bf16="auto")
    recipe = resolve_recipe(tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run",
                                        {"name": "bottleneck", "reduction_factor": 4}, **steps))
    monkeypatch.setattr(training_args, "bf16_available", lambda: True)  # machine A: bf16 autocast
    with pytest.raises(RuntimeError, match="interrupted"):
        train_module.train(recipe, callbacks=[Interrupt()])
    from safetensors import safe_open

    with safe_open(str(checkpoints(stage_path(recipe.run_dir))[-1] / "model.safetensors"), "pt") as saved:
        dtypes = {saved.get_slice(k).get_dtype() for k in saved.keys()}
    assert "BF16" not in dtypes  # non-peft checkpoints hold whole state dicts: frozen weights stay float32
    monkeypatch.setattr(training_args, "bf16_available", lambda: False)  # machine B: float32
    run = train_module.train(recipe, resume=True)
    metrics = json.loads((run / "metrics.json").read_text())
    result = evaluate(str(run))
    assert result["log_loss"] == metrics["test"]["log_loss"]
