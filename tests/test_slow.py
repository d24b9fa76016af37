"""Real training on the embedded model and the offline IMDb reviews (minutes): ``pytest -m slow``."""

import json

import pytest

from peftsent.recipe import load_recipe
from peftsent.train import train


@pytest.mark.slow
def test_quick_lora_recipe_reaches_its_accuracy(tmp_path):
    recipe = load_recipe("recipes/quick/lora.yaml", [f"train.output_dir={tmp_path / 'lora'}"])
    run = train(recipe)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["sizes"]["test"] == 2500
    assert metrics["test"]["accuracy"] >= 0.85
