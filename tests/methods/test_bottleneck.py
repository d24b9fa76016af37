import pytest
import torch

from peftsent.errors import MergeError, RecipeError
from peftsent.methods.bottleneck import BottleneckConfig, add_bottleneck_adapters, adapter_sites
from peftsent.modeling import load_base_model
from peftsent.recipe import resolve_recipe
from peftsent.registry import ARCHITECTURES

from conftest import ARCHS, logits_of, tiny_recipe


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("variant", "per_layer"), [("houlsby", 2), ("pfeiffer", 1)])
def test_adapters_sit_after_attention_and_ffn(arch, variant, per_layer, tiny_models):
    model = load_base_model(str(tiny_models[arch]))
    sites = adapter_sites(model, ARCHITECTURES[arch], variant)
    assert len(sites) == 2 * per_layer  # tiny models have 2 layers
    if variant == "pfeiffer":
        assert all(s.endswith(("output.dense", "ffn.lin2")) and "attention" not in s for s in sites)


@pytest.mark.parametrize("arch", ARCHS)
def test_fresh_adapter_is_identity_and_only_adapters_and_head_train(arch, tiny_models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models[arch])
    torch.manual_seed(0)
    base = load_base_model(str(tiny_models[arch]))
    before = logits_of(base, tokenizer)
    head = list(ARCHITECTURES[arch].head_modules)
    model = add_bottleneck_adapters(base, BottleneckConfig(variant="houlsby", reduction_factor=4, modules_to_save=head),
                                    ARCHITECTURES[arch])
    assert torch.allclose(logits_of(model, tokenizer), before, atol=1e-6)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".bottleneck." in n or n.split(".")[0] in head for n in trainable)
    down = next(p for n, p in model.named_parameters() if n.endswith("bottleneck.down.weight"))
    assert down.shape == (32 // 4, 32)


def test_bad_variant_is_a_recipe_error(tiny_models, reviews_csv, tmp_path):
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "r", {"name": "bottleneck", "variant": "parallel"})
    with pytest.raises(RecipeError, match="method.variant"):
        resolve_recipe(raw)


def test_bottleneck_cannot_be_merged(tiny_models, reviews_csv, tmp_path):
    from peftsent.merge import merge
    from peftsent.train import train

    run = train(resolve_recipe(tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "r", {"name": "bottleneck"})))
    assert {p.name for p in (run / "adapter").iterdir()} >= {"bottleneck_config.json", "adapter_model.safetensors"}
    with pytest.raises(MergeError, match="serve with the adapter"):
        merge(run)
