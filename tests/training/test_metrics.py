import json
import math
import re

import pytest

from bincounter.files import atomic_write_json
from bincounter.training.metrics import (
    METRIC_DEFINITIONS,
    METRIC_NAMES,
    OBJECTIVE_METRIC,
    format_metrics,
)
from bincounter.training.reports import plot_evaluation

from support import parse_metrics, summarize


def test_every_formatted_value_is_parsed_back_by_the_exported_regexes():
    values = {
        "epoch": 3,
        "lr": 1e-05,
        "train:loss": 1.41,
        "validation:loss": 1.38,
        "validation:accuracy": 0.412,
        "validation:rmse": 1.07,
        "train:images_per_second": 123456789.0,
    }
    parsed = parse_metrics(format_metrics(values))
    assert set(parsed) == set(values)
    for name, value in values.items():
        assert parsed[name] == pytest.approx(value, rel=1e-5)


#: One value per metric name, each different, in the forms the job prints (ints, tiny, huge).
EVERY_METRIC = {
    name: 7 if name == "epoch" else (i + 1) * 0.0123 * 10 ** (i % 5 - 2)
    for i, name in enumerate(METRIC_NAMES)
}


def test_every_metric_name_has_a_definition_and_only_one():
    assert [d["Name"] for d in METRIC_DEFINITIONS] == list(METRIC_NAMES)
    assert len(set(METRIC_NAMES)) == len(METRIC_NAMES)


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_each_metric_round_trips_alone_and_within_a_line_of_all(name):
    alone = parse_metrics(format_metrics({name: EVERY_METRIC[name]}))
    assert alone == {name: pytest.approx(EVERY_METRIC[name], rel=1e-5)}
    within = parse_metrics(format_metrics(EVERY_METRIC))
    assert within[name] == pytest.approx(EVERY_METRIC[name], rel=1e-5)


@pytest.mark.parametrize("text", ["1e-05", "1E-05", "-3.2e+01", "0.5", "7", ".25", "nan"])
def test_number_regex_matches_python_float_forms(text):
    definition = next(d for d in METRIC_DEFINITIONS if d["Name"] == "lr")
    match = re.search(definition["Regex"], f"epoch=1 lr={text} train:loss=2")
    assert match and match.group(1) == text


def test_names_do_not_match_inside_longer_names():
    assert "train:loss" not in parse_metrics("pretrain:loss=1.0")
    assert parse_metrics("validation:loss=0.5")["validation:loss"] == 0.5
    assert "train:loss" not in parse_metrics("validation:loss=0.5")


def test_objective_is_defined_and_unknown_names_refused():
    assert OBJECTIVE_METRIC in {d["Name"] for d in METRIC_DEFINITIONS}
    with pytest.raises(ValueError, match="no MetricDefinition"):
        format_metrics({"validation:acc": 1.0})


def test_summary_counts_in_items():
    # labels are class indices (count - 1); one off by one, one off by three
    summary = summarize([0, 1, 2, 4], [0, 2, 2, 1])
    assert summary["accuracy"] == 0.5
    assert summary["off_by_one"] == 0.75
    assert summary["rmse"] == pytest.approx(math.sqrt((0 + 1 + 0 + 9) / 4))
    assert summary["confusion_matrix"][4][1] == 1
    assert summary["per_count"]["3"]["precision"] == 0.5
    assert summary["per_count"]["2"]["recall"] == 0.0
    assert summary["per_count"]["4"]["recall"] is None  # count 4 absent: undefined, not 0
    assert summary["per_count"]["5"]["precision"] is None  # never predicted


def test_reports_are_strict_json_even_with_undefined_metrics(tmp_path):
    summary = summarize([0, 1, 2, 4], [0, 2, 2, 1])
    path = tmp_path / "evaluation.json"
    atomic_write_json(
        path, {"summary": summary, "history": [{"train:loss": math.nan, "lr": math.inf}]}
    )
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text, parse_constant=lambda token: pytest.fail(f"non-JSON {token}"))
    assert loaded["summary"]["per_count"]["5"]["precision"] is None
    assert loaded["history"] == [{"train:loss": None, "lr": None}]
    plot_evaluation(summary, tmp_path / "evaluation.png", "test")  # n/a recall still plots
    assert (tmp_path / "evaluation.png").stat().st_size > 0
