import pytest

from peftsent.data import load_splits, tokenize_splits
from peftsent.errors import DataError
from peftsent.recipe import DataSection
from peftsent.tokenization import TokenPolicy

from conftest import make_reviews, write_csv


def _section(path, **kw):
    return DataSection(name=str(path), validation_size=8, test_size=8, **kw)


def test_local_csv_is_split_stratified(reviews_csv):
    splits = load_splits(_section(reviews_csv))
    assert {k: len(v) for k, v in splits.items()} == {"train": 48, "validation": 8, "test": 8}
    for split in splits.values():
        assert sorted(set(split["label"])) == [0, 1]
        assert split.column_names == ["text", "label"]


def test_bad_labels_are_reported_by_row(tmp_path):
    rows = make_reviews(20)
    rows[3] = (rows[3][0], "neutral")
    rows[7] = (rows[7][0], 5)
    with pytest.raises(DataError) as info:
        load_splits(_section(write_csv(tmp_path / "bad.csv", rows)))
    assert "neutral: 1 rows (row 3)" in str(info.value) and "5: 1 rows (row 7)" in str(info.value)
    assert "data.labels" in str(info.value)


def test_label_names_are_accepted(tmp_path):
    rows = [(t, "positive" if y else "Negative") for t, y in make_reviews(40)]
    splits = load_splits(_section(write_csv(tmp_path / "named.csv", rows)))
    assert set(splits["train"]["label"]) == {0, 1}


def test_missing_column_names_the_columns_and_the_fix(tmp_path):
    path = write_csv(tmp_path / "cols.csv", make_reviews(20), header=("review", "label"))
    with pytest.raises(DataError) as info:
        load_splits(_section(path))
    assert "'text' not found" in str(info.value) and "review" in str(info.value) and "data.text_column" in str(info.value)


def test_text_column_setting_reads_other_columns(tmp_path):
    path = write_csv(tmp_path / "cols.csv", make_reviews(40), header=("review", "sentiment"))
    splits = load_splits(_section(path, text_column="review", label_column="sentiment"))
    assert len(splits["train"]) == 24


def test_empty_texts_are_reported(tmp_path):
    rows = make_reviews(20)
    rows[5] = ("   ", 1)
    with pytest.raises(DataError, match="empty or not text"):
        load_splits(_section(write_csv(tmp_path / "empty.csv", rows)))


def test_empty_split_is_an_error(tmp_path, reviews_csv):
    empty = write_csv(tmp_path / "empty.csv", [])
    with pytest.raises(DataError, match="empty.csv has a header but no reviews"):
        load_splits(_section(reviews_csv, test_file=str(empty)))


def test_one_class_train_is_an_error(tmp_path):
    rows = [(t, 1) for t, _ in make_reviews(30)]
    test = write_csv(tmp_path / "t.csv", make_reviews(10, seed=1))
    with pytest.raises(DataError, match=r"split 'train' holds one class only \(0 negative, 30 positive"):
        load_splits(_section(write_csv(tmp_path / "one.csv", rows), validation_file=str(test), test_file=str(test)))


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_splits(_section(tmp_path / "nope.csv"))


def test_jsonl_and_parquet_load(tmp_path):
    import pandas as pd

    frame = pd.DataFrame(make_reviews(40), columns=["text", "label"])
    frame.to_json(tmp_path / "r.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "r.parquet")
    for name in ("r.jsonl", "r.parquet"):
        assert len(load_splits(_section(tmp_path / name))["train"]) == 24


def test_subsets_are_seeded_and_stratified(reviews_csv):
    section = _section(reviews_csv, max_train_samples=10)
    first, second = load_splits(section), load_splits(section)
    assert first["train"]["text"] == second["train"]["text"]
    assert sorted(first["train"]["label"]) == [0] * 5 + [1] * 5


def test_imdb_offline_splits():
    splits = load_splits(DataSection(name="imdb-offline", max_train_samples=100))
    assert len(splits["validation"]) == 2500 and len(splits["test"]) == 2500 and len(splits["train"]) == 100
    full = load_splits(DataSection(name="imdb-offline"), splits=["train"])
    assert len(full["train"]) == 19904  # 25,000 less 96 duplicates less 5,000 held out
    assert not set(full["train"]["text"]) & set(splits["test"]["text"])
    assert abs(sum(splits["test"]["label"]) - 1250) <= 2  # stratified: class shares as in the data
    assert not set(splits["test"]["text"]) & set(splits["validation"]["text"])


def test_tokenization_truncates_and_adds_lengths(reviews_csv, tiny_models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    tokenized = tokenize_splits(load_splits(_section(reviews_csv)), tokenizer, TokenPolicy(6))
    assert max(tokenized["train"]["length"]) == 6
    assert set(tokenized["train"].column_names) >= {"input_ids", "attention_mask", "labels", "length"}
