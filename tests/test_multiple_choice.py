"""Multiple choice (CaseHOLD): letter extraction, prompt rendering, teacher-reply parsing and validation."""

import json

import pytest

from llm2llm.config import TaskConfig
from llm2llm.data import Example, load_examples
from llm2llm.errors import DataError
from llm2llm.tasks import Rejected, build_task

CHOICES = ["holding that the statute applies", "holding that the contract was void", "holding that no duty existed",
           "holding that the claim was time-barred", "holding that the evidence was admissible"]


def example(text="The court considered the limitation period. <HOLDING>", label="3", choices=CHOICES, **kwargs):
    return Example(id=kwargs.pop("id", "seed-1"), text=text, label=label, choices=choices, origin="seed", **kwargs)


@pytest.fixture
def task():
    return build_task(TaskConfig(type="multiple_choice", description="Pick the holding the citation supports."), [example()])


@pytest.mark.parametrize(
    "output, expected",
    [
        ("B", "1"), ("(B)", "1"), ("B.", "1"), ("B) holding that", "1"), ("b", "1"), ("(b)", "1"),
        ("The answer is B", "1"), ("The answer is (C).", "2"), ("Answer: D", "3"), ("answer: e", "4"),
        ("I think (D) is right", "3"), ("E", "4"),
        ("F", None), ("", None), ("The answer is a holding that no duty existed", None), ("(A) or (B)", "0"),
        ("none of them", None),
    ],
)
def test_extract_answer(task, output, expected):
    assert task.extract_answer(output) == expected


def test_prompt_letters_and_target(task):
    user = task.student_messages(example())[-1]["content"]
    assert "(A) holding that the statute applies" in user and "(E) holding that the evidence" in user
    assert task.target(example()) == "D" and task.is_correct(example(), "(D)") and not task.is_correct(example(), "A")


def test_validate_names_the_line():
    seeds = [example(source="s.jsonl:1"), example(label="7", id="2", source="s.jsonl:2")]
    with pytest.raises(DataError, match=r"s\.jsonl:2: label '7' is not a choice index 0\.\.4"):
        build_task(TaskConfig(type="multiple_choice"), seeds)
    with pytest.raises(DataError, match=r"s\.jsonl:3: 2 choices, but the first seed has 5"):
        build_task(TaskConfig(type="multiple_choice"), [example(), example(choices=["a", "b"], id="3", source="s.jsonl:3")])


def test_choices_column_loads_and_is_checked(tmp_path):
    path = tmp_path / "mc.jsonl"
    path.write_text(json.dumps({"prompt": "ctx", "choices": CHOICES, "label": 2}) + "\n" + json.dumps({"prompt": "c2", "choices": "x", "label": 0}) + "\n")
    with pytest.raises(DataError, match=r"mc\.jsonl:2: field 'choices' must be a list"):
        load_examples(str(path), text_field="prompt", label_field="label", choices_field="choices", origin="seed")
    path.write_text(json.dumps({"prompt": "ctx", "choices": CHOICES, "label": 2}) + "\n")
    [loaded] = load_examples(str(path), text_field="prompt", label_field="label", choices_field="choices", origin="seed")
    assert loaded.label == "2" and loaded.choices == CHOICES


GOOD = """Sure, here is a new example.
Context: The appellant argued the filing was late, citing Smith v. Jones. <HOLDING>
(A) holding that the notice requirement was waived
(B) holding that the filing deadline is jurisdictional
(C) holding that damages were speculative
(D) holding that the arbitration clause was unconscionable
(E) holding that the search was reasonable
Answer: B"""


def test_parse_good_reply(task):
    fields = task.parse_teacher_reply(GOOD, example())
    assert fields["text"] == "The appellant argued the filing was late, citing Smith v. Jones. <HOLDING>"
    assert fields["label"] == "1" and len(fields["choices"]) == 5
    assert fields["choices"][1] == "holding that the filing deadline is jurisdictional"
    bold = GOOD.replace("Context:", "**Context:**").replace("Answer: B", "**Answer:** (B)")
    assert task.parse_teacher_reply(bold, example()) == fields


@pytest.mark.parametrize(
    "reply, reason",
    [
        ("A new example about deadlines.", "unparsable"),
        (GOOD.replace("(E) holding that the search was reasonable\n", ""), "wrong_choice_count"),
        (GOOD.replace("damages were speculative", "the notice requirement was waived"), "duplicate_choices"),
        (GOOD.replace("Answer: B", "Answer: G"), "invalid_answer"),
        (GOOD.replace("Answer: B", ""), "invalid_answer"),
        (GOOD.replace("The appellant argued the filing was late, citing Smith v. Jones. <HOLDING>", "The court considered the limitation period. <HOLDING>"), "copy_of_seed"),
        (GOOD.replace("holding that the filing deadline is jurisdictional", "holding that the claim was time-barred"), "copied_correct_choice"),
        (GOOD.replace("(C) holding that damages were speculative", "(C)"), "empty_choice"),
    ],
)
def test_reject_bad_replies(task, reply, reason):
    with pytest.raises(Rejected) as caught:
        task.parse_teacher_reply(reply, example())
    assert caught.value.reason == reason
