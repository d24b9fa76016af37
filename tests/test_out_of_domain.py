"""eval.also: a dataset whose test split holds reviews the run trains on is refused when the recipe resolves."""

import pytest

from peftsent.errors import RecipeError
from peftsent.recipe import resolve_recipe

from conftest import tiny_recipe


def _recipe(model_dir, data: str, also: list[str]):
    raw = tiny_recipe(model_dir, "x.csv", "runs/x")
    raw["data"] = {"name": data}
    raw["eval"] = {"also": also}
    return resolve_recipe(raw)


@pytest.mark.parametrize("data, also, reason", [
    ("imdb", "imdb-offline", "drawn from imdb train reviews"),  # imdb-offline = the hub's IMDb train split
    ("rotten_tomatoes", "rotten_tomatoes-offline", "drawn from rotten_tomatoes train reviews"),
    ("imdb-offline", "imdb-offline", "the run's own dataset"),
])
def test_overlapping_test_split_is_refused_with_the_reason(data, also, reason, tiny_models):
    with pytest.raises(RecipeError, match=reason) as caught:
        _recipe(tiny_models["bert"], data, [also])
    assert "eval.also[0]" in str(caught.value)


@pytest.mark.parametrize("data, also", [
    ("imdb-offline", "rotten_tomatoes-offline"),
    ("rotten_tomatoes-offline", "imdb-offline"),
    ("imdb-offline", "imdb"),  # the hub test split is the official IMDb test set: not in IMDb's train split
])
def test_disjoint_datasets_are_accepted(data, also, tiny_models):
    assert _recipe(tiny_models["bert"], data, [also]).eval.also == [also]


def test_a_dataset_listed_twice_is_refused(tiny_models):
    with pytest.raises(RecipeError, match="listed twice"):
        _recipe(tiny_models["bert"], "imdb-offline", ["rotten_tomatoes-offline", "rotten_tomatoes-offline"])
