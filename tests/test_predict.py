import json

import pytest

from peftsent.predict import main
from peftsent.recipe import resolve_recipe
from peftsent.train import train

from conftest import tiny_recipe


@pytest.fixture(scope="module")
def run(tiny_models, reviews_csv, tmp_path_factory):
    raw = tiny_recipe(tiny_models["roberta"], reviews_csv, tmp_path_factory.mktemp("runs") / "ia3", {"name": "ia3"})
    return train(resolve_recipe(raw))


def _lines(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_predict_prints_one_json_line_per_text(run, capsys):
    assert main([str(run), "a great movie", "awful plot"]) == 0
    lines = _lines(capsys)
    assert [line["text"] for line in lines] == ["a great movie", "awful plot"]
    for line in lines:
        assert line["label"] in {"negative", "positive"}
        assert line["probabilities"]["negative"] + line["probabilities"]["positive"] == pytest.approx(1, abs=1e-5)
        assert line["score"] == line["probabilities"][line["label"]]


def test_predict_reads_txt_csv_and_jsonl(run, tmp_path, capsys):
    (tmp_path / "r.txt").write_text("good film\n\nbad film\n")
    (tmp_path / "r.csv").write_text("review,x\ngood film,1\nbad film,2\n")
    (tmp_path / "r.jsonl").write_text('{"text": "good film"}\n{"text": "bad film"}\n')
    assert main([str(run), "--file", str(tmp_path / "r.txt")]) == 0
    assert len(_lines(capsys)) == 2
    assert main([str(run), "--file", str(tmp_path / "r.csv"), "--text-column", "review"]) == 0
    assert len(_lines(capsys)) == 2
    assert main([str(run), "--file", str(tmp_path / "r.jsonl")]) == 0
    assert len(_lines(capsys)) == 2


def test_predict_long_review_is_truncated_not_an_error(run, capsys):
    assert main([str(run), "good " * 5000]) == 0
    assert len(_lines(capsys)) == 1


def test_predict_user_errors(run, tmp_path, capsys):
    assert main([str(run), "--file", str(tmp_path / "none.txt")]) == 2
    assert "file not found" in capsys.readouterr().err
    (tmp_path / "r.csv").write_text("review\nok\n")
    assert main([str(run), "--file", str(tmp_path / "r.csv")]) == 2
    assert "column 'text' not found" in capsys.readouterr().err
    assert main([str(run), "  "]) == 2
