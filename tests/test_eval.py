import json

import pytest

from peftsent.errors import PeftsentError
from peftsent.eval import evaluate, main
from peftsent.recipe import resolve_recipe
from peftsent.train import train

from conftest import tiny_recipe


@pytest.fixture(scope="module")
def lora_run(tiny_models, reviews_csv, tmp_path_factory):
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path_factory.mktemp("runs") / "lora",
                      {"name": "lora", "init_lora_weights": False})
    return train(resolve_recipe(raw))


def test_eval_of_a_run_writes_json_and_markdown(lora_run):
    result = evaluate(str(lora_run), split="validation")
    assert result["count"] == 16 and result["split"] == "validation"
    written = json.loads((lora_run / "eval" / "reviews-validation.json").read_text())
    assert written["accuracy"] == result["accuracy"]
    assert (lora_run / "eval" / "reviews-validation.md").read_text().startswith("# ")


def test_eval_of_an_adapter_directory_matches_the_run(lora_run, reviews_csv, tmp_path):
    # same data file, same default carving: the run and its bare adapter must score alike (texts < 32 tokens)
    from_run = evaluate(str(lora_run), data=str(reviews_csv), out=str(tmp_path / "a"))
    from_adapter = evaluate(str(lora_run / "adapter"), data=str(reviews_csv), out=str(tmp_path / "b"))
    assert from_run["count"] == from_adapter["count"] == 7
    assert from_adapter["log_loss"] == pytest.approx(from_run["log_loss"], abs=1e-6)


def test_target_without_recipe_needs_data(tiny_models):
    with pytest.raises(PeftsentError, match="--data"):
        evaluate(str(tiny_models["bert"]))


def test_unknown_split_is_a_user_error(lora_run, capsys):
    assert main([str(lora_run), "--split", "dev"]) == 2
    assert "unknown split 'dev'" in capsys.readouterr().err


def test_missing_target_is_a_user_error(tmp_path, capsys):
    assert main([str(tmp_path / "nothing-here")]) == 2
    assert "error:" in capsys.readouterr().err


def test_subset_eval_does_not_overwrite_the_full_report(lora_run):
    full = evaluate(str(lora_run))
    evaluate(str(lora_run), max_samples=4)
    kept = json.loads((lora_run / "eval" / "reviews-test.json").read_text())
    assert kept["count"] == full["count"] == 16
    assert json.loads((lora_run / "eval" / "reviews-test-n4.json").read_text())["count"] == 4


def test_adapter_inside_a_run_takes_its_base_from_the_recipe(lora_run, tmp_path):
    """A copied run works on another machine even though adapter_config.json names a local base path."""
    import shutil

    copy = tmp_path / "copied-run"
    shutil.copytree(lora_run, copy)
    config = json.loads((copy / "adapter" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/nonexistent/other-machine/model"
    (copy / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    result = evaluate(str(copy / "adapter"), out=str(tmp_path / "out"))
    assert result["accuracy"] == evaluate(str(lora_run))["accuracy"]


# issue 24, item 5: eval reports how many reviews were mostly unknown tokens
def test_eval_counts_reviews_of_mostly_unknown_tokens(lora_run, tmp_path, capsys):
    from conftest import make_reviews, write_csv

    cues = "好看精彩无聊难看"
    chinese = [(f"这部电影{'great ' if i % 3 == 0 else ''}{cues[i % 8]}{cues[(i * 5) % 8]}{i}", int(i % 8 < 4))
               for i in range(24)]
    data = write_csv(tmp_path / "mixed.csv", make_reviews(40) + chinese)
    assert main([str(lora_run), "--data", str(data), "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    written = json.loads((tmp_path / "o" / "mixed-test.json").read_text())
    texts = [json.loads(line)["text"] for line in (tmp_path / "o" / "predictions-mixed-test.jsonl").open()]
    expected = sum("电影" in text for text in texts)
    assert expected > 0 and written["count"] == len(texts)
    assert written["mostly_unknown_tokens"] == expected
    assert f"mostly unknown tokens: {expected} of {len(texts)} reviews" in printed
