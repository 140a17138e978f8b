"""`llm2llm compare`, the baselines (AugGPT, EDA, more real data) and the paper's ablations as loop switches.

Compare logic runs with a scripted student and teacher (fast, deterministic); the ablations that touch training
(continued training, one-shot, generated parents) run the real HF student on a tiny random 2-layer model.
"""

from __future__ import annotations

import json

import pytest

from conftest import SEED_ROWS, TEST_ROWS, write_jsonl
from llm2llm import report
from llm2llm.compare import Method, compare, config_hash
from llm2llm.config import load_config
from llm2llm.data import read_examples, read_jsonl
from llm2llm.errors import ConfigError
from llm2llm.loop import run
from llm2llm.runstore import RunStore
from llm2llm.tasks import normalize

from scripted import ScriptedStudent, ScriptedTeacher

POOL_ROWS = [
    {"text": "My card was billed for a plan I cancelled", "label": "billing"},
    {"text": "The delivery van never showed up today", "label": "shipping"},
    {"text": "Login fails with a blank page on my phone", "label": "technical"},
    {"text": "Why is there a late fee on my statement?", "label": "billing"},
    {"text": "Tracking says delivered but nothing arrived", "label": "shipping"},
    {"text": "The printer driver will not install", "label": "technical"},
    {"text": "I was refunded the wrong amount", "label": "billing"},
    {"text": "My order shipped to my old address", "label": "shipping"},
    {"text": "The sync button does nothing", "label": "technical"},
    SEED_ROWS[0],  # a seed and a test row in the pool must never be drawn
    TEST_ROWS[0],
]


@pytest.fixture(autouse=True)
def reset_teacher_calls():
    ScriptedTeacher.calls = []


@pytest.fixture
def config_file(tmp_path, data_files, tiny_model_dir):
    seeds, test = data_files
    pool = write_jsonl(tmp_path / "pool.jsonl", POOL_ROWS)
    settings = {
        "name": "cmp", "output_dir": str(tmp_path / "runs"),
        "data": {"seed_path": str(seeds), "test_path": str(test)},
        "student": {"model": tiny_model_dir, "finetune": "full", "epochs": 1, "batch_size": 4, "learning_rate": 1e-3},
        "teacher": {"type": "scripted:ScriptedTeacher", "samples_per_wrong": 2},
        "loop": {"iterations": 3},
        "select": {"by": "train_errors"},  # the paper's loop: its trainings are counted below
        "augment": {"pool_path": str(pool), "max_rounds": 6},
    }
    path = tmp_path / "compare.yaml"
    path.write_text(json.dumps(settings), encoding="utf-8")  # JSON is YAML
    return path


class Runner:
    """Runs configs with a scripted student that always gets two seed examples wrong; counts the runs."""

    def __init__(self, wrong=(SEED_ROWS[0]["text"], SEED_ROWS[4]["text"])) -> None:
        self.wrong, self.configs = set(wrong), []

    def __call__(self, config):
        self.configs.append(config)
        return run(config, student=ScriptedStudent(self.wrong))


def _runs(summary, method):
    return [r for r in summary["runs"] if r["method"] == method]


def test_compare_matches_counts_and_reuses_finished_runs(config_file):
    runner = Runner()
    methods = [Method.parse(m) for m in ("finetune", "llm2llm", "auggpt", "eda", "more_data")]
    summary = compare(config_file, [], methods, 2, runner)
    assert len(runner.configs) == 10
    for repeat in range(2):
        by_method = {r["method"]: r for r in summary["runs"] if r["repeat"] == repeat}
        added = by_method["llm2llm"]["augmented"]
        assert added > 0 and by_method["finetune"]["augmented"] == 0
        assert all(by_method[m]["augmented"] == added for m in ("auggpt", "eda", "more_data"))  # equal data size
        assert by_method["finetune"]["seed"] == repeat  # repeat k runs with seed + k
    table = {row["method"]: row for row in summary["table"]}
    assert table["llm2llm"]["runs"] == 2 and len(table["llm2llm"]["test_runs"]) == 2
    assert table["llm2llm"]["test_std"] is not None and table["finetune"]["teacher_requests"] == 0
    root = config_file.parent / "runs" / "cmp"
    assert "| llm2llm |" in (root / "compare.md").read_text() and (root / "compare.png").stat().st_size > 0

    # AugGPT asks from every seed, not only the two the student got wrong.
    auggpt = _runs(summary, "auggpt")[0]
    parents = {e.parent_id for e in read_examples(f"{auggpt['run_dir']}/iter_000/train.jsonl") if e.origin == "teacher"}
    wrong_ids = {e.id for e in read_examples(f"{_runs(summary, 'llm2llm')[0]['run_dir']}/iter_000/wrong.jsonl")}
    assert len(parents - wrong_ids) >= 1
    # More data: real pool rows, never a seed or test text; EDA: the seed's label, a changed text.
    pool = [e for e in read_examples(f"{_runs(summary, 'more_data')[0]['run_dir']}/iter_000/train.jsonl") if e.origin == "pool"]
    taken = {normalize(row["text"]) for row in SEED_ROWS + TEST_ROWS}
    assert pool and all(normalize(e.text) not in taken for e in pool)
    seeds_by_id = {e.id: e for e in read_examples(f"{_runs(summary, 'finetune')[0]['run_dir']}/iter_000/train.jsonl")}
    eda_rows = [e for e in read_examples(f"{_runs(summary, 'eda')[0]['run_dir']}/iter_000/train.jsonl") if e.origin == "eda"]
    assert eda_rows and all(e.label == seeds_by_id[e.parent_id].label and e.text != seeds_by_id[e.parent_id].text for e in eda_rows)

    # The same comparison again: every run is reused, no model loaded, no teacher request.
    calls = len(ScriptedTeacher.calls)
    again = compare(config_file, [], methods, 2, Runner())
    assert again["table"] == summary["table"] and len(ScriptedTeacher.calls) == calls
    # One more repeat runs only the new repeat's five runs.
    more = Runner()
    compare(config_file, [], methods, 3, more)
    assert len(more.configs) == 5 and {c.seed for c in more.configs} == {2}


def test_count_matched_methods_are_skipped_when_the_loop_adds_nothing(config_file):
    summary = compare(config_file, [], [Method.parse("finetune"), Method.parse("eda")], 1, Runner(wrong=()))
    # llm2llm added for the count; the fine-tune runs first, so that the loop can take its iteration 0
    assert [r["method"] for r in summary["runs"]] == ["finetune", "llm2llm", "eda"]
    assert _runs(summary, "eda")[0]["skipped"] == "llm2llm added no examples"
    assert {row["method"]: row["runs"] for row in summary["table"]}["eda"] == 0


def test_a_count_matched_variant_matches_the_loop_with_its_overrides(config_file):
    few = "teacher.samples_per_wrong=1"
    methods = [Method.parse(m) for m in (f"few=llm2llm {few}", f"eda_few=eda {few}", "eda")]
    summary = compare(config_file, [], methods, 1, Runner())
    added = {r["method"]: r["augmented"] for r in summary["runs"]}
    assert set(added) == {"llm2llm", "few", "eda_few", "eda"}  # llm2llm added for plain eda only
    assert added["few"] < added["llm2llm"]
    assert added["eda_few"] == added["few"] and added["eda"] == added["llm2llm"]
    alone = compare(config_file, [], methods[:2], 1, lambda config: None)  # nothing needs the plain loop here
    assert [m["label"] for m in alone["methods"] if not m.get("carried")] == ["few", "eda_few"]
    assert [m["label"] for m in alone["methods"] if m.get("carried")] == ["llm2llm", "eda"]  # the earlier rows stay


class CountingStudent(ScriptedStudent):
    trained: list = []

    def train(self, pairs, out_dir, advance=None, init_from=None):
        CountingStudent.trained.append(out_dir)
        return super().train(pairs, out_dir, advance, init_from)


class CountingRunner(Runner):
    def __call__(self, config):
        self.configs.append(config)
        return run(config, student=CountingStudent(self.wrong))


def test_the_loop_takes_iteration_0_from_the_finetune_baseline(config_file):
    CountingStudent.trained = []
    lines = []
    methods = [Method.parse(m) for m in ("finetune", "llm2llm", "e2=llm2llm student.epochs=2", "one_shot")]
    summary = compare(config_file, [], methods, 1, CountingRunner(), log=lines.append)
    by_method = {r["method"]: r for r in summary["runs"]}
    finetune_dir = by_method["finetune"]["run_dir"]
    # finetune trains once; llm2llm and one_shot only their later iterations; e2 (another recipe) all of its own.
    assert len(CountingStudent.trained) == 1 + 2 + 3 + 1
    assert by_method["llm2llm"]["reused_from"] == by_method["one_shot"]["reused_from"] == finetune_dir
    assert by_method["e2"]["reused_from"] is None and by_method["finetune"]["reused_from"] is None
    # The shared iteration 0 has the baseline's test accuracy too (llm2llm alone would not test it here).
    assert by_method["llm2llm"]["test_by_iteration"][0] == by_method["finetune"]["test_accuracy"]
    assert by_method["llm2llm"]["seed_accuracy"][0] == by_method["finetune"]["seed_accuracy"][0]
    store = RunStore(by_method["llm2llm"]["run_dir"])
    assert store.info(0, "finetune")["reused_from"] == finetune_dir and "reused_from" not in store.info(0, "filter")
    assert f"Iteration 0 was taken from {finetune_dir}" in report.markdown(store)
    assert any("iteration 0 taken from" in line for line in lines)
    table = {row["method"]: row for row in summary["table"]}
    assert table["llm2llm"]["reused"] == 1 and table["finetune"]["reused"] == 0
    # The shared stages are counted once in the comparison's total.
    assert table["llm2llm"]["minutes"] <= table["llm2llm"]["minutes_per_run"]
    text = (config_file.parent / "runs" / "cmp" / "compare.md").read_text()
    assert "min/run" in text and "trained once and shared: llm2llm (1 of 1 runs)" in text
    # "run k of N" with an estimate of the time left.
    assert [line.split(":")[0] for line in lines if line.startswith("run ")] == [f"run {k} of 4" for k in range(1, 5)]
    assert any("min left for the other 3 run(s)" in line for line in lines)


def test_selections_out_of_fold_share_iteration_0s_folds(config_file):
    CountingStudent.trained = []
    # (keeping no weights: a run that may name iteration 0 its best student keeps those weights, so cannot borrow them)
    oof = "select.by=out_of_fold loop.iterations=2 select.estimate_every_iteration=false student.keep_checkpoints=none"
    methods = [Method.parse(m) for m in ("finetune", f"oof=llm2llm {oof}", f"spread=llm2llm {oof} select.spread=true",
                                         f"two=llm2llm {oof} select.folds=2")]
    summary = compare(config_file, [], methods, 1, CountingRunner())
    by_method = {r["method"]: r for r in summary["runs"]}
    # finetune 1; oof its 3 folds and iteration 1; spread iteration 1 only (folds from oof); two its 2 folds and iteration 1
    # (iteration 0's student comes from finetune for all three)
    assert len(CountingStudent.trained) == 1 + (3 + 1) + 1 + (2 + 1)
    oof_store, spread_store = RunStore(by_method["oof"]["run_dir"]), RunStore(by_method["spread"]["run_dir"])
    for j in range(3):
        assert spread_store.info(0, f"fold_{j}")["reused_from"] == by_method["oof"]["run_dir"]
        fold = f"iter_000/folds/fold_{j}.jsonl"
        assert read_jsonl(spread_store.root / fold) == read_jsonl(oof_store.root / fold)
    assert "reused_from" not in spread_store.info(0, "select")  # how it chooses from them is its own
    assert read_jsonl(spread_store.root / "iter_000" / "selection.jsonl") != read_jsonl(oof_store.root / "iter_000" / "selection.jsonl")
    two = RunStore(by_method["two"]["run_dir"])
    assert two.info(0, "finetune")["reused_from"] and "reused_from" not in two.info(0, "fold_0")  # other folds: its own


def test_a_finished_loop_gives_a_later_finetune_baseline_its_iteration_0(config_file):
    CountingStudent.trained = []
    tested = ["eval.test_every_iteration=true"]  # iteration 0's test accuracy is there to take
    compare(config_file, tested, [Method.parse("llm2llm")], 1, CountingRunner())
    assert len(CountingStudent.trained) == 3
    summary = compare(config_file, tested, [Method.parse("finetune")], 1, CountingRunner())
    assert len(CountingStudent.trained) == 3  # nothing trained for the baseline
    by_method = {r["method"]: r for r in summary["runs"]}
    assert by_method["finetune"]["test_accuracy"] == by_method["llm2llm"]["test_by_iteration"][0]
    assert by_method["finetune"]["reused_from"] == by_method["llm2llm"]["run_dir"]
    # Without iteration 0's test (and with its student gone), a baseline added later trains its own.
    compare(config_file, ["name=other"], [Method.parse("llm2llm")], 1, CountingRunner())
    compare(config_file, ["name=other"], [Method.parse("finetune")], 1, CountingRunner())
    assert len(CountingStudent.trained) == 3 + 3 + 1


def test_compare_with_some_methods_keeps_the_other_finished_rows(config_file):
    runner = Runner()
    compare(config_file, [], [Method.parse("finetune"), Method.parse("llm2llm")], 1, runner)
    later = Runner()
    summary = compare(config_file, [], [Method.parse("eda")], 1, later)
    assert [c.augment.method for c in later.configs] == ["eda"]  # only the new method ran
    assert [row["method"] for row in summary["table"]] == ["finetune", "llm2llm", "eda"]
    text = (config_file.parent / "runs" / "cmp" / "compare.md").read_text()
    assert "| finetune |" in text and "| llm2llm |" in text and "| eda |" in text


def test_students_are_deleted_after_a_repeat_unless_kept(config_file):
    root = config_file.parent / "runs" / "cmp"
    compare(config_file, [], [Method.parse("finetune"), Method.parse("llm2llm")], 1, Runner())
    assert not list(root.glob("*/*/iter_*/student"))
    compare(config_file, ["name=kept"], [Method.parse("finetune")], 1, Runner(), keep_students=True)
    assert list((config_file.parent / "runs" / "kept").glob("*/*/iter_*/student"))


def test_a_count_matched_run_short_of_examples_is_flagged():
    from llm2llm.compare import cells, markdown, plot, table_rows

    results = [{"method": "auggpt", "repeat": k, "seeds": 9, "augmented": got, "asked": 3, "test_accuracy": 0.9,
                "teacher_requests": 6, "minutes": 1.0} for k, got in enumerate((1, 3))]
    [row] = table_rows(results, ["auggpt"])
    assert row["short"] == 1 and row["asked"] == 3 and cells(row)[2] == "2 (short: asked 3)"
    summary = {"repeats": 2, "table": [row], "methods": [{"label": "auggpt", "overrides": []}]}
    assert "**Short of examples**: auggpt got 2 of 3 on average (1 of 2 runs short)" in markdown(summary, load_config(None))


def test_status_lists_the_runs_of_a_compare(config_file):
    from typer.testing import CliRunner

    from llm2llm.cli import app

    compare(config_file, [], [Method.parse("finetune")], 1, Runner())
    root = config_file.parent / "runs" / "cmp"
    result = CliRunner().invoke(app, ["status", str(root)])
    output = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "1 `llm2llm compare` run(s)" in output and "finetune/r0-" in output and "finished — completed 1 iterations" in output


def test_a_report_of_finished_runs_starts_none(config_file):
    compare(config_file, [], [Method.parse("finetune")], 1, Runner())
    summary = compare(config_file, [], [Method.parse("finetune"), Method.parse("eda")], 2, lambda config: None)
    by_run = {(r["method"], r["repeat"]): r for r in summary["runs"]}
    assert "test_accuracy" in by_run["finetune", 0] and by_run["finetune", 1]["skipped"] == "not run yet"
    assert by_run["eda", 0]["skipped"] == "no llm2llm run to match"
    assert {row["method"]: row["runs"] for row in summary["table"]} == {"llm2llm": 0, "finetune": 1, "eda": 0}


def test_method_specs_and_config_hash(config_file):
    variant = Method.parse("no_verify=llm2llm quality.verify=false")
    assert (variant.label, variant.base, variant.overrides) == ("no_verify", "llm2llm", ["quality.verify=false"])
    with pytest.raises(ConfigError, match="unknown method 'edda' in 'edda'; did you mean eda?"):
        Method.parse("edda")
    with pytest.raises(ConfigError, match="labels repeat"):
        compare(config_file, [], [Method.parse("eda"), Method.parse("eda")], 1, Runner())
    base = load_config(config_file)
    assert config_hash(base) == config_hash(load_config(config_file, ["name=other", "teacher.max_concurrency=4"]))
    assert config_hash(base) != config_hash(load_config(config_file, ["student.epochs=2"]))
    assert config_hash(base) != config_hash(load_config(config_file, ["loop.iterations=2"]))  # a finished run is not longer


def test_method_configs_are_checked_before_anything_runs(config_file):
    runner = Runner()
    with pytest.raises(ConfigError, match="(?s)method more_data: .*needs augment.pool_path"):
        compare(config_file, ["augment.pool_path=null"], [Method.parse("finetune"), Method.parse("more_data")], 1, runner)
    assert runner.configs == []


@pytest.mark.parametrize("overrides, message", [
    (["augment.method=eda"], "needs augment.count"),
    (["augment.method=eda", "augment.count=3"], "set loop.iterations=1"),
    (["augment.one_shot=true", "augment.count=3", "loop.iterations=3"], "loop.iterations=2"),
    (["student.continue_training=true", "student.keep_checkpoints=none"], "cannot be none"),
])
def test_augment_switches_are_validated(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_eda_is_refused_for_tasks_that_are_not_classification(config_file):
    config = load_config(config_file, ["augment.method=eda", "augment.count=2", "loop.iterations=1", "task.type=math"])
    with pytest.raises(ConfigError, match="for classification"):
        from llm2llm.augment.baselines import eda_examples

        eda_examples(config, [])


def test_ablation_switches_change_the_loop(config_file):
    # Continued training: each iteration starts from the previous iteration's weights, not the base.
    store = run(load_config(config_file, ["student.continue_training=true", "student.keep_checkpoints=all"]))
    metrics = [store.metrics(i) for i in range(3)]
    assert metrics[1]["base_fingerprint"] == metrics[0]["trained_fingerprint"] != metrics[0]["base_fingerprint"]
    assert metrics[2]["base_fingerprint"] == metrics[1]["trained_fingerprint"]

    # One-shot: every example is made from iteration 0's wrong seeds, then the student trains once more.
    store = run(load_config(config_file, ["name=one", "augment.one_shot=true", "augment.count=5", "loop.iterations=2"]))
    assert store.info(0, "generate")["accepted"] == 5 and not store.done(1, "generate")
    assert len(read_examples(store.root / "iter_001" / "train.jsonl")) == len(SEED_ROWS) + 5
    rounds = read_jsonl(store.root / "iter_000" / "rejected.jsonl")
    assert store.info(0, "generate")["requests"] == 5 + len(rounds)  # the shortfall was asked for again

    # Generated examples as parents (augment.source=all): they are evaluated, and wrong ones get children.
    store = run(load_config(config_file, ["name=all", "augment.source=all"]))
    assert (store.root / "iter_001" / "generated_predictions.jsonl").is_file()
    wrong = read_examples(store.root / "iter_001" / "wrong.jsonl")
    children = read_examples(store.root / "iter_001" / "generated.jsonl")
    generated_parents = {e.id for e in wrong if e.origin == "teacher"}
    assert generated_parents and generated_parents & {e.parent_id for e in children}


def test_a_pool_row_with_an_unknown_label_is_an_error_naming_its_line(config_file, tmp_path):
    from llm2llm.augment.baselines import baseline_examples
    from llm2llm.context import RunContext
    from llm2llm.errors import DataError
    from llm2llm.loop import load_data

    pool = write_jsonl(tmp_path / "bad_pool.jsonl", POOL_ROWS[:2] + [{"text": "Can I pay in bitcoin?", "label": "sales"}])
    config = load_config(config_file, ["augment.method=more_data", "augment.count=3", "loop.iterations=1", f"augment.pool_path={pool}"])
    seeds, test, task = load_data(config)
    with pytest.raises(DataError, match=r"bad_pool\.jsonl:3: unknown label 'sales'"):
        baseline_examples(RunContext(config, None, task, None, None, None, None, seeds, test, None), tmp_path)


def test_continuing_from_a_missing_student_says_what_to_do(tiny_model_dir, tmp_path):
    from llm2llm.config import StudentConfig
    from llm2llm.errors import ModelError
    from llm2llm.students.hf import HFStudent

    student = HFStudent(StudentConfig(model=tiny_model_dir, finetune="full", epochs=1, continue_training=True), seed=0)
    pairs = [([{"role": "user", "content": "hi"}], "billing")]
    with pytest.raises(ModelError, match=r"(?s)student.continue_training: cannot load the previous student in .*gone.*retrain"):
        student.train(pairs, tmp_path / "student", init_from=tmp_path / "gone")


def test_iteration_0_is_shared_across_selections_that_score_the_same_way(config_file):
    from llm2llm.reuse import first_iteration_key

    key = {by: first_iteration_key(load_config(config_file, [f"select.by={by}"]))
           for by in ("train_errors", "out_of_fold", "confidence", "out_of_fold+confidence")}
    assert key["train_errors"] == key["out_of_fold"] != key["confidence"] == key["out_of_fold+confidence"]
    assert first_iteration_key(load_config(config_file, ["student.epochs=2"])) != key["train_errors"]
