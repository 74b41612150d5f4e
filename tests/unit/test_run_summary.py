"""Per-class metrics derived from a confusion matrix."""

import pytest

from pipeline.run_summary import (
    RunSummary,
    class_balance,
    format_summary,
    per_class_from_confusion,
)


def test_precision_recall_f1_per_class():
    # actual a -> predicted a: 3, a -> b: 1, b -> b: 2, c never predicted nor present.
    entries = [(0, 0, 3.0), (0, 1, 1.0), (1, 1, 2.0)]
    result = per_class_from_confusion(entries, ["a", "b", "c"])
    assert result["a"] == {
        "precision": 1.0,
        "recall": 0.75,
        "f1": pytest.approx(6 / 7),
        "support": 4.0,
    }
    assert result["b"]["precision"] == pytest.approx(2 / 3)
    assert result["b"]["recall"] == 1.0
    assert result["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_class_balance_names_the_worst_class_and_averages_f1():
    per_class = per_class_from_confusion([(0, 0, 3.0), (0, 1, 1.0), (1, 1, 2.0)], ["a", "b"])
    balance = class_balance(per_class)
    assert balance["worst_class"] == "a"
    assert balance["worst_class_recall"] == 0.75
    assert balance["macro_f1"] == pytest.approx((6 / 7 + 0.8) / 2)
    # A class the evaluation holds no example of counts in neither figure.
    with_absent = per_class_from_confusion([(0, 0, 3.0), (1, 1, 2.0)], ["a", "b", "c"])
    assert class_balance(with_absent) == {
        "macro_f1": 1.0,
        "worst_class": "a",
        "worst_class_recall": 1.0,
    }


def _store_with_one_run(tmp_path, evaluation_uri: str):
    """A real MLMD store with one run: an Evaluator and a Pusher execution and their outputs."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as pb

    config = pb.ConnectionConfig()
    config.sqlite.filename_uri = str(tmp_path / "metadata.sqlite")
    config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    store = metadata_store.MetadataStore(config)
    run_type = store.put_context_type(pb.ContextType(name="pipeline_run"))
    node_type = store.put_context_type(pb.ContextType(name="node"))
    [run] = store.put_contexts([pb.Context(type_id=run_type, name="run-1")])
    execution_type = store.put_execution_type(pb.ExecutionType(name="exec"))
    artifact_type = store.put_artifact_type(pb.ArtifactType(name="artifact"))
    for node, key, uri, properties in (
        ("Transform", "transform_graph", str(tmp_path / "deleted" / "transform_graph"), {}),
        ("Evaluator", "evaluation", evaluation_uri, {}),
        ("Pusher", "pushed_model", str(tmp_path / "pushed"), {"pushed": 1, "already_served": 1}),
    ):
        [node_context] = store.put_contexts([pb.Context(type_id=node_type, name=f"p.{node}")])
        artifact = pb.Artifact(type_id=artifact_type, uri=uri)
        for name, value in properties.items():
            artifact.custom_properties[name].int_value = value
        artifact.custom_properties["pushed_destination"].string_value = "/serving/clf/1"
        event = pb.Event(type=pb.Event.OUTPUT)
        event.path.steps.add().key = key
        store.put_execution(
            pb.Execution(type_id=execution_type, last_known_state=pb.Execution.COMPLETE),
            [(artifact, event)],
            store.get_contexts_by_id([run, node_context]),
        )
    return store


def test_a_deleted_evaluation_is_a_problem_line_not_a_crash(tmp_path):
    from pipeline.run_summary import format_summary, summarize_run

    store = _store_with_one_run(tmp_path, str(tmp_path / "deleted" / "evaluation"))
    summary = summarize_run(store, "p", "run-1")
    eval_problem, per_class_problem = summary.problems
    assert "eval metrics unreadable" in eval_problem and "deleted/evaluation" in eval_problem
    # The per-class metrics need the class names, from the (also deleted) transform graph.
    assert "class names unreadable" in per_class_problem
    assert "deleted/transform_graph" in per_class_problem
    assert "--enable-cache false" in eval_problem
    text = format_summary(summary)
    assert f"problem: {eval_problem}" in text
    assert "/serving/clf/1 (already the newest version, byte-identical" in text


def test_summary_lists_each_export_with_its_gate_verdict():
    refused = "tflite_int8: eval accuracy 0.5000 is 0.3000 below the SavedModel's 0.8000, ..."
    summary = RunSummary(
        run_id="r",
        components=[],
        exports={
            "saved_model_accuracy": 0.8,
            "eval_examples": 100,
            "max_export_accuracy_drop": 0.01,
            "exports": [
                {
                    "kind": "tflite_fp32",
                    "size_bytes": 4_000_000,
                    "accuracy": 0.8,
                    "agreement": 1.0,
                    "pushed": True,
                    "reason": "",
                },
                {
                    "kind": "tflite_int8",
                    "size_bytes": 1_000_000,
                    "accuracy": 0.5,
                    "agreement": 0.6,
                    "pushed": False,
                    "reason": refused,
                },
            ],
        },
        exports_destination="/s/m/exports/3",
    )
    text = format_summary(summary)
    assert "exports (eval accuracy on 100 images; SavedModel 0.8000; max drop 0.01):" in text
    assert "  tflite_fp32       4.00    0.8000     1.0000  passed" in text
    assert f"REFUSED: {refused}" in text
    assert "exports at: /s/m/exports/3" in text


def test_summary_says_why_no_export_was_made():
    summary = RunSummary(run_id="r", components=[], exports={"skipped": "not blessed"})
    assert "exports: none made (not blessed)" in format_summary(summary)


def test_tuning_table_is_read_best_first_and_formatted(tmp_path):
    import json

    from pipeline.run_summary import TUNER_RESULTS_FILE, format_tuning, load_tuner_results

    trials = [
        {"trial_id": "00", "score": 0.61, "learning_rate": 0.003, "dropout": 0.1},
        {"trial_id": "01", "score": 0.74, "learning_rate": 0.0004, "dropout": 0.3},
    ]
    (tmp_path / TUNER_RESULTS_FILE).write_text(json.dumps(trials))
    loaded = load_tuner_results(str(tmp_path))
    assert [t["trial_id"] for t in loaded] == ["01", "00"]
    lines = format_tuning(loaded)
    assert lines[0].startswith("tuning: 2 trials")
    assert "dropout" in lines[1] and "learning_rate" in lines[1]
    assert lines[2].split()[:4] == ["01", "0.7400", "0.3", "0.0004"]
