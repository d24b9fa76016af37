"""AdaLoRA's rank budget inside the Trainer (Zhang et al. 2023, arXiv:2303.10512; peft.AdaLoraModel)."""

from __future__ import annotations


def adalora_callback():
    """A Trainer callback that runs AdaLoRA's budget schedule.

    ``on_train_begin`` sets ``total_step`` to the Trainer's own count of optimizer steps
    (``state.max_steps``: epochs, gradient accumulation and ``world_size`` included), so the
    schedule ends where training ends under any number of processes; ``on_optimizer_step``
    reallocates the ranks after every optimizer step, while the gradients still exist.
    """
    from transformers import TrainerCallback

    class AdaLoraBudget(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            config = model.peft_config[model.base_model.trainable_adapter_name]
            config.total_step = state.max_steps  # the rank allocator reads the same config object

        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            model.base_model.update_and_allocate(state.global_step)

    return AdaLoraBudget()
