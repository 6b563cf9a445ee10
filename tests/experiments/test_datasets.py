"""The bundled datasets and the dataset loader (labkit.experiments.datasets)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from labkit.errors import DatasetError
from labkit.experiments.datasets import (
    DATASETS_ENV,
    Dataset,
    datasets_dir,
    list_datasets,
    load_dataset,
)

BUNDLED = ["loan_triage", "review_sentiment", "ticket_extraction"]

# dataset -> the text input, and each expected field -> allowed values (None: free text)
SPECS: dict[str, tuple[str, dict[str, set[Any] | None]]] = {
    "loan_triage": ("applicant", {"decision": {"approve", "deny", "review"}, "reasoning": None}),
    "review_sentiment": ("review", {"sentiment": {"positive", "negative", "neutral"}}),
    "ticket_extraction": (
        "ticket",
        {
            "category": {"billing", "shipping", "technical", "account", "other"},
            "priority": {"low", "medium", "high"},
            "order_id": None,
            "product": None,
        },
    ),
}
CATALOGUE = {
    "AeroBlend 500",
    "Kestrel Kettle Pro",
    "Lumo Desk Lamp",
    "Lumo Smart Bulb",
    "Nimbus Air Purifier",
    "Tidal Robot Vacuum",
    "Echoframe Headphones",
    "Orbit Smart Speaker",
    "Pulse Fitness Band",
    "Brisk Coffee Grinder",
    "Halo Video Doorbell",
    "Terra Standing Desk",
    "Cirrus Space Heater",
    "Kestrel Plus",
    "Kestrel Home app",
    "Kestrel Gift Card",
}


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


ROWS: list[dict[str, Any]] = [
    {"id": "a", "text": "good", "expected": {"label": "positive"}},
    {"id": "b", "text": "bad", "expected": {"label": "negative"}},
    {"id": "c", "text": "meh", "expected": None},
]


# --------------------------------------------------------------------------- bundled data
def test_list_datasets_names_the_bundled_ones() -> None:
    assert set(BUNDLED) <= set(list_datasets())
    assert datasets_dir().name == "datasets"


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_dataset_shape_and_labels(name: str) -> None:
    ds = load_dataset(name)
    text_column, fields = SPECS[name]
    assert ds.name == name and ds.path is not None and ds.path.endswith(f"{name}.jsonl")
    assert len(ds) >= 100
    assert ds.df["id"].is_unique and all(isinstance(i, str) and i for i in ds.df["id"])
    assert not ds.generated_ids
    assert ds.expected_fields == list(fields)
    assert text_column in ds.input_columns
    for record in ds.records():
        expected = record["expected"]
        assert isinstance(expected, dict), record["id"]
        assert set(expected) == set(fields), record["id"]
        for field, allowed in fields.items():
            if allowed is not None:
                assert expected[field] in allowed, (record["id"], field, expected[field])
        assert isinstance(record[text_column], str) and record[text_column].strip()


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("loan_triage", "decision"),
        ("review_sentiment", "sentiment"),
        ("ticket_extraction", "category"),
        ("ticket_extraction", "priority"),
    ],
)
def test_label_distribution_is_not_degenerate(name: str, field: str) -> None:
    ds = load_dataset(name)
    counts = ds.label_counts(field)
    allowed = SPECS[name][1][field]
    assert allowed is not None
    assert set(counts.index) == allowed  # every class occurs
    assert counts.min() >= 0.10 * len(ds), counts.to_dict()


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_rows_are_not_near_duplicates(name: str) -> None:
    """No two inputs share more than half of their word trigrams (the most similar pair of
    loan summaries, which share a form layout, shares under a quarter)."""
    texts = [str(t) for t in load_dataset(name).df[SPECS[name][0]]]
    assert len(set(texts)) == len(texts)
    shingles = []
    for text in texts:
        words = re.findall(r"\w+", text.lower())
        shingles.append({tuple(words[i : i + 3]) for i in range(max(1, len(words) - 2))})
    close = [
        (texts[i][:60], texts[j][:60])
        for i, a in enumerate(shingles)
        for j in range(i + 1, len(shingles))
        if len(a & shingles[j]) / len(a | shingles[j]) > 0.5
    ]
    assert not close


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_dataset_has_a_card(name: str) -> None:
    card = datasets_dir() / f"{name}.md"
    text = card.read_text(encoding="utf-8")
    for heading in ("## Fields", "## Label distribution", "## How it was written", "## Caveats"):
        assert heading in text, (name, heading)
    assert f"{len(load_dataset(name))} rows" in text
    assert name in (datasets_dir() / "README.md").read_text(encoding="utf-8")


def test_loan_reasoning_is_one_sentence_matching_the_decision() -> None:
    lead = {"approve": "Approve:", "deny": "Deny because", "review": "Refer for review because"}
    for record in load_dataset("loan_triage").records():
        decision, reasoning = record["expected"]["decision"], record["expected"]["reasoning"]
        assert reasoning.startswith(lead[decision]), record["id"]
        assert reasoning.endswith(".") and ". " not in reasoning, record["id"]


def test_sentiment_tags_are_known() -> None:
    tags = Counter(t for r in load_dataset("review_sentiment").records() for t in r["tags"])
    assert set(tags) <= {"sarcasm", "mixed", "short", "long", "typos"}
    assert all(tags[t] >= 5 for t in ("sarcasm", "mixed", "short", "long", "typos"))


def test_ticket_order_ids_and_products_follow_the_card() -> None:
    records = load_dataset("ticket_extraction").records()
    with_order = 0
    for record in records:
        expected, ticket = record["expected"], record["ticket"]
        assert ticket.startswith("Subject: ")
        order_id = expected["order_id"]
        if order_id is not None:
            with_order += 1
            assert re.fullmatch(r"KH-\d{6}", order_id), record["id"]
            assert order_id[3:] in ticket, record["id"]
        assert expected["product"] is None or expected["product"] in CATALOGUE, record["id"]
    assert 0.2 * len(records) <= with_order <= 0.8 * len(records)


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_personal_data_is_fictional(name: str) -> None:
    text = (datasets_dir() / f"{name}.jsonl").read_text(encoding="utf-8")
    for email in re.findall(r"[\w.+-]+@([\w-]+(?:\.[\w-]+)+)", text):
        assert re.search(r"(^|\.)example\.(com|org)$", email), email
    for number in re.findall(r"555[-. ]?(\d{4})", text):
        assert number.startswith("01"), number


# --------------------------------------------------------------------------- loading
def test_unknown_bundled_name_lists_names_and_suggests() -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset("loan_triag")
    message = str(info.value)
    assert "'loan_triage'" in message and "Did you mean" in message
    for name in BUNDLED:
        assert name in message


def test_datasets_env_overrides_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_jsonl(tmp_path / "mine.jsonl", [json.dumps(r) for r in ROWS])
    monkeypatch.setenv(DATASETS_ENV, str(tmp_path))
    assert list_datasets() == ["mine"]
    assert len(load_dataset("mine")) == 3
    with pytest.raises(DatasetError, match="mine"):
        load_dataset("loan_triage")
    monkeypatch.setenv(DATASETS_ENV, str(tmp_path / "nowhere"))
    assert list_datasets() == []


def test_bad_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [json.dumps(ROWS[0]), '{"id": "b", "text": "oops",}', "", "[1, 2]", json.dumps(ROWS[2])],
    )
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    error = info.value
    assert error.path == str(path)
    assert str(path) in str(error) and "line 2" in str(error)
    assert "one object" in str(error)  # says what to fix
    assert len(error.problems) == 2
    assert error.problems[1].startswith("line 4: a JSON list")


def test_duplicate_ids_are_listed(tmp_path: Path) -> None:
    rows = [*ROWS, {"id": "a", "text": "again"}, {"id": "c", "text": "and again"}]
    with pytest.raises(DatasetError) as info:
        load_dataset(rows)
    assert "'a'" in " ".join(info.value.problems) and "'c'" in " ".join(info.value.problems)
    assert "a, c" in str(info.value)


@pytest.mark.parametrize(
    "source",
    [
        pytest.param([], id="empty-list"),
        pytest.param(pd.DataFrame(), id="empty-frame"),
        pytest.param(pd.DataFrame({"id": [], "text": []}), id="frame-no-rows"),
    ],
)
def test_empty_dataset_is_an_error(source: Any) -> None:
    with pytest.raises(DatasetError, match="empty"):
        load_dataset(source)


@pytest.mark.parametrize(
    ("filename", "content"),
    [("empty.jsonl", "\n\n"), ("empty.csv", ""), ("header.csv", "id,text\n"), ("empty.json", "[]")],
)
def test_empty_files_are_an_error(tmp_path: Path, filename: str, content: str) -> None:
    path = tmp_path / filename
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match="empty") as info:
        load_dataset(path)
    assert info.value.path == str(path)


def test_missing_file_and_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="file not found"):
        load_dataset(tmp_path / "nope.jsonl")
    other = tmp_path / "data.parquet"
    other.write_text("x", encoding="utf-8")
    with pytest.raises(DatasetError, match="unsupported file type"):
        load_dataset(str(other))


def test_unsupported_source_type() -> None:
    with pytest.raises(DatasetError, match="cannot load a dataset from int"):
        load_dataset(42)
    with pytest.raises(DatasetError, match="rows must be dicts"):
        load_dataset([{"id": "a"}, "b"])


def test_missing_id_values_are_an_error() -> None:
    with pytest.raises(DatasetError, match="no 'id'") as info:
        load_dataset([{"id": "a", "text": "x"}, {"id": None, "text": "y"}, {"id": " ", "t": 1}])
    assert info.value.problems == ["row 2: missing id", "row 3: missing id"]


def test_ids_are_generated_from_row_order_without_an_id_column() -> None:
    ds = load_dataset([{"text": "x"}, {"text": "y"}], name="noids")
    assert ds.ids == ["row-0001", "row-0002"]
    assert ds.generated_ids
    assert "ids generated from row order" in ds._repr_html_()
    big = load_dataset([{"text": str(i)} for i in range(10_000)])
    assert big.ids[-1] == "row-10000" and big.df["id"].is_unique


def test_custom_id_column_and_numeric_ids() -> None:
    frame = pd.DataFrame({"ticket_no": [101, 102], "text": ["a", "b"]})
    ds = load_dataset(frame, id_column="ticket_no")
    assert ds.ids == ["101", "102"]
    assert "ticket_no" in ds.input_columns  # still usable in templates
    with pytest.raises(DatasetError, match="both 'ticket_no' and 'id'"):
        load_dataset(frame.assign(id=["x", "y"]), id_column="ticket_no")
    with pytest.raises(DatasetError, match="'id' column exists"):
        load_dataset(frame.rename(columns={"ticket_no": "id"}), id_column="ticket_no")


def test_csv_expected_columns_are_collected(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "id,text,expected.category,expected.order_id\n"
        "007,Where is my parcel?,shipping,KH-000123\n"
        'x2,"Two lines,\nand a comma",billing,\n'
        "x3,No labels here,,\n",
        encoding="utf-8",
    )
    ds = load_dataset(path)
    assert ds.name == "t" and ds.ids == ["007", "x2", "x3"]  # leading zeros kept
    assert ds.expected("007") == {"category": "shipping", "order_id": "KH-000123"}
    assert ds.expected("x2") == {"category": "billing", "order_id": None}
    assert ds.records()[1]["text"] == "Two lines,\nand a comma"
    assert ds.records()[2]["expected"] is None
    assert ds.expected_fields == ["category", "order_id"]


def test_csv_expected_json_column(tmp_path: Path) -> None:
    path = tmp_path / "j.csv"
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "text": ["x", "y", "z"],
            "expected": ['{"label": "positive", "score": 4}', "", '{"label": "negative"}'],
        }
    )
    frame.to_csv(path, index=False)
    ds = load_dataset(path)
    assert ds.expected("a") == {"label": "positive", "score": 4}
    assert ds.records()[1]["expected"] is None
    frame.loc[2, "expected"] = "not json"
    frame.to_csv(path, index=False)
    with pytest.raises(DatasetError, match="row 3") as info:
        load_dataset(path)
    assert "JSON object" in str(info.value)


def test_expected_must_be_an_object_and_one_form_only() -> None:
    with pytest.raises(DatasetError, match="not an object"):
        load_dataset([{"id": "a", "expected": ["positive"]}])
    with pytest.raises(DatasetError, match="keep one form"):
        load_dataset(pd.DataFrame({"id": ["a"], "expected": [{}], "expected.label": ["x"]}))


def test_json_file_list_and_rows_object(tmp_path: Path) -> None:
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(ROWS), encoding="utf-8")
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"rows": ROWS}), encoding="utf-8")
    assert load_dataset(plain).fingerprint == load_dataset(wrapped).fingerprint
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": "a"},\n  {"id": }]', encoding="utf-8")
    with pytest.raises(DatasetError, match="line 2"):
        load_dataset(broken)
    scalar = tmp_path / "scalar.json"
    scalar.write_text('{"id": "a"}', encoding="utf-8")
    with pytest.raises(DatasetError, match="list of objects"):
        load_dataset(scalar)


# --------------------------------------------------------------------------- round trips
def test_jsonl_round_trip(tmp_path: Path) -> None:
    ds = load_dataset("review_sentiment")
    again = load_dataset(ds.save(tmp_path / "copy.jsonl"))
    assert again.records() == ds.records()
    assert again.fingerprint == ds.fingerprint


def test_csv_round_trip(tmp_path: Path) -> None:
    ds = load_dataset("ticket_extraction")  # all-string inputs, null labels included
    again = load_dataset(ds.save(tmp_path / "copy.csv"))
    assert again.records() == ds.records()
    assert again.fingerprint == ds.fingerprint


def test_csv_round_trip_of_list_cells_gives_json_text(tmp_path: Path) -> None:
    ds = load_dataset("review_sentiment").head(3)
    again = load_dataset(ds.save(tmp_path / "copy.csv"))
    assert [json.loads(r["tags"]) for r in again.records()] == [r["tags"] for r in ds.records()]
    with pytest.raises(DatasetError, match=r"use \.jsonl or \.csv"):
        ds.save(tmp_path / "copy.txt")


def test_dataframe_and_records_round_trip() -> None:
    ds = load_dataset("loan_triage")
    from_frame = load_dataset(ds.df, name="copy")
    from_records = load_dataset(ds.records())
    assert from_frame.fingerprint == from_records.fingerprint == ds.fingerprint
    assert from_frame.records() == ds.records()
    assert from_frame.df is not ds.df
    assert load_dataset(ds) is ds


def test_flat_dataframe_with_expected_prefix_columns() -> None:
    flat = pd.json_normalize(ROWS[:2])  # columns: id, text, expected.label
    ds = load_dataset(flat)
    assert ds.records() == load_dataset(ROWS[:2]).records()


def test_numpy_and_nan_values_become_plain_python() -> None:
    frame = pd.DataFrame({"id": ["a", "b"], "n": [1, 2], "x": [1.5, float("nan")]})
    ds = load_dataset(frame)
    assert ds.records()[0] == {"id": "a", "n": 1, "x": 1.5, "expected": None}
    assert ds.records()[1]["x"] is None
    assert type(ds.records()[0]["n"]) is int


# --------------------------------------------------------------------------- fingerprint
def test_fingerprint_is_stable_and_content_sensitive() -> None:
    base = load_dataset(ROWS)
    assert base.fingerprint == load_dataset([dict(reversed(r.items())) for r in ROWS]).fingerprint
    assert base.fingerprint == load_dataset(ROWS, name="other name").fingerprint
    assert re.fullmatch(r"[0-9a-f]{64}", base.fingerprint)
    assert load_dataset("loan_triage").fingerprint == load_dataset("loan_triage").fingerprint

    relabelled = [dict(r) for r in ROWS]
    relabelled[0] = {**ROWS[0], "expected": {"label": "negative"}}
    edited = [{**ROWS[0], "text": "good!"}, *ROWS[1:]]
    reordered = [ROWS[1], ROWS[0], ROWS[2]]
    fewer = ROWS[:2]
    prints = {
        load_dataset(rows).fingerprint for rows in (ROWS, relabelled, edited, reordered, fewer)
    }
    assert len(prints) == 5


# --------------------------------------------------------------------------- validate_for
def test_validate_for_passes_when_columns_exist() -> None:
    ds = load_dataset("review_sentiment")
    ds.validate_for(["Product: {{product}}\nReview: {{ review }}"], require_labels=True)
    ds.validate_for({"plain": "no variables at all"})
    with pytest.raises(DatasetError, match="'text'"):  # a lone string is one template
        ds.validate_for("Classify: {{text}}")


def test_validate_for_lists_every_missing_variable_and_its_template() -> None:
    ds = load_dataset("review_sentiment")
    with pytest.raises(DatasetError) as info:
        ds.validate_for(
            {
                "short": "Classify: {{text}}",
                "long": "Product {{product}}. Review: {{reveiw}}. Stars: {{stars}}. {{text}}",
            }
        )
    problems = info.value.problems
    assert len(problems) == 3
    by_var = {re.search(r"'(\w+)'", p).group(1): p for p in problems}  # type: ignore[union-attr]
    assert set(by_var) == {"text", "reveiw", "stars"}
    assert "short" in by_var["text"] and "long" in by_var["text"]
    assert "did you mean 'review'" in by_var["reveiw"]
    assert "Columns available: product, review, tags" in str(info.value)


def test_validate_for_names_positional_templates_and_empty_cells() -> None:
    ds = load_dataset([{"id": "a", "text": "x"}, {"id": "b", "text": None}])
    with pytest.raises(DatasetError) as info:
        ds.validate_for(["{{text}}", "{{text}} {{lang}}"])
    message = str(info.value)
    assert "template #2" in message and "'lang'" in message
    assert "column 'text' is empty in 1 row(s): b" in message


def test_validate_for_require_labels_lists_unlabelled_rows() -> None:
    ds = load_dataset(ROWS)
    ds.validate_for(["{{text}}"])  # labels not required: fine
    with pytest.raises(DatasetError, match=r"1 row\(s\) have no expected labels: c"):
        ds.validate_for(["{{text}}"], require_labels=True)
    empty_dict = load_dataset([{"id": "a", "text": "x", "expected": {}}])
    with pytest.raises(DatasetError, match="no expected labels"):
        empty_dict.validate_for([], require_labels=True)


# --------------------------------------------------------------------------- access & subsets
def test_expected_lookup() -> None:
    ds = load_dataset(ROWS)
    assert ds.expected("a") == {"label": "positive"}
    ds.expected("a")["label"] = "changed"
    assert ds.expected("a") == {"label": "positive"}  # a copy
    with pytest.raises(DatasetError, match="Did you mean 'a'"):
        ds.expected("A")
    with pytest.raises(DatasetError, match="no expected labels"):
        ds.expected("c")
    with pytest.raises(DatasetError, match="no expected field"):
        ds.label_counts("nope")


def test_sample_and_head() -> None:
    ds = load_dataset("review_sentiment")
    first = ds.sample(20, seed=1)
    assert isinstance(first, Dataset) and len(first) == 20
    assert first.ids == ds.sample(20, seed=1).ids
    assert first.ids != ds.sample(20, seed=2).ids
    positions = [ds.ids.index(i) for i in first.ids]
    assert positions == sorted(positions)  # original order kept
    assert first.name != ds.name and first.fingerprint != ds.fingerprint
    assert len(ds.sample(len(ds))) == len(ds)
    with pytest.raises(DatasetError, match="cannot sample"):
        ds.sample(len(ds) + 1)
    with pytest.raises(DatasetError, match="cannot sample"):
        ds.sample(0)
    assert ds.head(3).ids == ds.ids[:3]
    assert len(ds.head()) == 5 and len(ds.head(10_000)) == len(ds)
    assert list(ds.head(2)) == ds.records()[:2]


def test_repr_html_summarises_and_escapes() -> None:
    rows: list[dict[str, Any]] = [
        {"id": f"r{i}", "text": "<script>alert(1)</script>" * 10} for i in range(7)
    ]
    rows[0]["expected"] = {"label": "spam"}
    html = load_dataset(rows, name="demo<1>")._repr_html_()
    assert "demo&lt;1&gt;" in html and "7 rows" in html
    assert "<script>" not in html
    assert "label: " in html and "2 more rows" in html
    text = repr(load_dataset(ROWS, name="tiny"))
    assert text.startswith("Dataset(name='tiny', rows=3")
