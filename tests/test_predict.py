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
    assert len(_lines(capsys)) == 3  # the blank line too, with an error field
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
    assert main([str(run), "--file", str(tmp_path / "r.csv"), "--text-column", "review", "--keep-columns", "id"]) == 2
    assert "'id' not found" in capsys.readouterr().err
    (tmp_path / "r.txt").write_text("ok\n")
    assert main([str(run), "--file", str(tmp_path / "r.txt"), "--keep-columns", "id"]) == 2
    assert "no columns" in capsys.readouterr().err
    assert main([str(run), "--file", str(tmp_path / "r.csv"), "--text-column", "review", "--keep-columns", "label"]) == 2
    assert "already a field" in capsys.readouterr().err


# issue 24, item 5: one output line per input, always
def test_predict_blank_lines_keep_alignment(run, tmp_path, capsys, monkeypatch):
    import io

    lines = ["good film", "", "bad film", "   ", "great movie", "awful"]
    (tmp_path / "r.txt").write_text("\n".join(lines) + "\n")
    assert main([str(run), "--file", str(tmp_path / "r.txt")]) == 0
    out = capsys.readouterr()
    got = [json.loads(line) for line in out.out.splitlines()]
    assert [g["text"] for g in got] == lines
    assert [("error" in g) for g in got] == [False, True, False, True, False, False]
    assert all("label" in g for g in got if "error" not in g)
    assert "2 of 6 inputs" in out.err
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main([str(run)]) == 0
    assert [g["text"] for g in _lines(capsys)] == lines


def test_predict_empty_argument_is_a_line_not_a_refusal(run, capsys):
    assert main([str(run), "good film", "", "  ", "bad film"]) == 0
    got = _lines(capsys)
    assert [g["text"] for g in got] == ["good film", "", "  ", "bad film"]
    assert [g.get("error") is not None for g in got] == [False, True, True, False]


def test_predict_strips_byte_order_mark(run, tmp_path, capsys, monkeypatch):
    import io

    (tmp_path / "r.txt").write_bytes("\ufeffgood film\nbad film\n".encode())
    assert main([str(run), "--file", str(tmp_path / "r.txt")]) == 0
    assert [g["text"] for g in _lines(capsys)] == ["good film", "bad film"]
    (tmp_path / "r.csv").write_bytes("\ufefftext,id\ngood film,a\n".encode())
    assert main([str(run), "--file", str(tmp_path / "r.csv"), "--keep-columns", "id"]) == 0
    assert [(g["id"], g["text"]) for g in _lines(capsys)] == [("a", "good film")]
    (tmp_path / "r.jsonl").write_bytes('\ufeff{"text": "good film"}\n'.encode())
    assert main([str(run), "--file", str(tmp_path / "r.jsonl")]) == 0
    assert [g["text"] for g in _lines(capsys)] == ["good film"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\ufeffgood film\n"))
    assert main([str(run)]) == 0
    assert [g["text"] for g in _lines(capsys)] == ["good film"]


def test_predict_keep_columns_csv_and_jsonl(run, tmp_path, capsys):
    (tmp_path / "r.csv").write_text("id,review,source\n007,good film,x\n008,,y\n009,bad film,z\n")
    assert main([str(run), "--file", str(tmp_path / "r.csv"), "--text-column", "review",
                 "--keep-columns", "id,source"]) == 0
    got = _lines(capsys)
    assert [(g["id"], g["source"]) for g in got] == [("007", "x"), ("008", "y"), ("009", "z")]
    assert "error" in got[1] and "label" in got[0] and "label" in got[2]
    (tmp_path / "r.jsonl").write_text('{"id": 1, "text": "good film"}\n\n{"id": 2, "text": 5}\nnot json\n'
                                      '{"id": 3, "text": "bad film"}\n')
    assert main([str(run), "--file", str(tmp_path / "r.jsonl"), "--keep-columns", "id"]) == 0
    got = _lines(capsys)
    assert len(got) == 5
    assert [g.get("id") for g in got] == [1, None, 2, None, 3]
    assert [("error" in g) for g in got] == [False, True, True, True, False]


def test_predict_warns_on_mostly_unknown_tokens(run, capsys):
    assert main([str(run), "这部电影非常好看", "a great movie", "great 电影好看", "great movie 电影"]) == 0
    got = _lines(capsys)
    assert "unknown" in got[0]["warning"] and got[0]["label"] in {"negative", "positive"}
    assert "warning" not in got[1]
    assert "warning" in got[2]  # 1 known token of 5
    assert "warning" in got[3]  # 2 of 4: the threshold is >= 50 %
    from peftsent.tokenization import UNKNOWN_SHARE

    assert UNKNOWN_SHARE == 0.5


def test_only_newlines_separate_inputs(run, tmp_path, capsys):
    """U+2028, U+0085 and form feeds occur inside real reviews; str.splitlines would cut a review there."""
    lines = ["good film\u2028 really", "bad\x0c film", "great\x85 movie", "awful"]
    (tmp_path / "r.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main([str(run), "--file", str(tmp_path / "r.txt")]) == 0
    assert [g["text"] for g in _lines(capsys)] == lines
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in lines),
                                      encoding="utf-8")
    assert main([str(run), "--file", str(tmp_path / "r.jsonl")]) == 0
    assert [g["text"] for g in _lines(capsys)] == lines


def test_baseline_pairing_reads_predictions_with_line_separators_in_reviews(tmp_path):
    from peftsent.baseline import paired_predictions
    from peftsent.predictions import data_stem, predictions_name

    rows = [{"index": 0, "text": "fine\u2028film", "gold": 1, "predicted": 1},
            {"index": 1, "text": "dull\x0cfilm", "gold": 0, "predicted": 1}]
    name = predictions_name(f"{data_stem('reviews.csv')}-test")
    (tmp_path / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert paired_predictions(tmp_path, "reviews.csv", "test", [1, 0]) == ([1, 0], [1, 1], [1, 0])
