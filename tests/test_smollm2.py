"""A real fine-tune of the bundled SmolLM2-135M-Instruct: it must measurably change the model's predictions."""

import pytest

from llm2llm.config import StudentConfig, TaskConfig
from llm2llm.data import load_examples
from llm2llm.students.hf import HFStudent
from llm2llm.tasks import build_task

pytestmark = pytest.mark.slow


def test_lora_finetune_of_smollm2_learns_the_labels(tmp_path, smollm2_dir):
    seeds = load_examples("demo:seeds.jsonl", text_field="text", label_field="label", origin="seed")
    task = build_task(TaskConfig(), seeds)
    student = HFStudent(StudentConfig(finetune="lora", epochs=3, learning_rate=1e-3), seed=0)
    prompts = [task.student_messages(example) for example in seeds]

    # The base model, untouched, "trained" for zero steps: how it answers before fine-tuning.
    base = HFStudent(StudentConfig(finetune="lora", epochs=1, learning_rate=1e-12), seed=0)
    base.train([], tmp_path / "base")
    before = base.predict(tmp_path / "base", prompts, task.max_new_tokens)

    stats = student.train([(p, task.target(e)) for p, e in zip(prompts, seeds)], tmp_path / "student")
    after = student.predict(tmp_path / "student", prompts, task.max_new_tokens)
    accuracy_before = sum(task.is_correct(e, o) for e, o in zip(seeds, before)) / len(seeds)
    accuracy_after = sum(task.is_correct(e, o) for e, o in zip(seeds, after)) / len(seeds)

    assert stats["train_steps"] == 12 and stats["final_loss"] < 1.0
    assert (tmp_path / "student" / "adapter_config.json").is_file()
    assert sum(a != b for a, b in zip(before, after)) >= len(seeds) // 2
    assert accuracy_after >= accuracy_before + 0.3, (accuracy_before, accuracy_after)

    # Reloaded from disk (a resumed run), the adapter gives the same greedy answers.
    assert HFStudent(student.config, seed=0).predict(tmp_path / "student", prompts, task.max_new_tokens) == after
