"""The loop with a tiny random 2-layer student and a scripted teacher: lineage, growth, seed-only evaluation,
from-scratch training, and resume after a crash inside every stage without repeating a teacher request."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import llm2llm.loop
from llm2llm.config import load_config
from llm2llm.data import read_examples, read_jsonl
from llm2llm.loop import run
from llm2llm.runstore import RunStore
from llm2llm.students.hf import HFStudent

from scripted import ScriptedStudent, ScriptedTeacher

ITERATIONS = 3


class Boom(Exception):
    """An injected crash."""


def _overrides(seeds, test, model_dir):
    """The paper's loop (select.by=train_errors), whose parents the scripted student decides; the default out-of-fold
    selection is tested in test_select.py."""
    return [
        "select.by=train_errors",
        f"data.seed_path={seeds}", f"data.test_path={test}", f"student.model={model_dir}", "student.finetune=full",
        "student.epochs=1", "student.batch_size=4", "student.learning_rate=1e-3", "student.keep_checkpoints=all",
        "teacher.type=scripted:ScriptedTeacher", "teacher.samples_per_wrong=2", f"loop.iterations={ITERATIONS}",
        "eval.test_every_iteration=true",
    ]


@pytest.fixture
def config(tmp_path, data_files, tiny_model_dir):
    return load_config(None, [*_overrides(*data_files, tiny_model_dir), f"output_dir={tmp_path / 'runs'}", "name=t"])


@pytest.fixture(autouse=True)
def reset_teacher_calls():
    ScriptedTeacher.calls = []


def final_data(store):
    """D_{n-1} as data: everything but `source`, which names the (temporary) seed file."""
    return [e.model_dump(exclude={"source"}) for e in read_examples(store.root / f"iter_{ITERATIONS - 1:03d}" / "train.jsonl")]


def test_loop_lineage_growth_and_seed_only_evaluation(config):
    store = run(config)
    seeds = read_examples(store.root / "iter_000" / "train.jsonl")
    seed_ids = [seed.id for seed in seeds]
    assert store.state()["finished"]
    total_generated = 0
    for i in range(ITERATIONS):
        it = store.root / f"iter_{i:03d}"
        predictions = read_jsonl(it / "seed_predictions.jsonl")
        assert [row["id"] for row in predictions] == seed_ids  # only the seed set D_0 is evaluated
        assert len(read_jsonl(it / "test_predictions.jsonl")) == 4
        if i == ITERATIONS - 1:
            assert not (it / "generated.jsonl").exists()  # the last iteration trains nobody: no teacher cost
            break
        wrong = read_examples(it / "wrong.jsonl")
        assert [w.id for w in wrong] == [row["id"] for row in predictions if not row["correct"]]
        generated = read_examples(it / "generated.jsonl")
        rejected = read_jsonl(it / "rejected.jsonl")
        metrics = store.metrics(i)
        assert metrics["requests"] == 2 * len(wrong) == len(generated) + len(rejected)
        # the verifier saw exactly the replies that passed parsing and de-duplication
        assert metrics["verify_requests"] == len(generated) + sum(r["reason"] == "label_mismatch" for r in rejected)
        assert metrics["rejected_by_reason"] == {r: sum(x["reason"] == r for x in rejected) for r in {x["reason"] for x in rejected}}
        for example in generated:
            assert example.origin == "teacher" and example.iteration == i
            assert example.parent_id in seed_ids  # generated from seed examples only, never from generated ones
            assert example.teacher == "scripted-teacher" and example.prompt_hash
        # D_{i+1} = D_i + accepted, in that order
        train_now = read_examples(it / "train.jsonl")
        train_next = read_examples(store.root / f"iter_{i + 1:03d}" / "train.jsonl")
        assert [e.id for e in train_next] == [e.id for e in train_now] + [e.id for e in generated]
        total_generated += len(generated)
    assert total_generated > 0
    assert {r["reason"] for i in range(ITERATIONS - 1) for r in read_jsonl(store.root / f"iter_{i:03d}" / "rejected.jsonl")} >= {"copy_of_seed", "label_mismatch"}
    # every accepted example's prompt hash is a cached request
    with sqlite3.connect(store.cache_path) as db:
        cached = {row[0] for row in db.execute("SELECT key FROM replies")}
    assert all(e["prompt_hash"] in cached for e in final_data(store) if e["origin"] == "teacher")
    assert len(cached) == len(ScriptedTeacher.calls)


def test_each_iteration_trains_from_the_base_weights(config):
    store = run(config)
    metrics = [store.metrics(i) for i in range(ITERATIONS)]
    assert len({m["base_fingerprint"] for m in metrics}) == 1  # every iteration starts from the same weights
    assert all(m["trained_fingerprint"] != m["base_fingerprint"] for m in metrics)
    assert [m["train_examples"] for m in metrics] == sorted(m["train_examples"] for m in metrics)
    assert metrics[-1]["train_examples"] > metrics[0]["train_examples"]


def _inject(stage: str, monkeypatch, teacher: ScriptedTeacher, reference_calls_iter0: int):
    """Make the given stage of iteration 1 raise half-way."""
    counters = {"train": 0, "predict": 0}
    original_train, original_score = HFStudent.train, HFStudent.score

    def train(self, *args, **kwargs):
        counters["train"] += 1
        if stage == "finetune" and counters["train"] == 2:
            raise Boom
        return original_train(self, *args, **kwargs)

    def score(self, *args, **kwargs):  # classification: predictions score the labels
        counters["predict"] += 1  # per iteration: seeds, then test
        if (stage, counters["predict"]) in (("evaluate", 3), ("test", 4)):
            raise Boom
        return original_score(self, *args, **kwargs)

    original_write = llm2llm.loop.write_jsonl

    def write_jsonl(path, rows):
        if (stage, path.parent.name, path.name) in (("select", "iter_001", "wrong.jsonl"), ("append", "iter_002", "train.jsonl")):
            raise Boom
        return original_write(path, rows)

    monkeypatch.setattr(HFStudent, "train", train)
    monkeypatch.setattr(HFStudent, "score", score)
    monkeypatch.setattr(llm2llm.loop, "write_jsonl", write_jsonl)
    if stage == "generate":
        teacher.fail_after = reference_calls_iter0 + 1  # some replies of iteration 1 are already cached


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    """One uninterrupted run to compare resumed runs with."""
    from conftest import SEED_ROWS, TEST_ROWS, write_jsonl

    root = tmp_path_factory.mktemp("reference")
    ScriptedTeacher.calls = []
    seeds, test = write_jsonl(root / "seeds.jsonl", SEED_ROWS), write_jsonl(root / "test.jsonl", TEST_ROWS)
    config = load_config(None, [*_overrides(seeds, test, tiny_model_dir), f"output_dir={root / 'runs'}", "name=reference"])
    store = run(config)
    return store, list(ScriptedTeacher.calls)


@pytest.mark.parametrize("stage", ["finetune", "evaluate", "test", "select", "generate", "append"])
def test_resume_after_a_crash_in_each_stage(stage, config, reference, monkeypatch):
    reference_store, reference_calls = reference
    teacher = ScriptedTeacher()
    with monkeypatch.context() as patch:
        _inject(stage, patch, teacher, reference_store.metrics(0)["requests"])
        with pytest.raises((Boom, RuntimeError)):
            run(config, teacher=teacher)
    crashed = RunStore(config.run_dir)
    assert not crashed.state()["finished"]
    finished_before = crashed.state()["iterations"]

    store = run(config)  # the same command again
    assert store.state()["finished"]
    assert final_data(store) == final_data(reference_store)
    # Across the crashed and the resumed attempt, exactly the reference's requests reached the teacher:
    # none was sent twice (replies that arrived before the crash came from the cache), none is missing.
    assert sorted(ScriptedTeacher.calls) == sorted(reference_calls)
    for iteration, stages in finished_before.items():  # stages finished before the crash were not redone
        for name, info in stages.items():
            assert store.info(int(iteration), name) == info


def test_a_changed_seed_file_is_refused_on_resume(config):
    from conftest import SEED_ROWS, write_jsonl
    from llm2llm.errors import RunStateError

    run(config.model_copy(update={"loop": config.loop.model_copy(update={"iterations": 1})}))
    write_jsonl(Path(config.data.seed_path), SEED_ROWS[:-1])
    with pytest.raises(RunStateError, match="seed file .* changed"):
        run(config)


def test_the_loop_stops_when_no_seed_is_wrong(config):
    store = run(config, student=ScriptedStudent(wrong=set()))
    state = store.state()
    assert state["finished"] and "no seed example is wrong" in state["stop_reason"]
    assert list(state["iterations"]) == ["0"] and store.done(0, "test")  # the stopping iteration is still tested
    assert ScriptedTeacher.calls == []


def test_the_loop_stops_when_seed_accuracy_stalls_for_patience_iterations(config):
    from conftest import SEED_ROWS

    stalled = config.model_copy(update={"loop": config.loop.model_copy(update={"iterations": 5, "patience": 2})})
    store = run(stalled, student=ScriptedStudent(wrong={SEED_ROWS[0]["text"], SEED_ROWS[4]["text"]}))
    state = store.state()
    assert list(state["iterations"]) == ["0", "1", "2"]  # 0 sets the best; 1 and 2 do not beat it
    assert "has not improved on 77.8% for 2 iterations" in state["stop_reason"]
    assert store.done(2, "test") and not store.done(2, "generate")
    assert "loop.patience" in state["stop_reason"]


def test_a_spent_budget_stops_at_a_stage_boundary_and_raising_it_continues(config):
    from llm2llm.errors import BudgetReached

    capped = config.model_copy(update={"budget": config.budget.model_copy(update={"max_teacher_tokens": 1})})
    with pytest.raises(BudgetReached, match="raise budget.max_teacher_tokens"):
        run(capped)
    store = RunStore(config.run_dir)
    state = store.state()
    assert not state["finished"] and state["stop_reason"].startswith("teacher budget reached")
    assert store.done(0, "generate") and not store.done(1, "generate")  # iteration 0 spent it; nothing after started
    calls_before = len(ScriptedTeacher.calls)

    store = run(config)  # the cap lifted: the same command continues
    assert store.state()["finished"]
    assert sum(store.metrics(i).get("requests", 0) for i in range(ITERATIONS)) > store.metrics(0)["requests"]
    assert len(ScriptedTeacher.calls) > calls_before


def test_prices_turn_tokens_into_cost(config):
    priced = config.model_copy(update={"teacher": config.teacher.model_copy(update={"price_input_per_1m": 2.0, "price_output_per_1m": 8.0})})
    store = run(priced.model_copy(update={"loop": config.loop.model_copy(update={"iterations": 2})}))
    m = store.metrics(0)
    assert m["teacher_cost"] == pytest.approx((2.0 * m["teacher_prompt_tokens"] + 8.0 * m["teacher_completion_tokens"]) / 1e6)
    assert m["teacher_cost"] > 0
