"""Math (GSM8K) task: final-answer extraction, grading, targets, teacher-reply parsing and the safe arithmetic check."""

import pytest

from llm2llm.config import TaskConfig
from llm2llm.data import Example
from llm2llm.errors import DataError
from llm2llm.tasks import Rejected
from llm2llm.tasks.math import WORKED_EXAMPLE, MathTask, arithmetic_error, normalize, safe_eval

QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
ANSWER = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"


def example(text=QUESTION, label=ANSWER, **kwargs):
    return Example(id=kwargs.pop("id", "seed-1"), text=text, label=label, origin="seed", **kwargs)


@pytest.fixture
def task():
    return MathTask(TaskConfig(type="math"), [example()])


@pytest.mark.parametrize(
    "output, expected",
    [
        ("She sold 72 clips.\n#### 72", "72"),
        ("#### -3", "-3"),
        ("#### − 3", "-3"),  # unicode minus and a space
        ("#### -0.5", "-0.5"),
        ("#### 1,000", "1000"),
        ("#### $1,000.50", "1000.5"),
        ("#### $ 20", "20"),
        ("#### -$5", "-5"),
        ("#### $-5", "-5"),
        ("#### 72.0", "72"),
        ("#### .5", "0.5"),
        ("#### 18 dollars.", "18"),
        ("#### 72.", "72"),
        ("#### **42**", "42"),
        ("####72", "72"),
        ("#### 5 apples and 3 pears", "5"),  # extra text after the number
        ("#### 10\nLet me double-check: yes.", "10"),
        ("#### 12\nWait, I made a mistake.\n#### 14", "14"),  # the last marker wins
        ("#### 0", "0"),
        ("#### -0", "0"),
        ("The answer is 72.", None),  # missing marker counts as wrong
        ("", None),
        ("#### ", None),
        ("#### seventy-two", None),  # garbage after the marker
        ("#### The answer is 72", None),
        ("#### 12\n#### unsure", None),  # the last marker holds no number
        ("#### 3/4", None),  # a fraction is not 3
        ("#### 1000,000", None),  # not a thousands grouping: ambiguous
    ],
)
def test_extract_answer(task, output, expected):
    assert task.extract_answer(output) == expected


@pytest.mark.parametrize(
    "label, output, correct",
    [
        (ANSWER, "#### 72", True),
        (ANSWER, "#### 72.0", True),
        (ANSWER, "step one\n#### 72 clips", True),
        (ANSWER, "#### 73", False),
        (ANSWER, "72", False),  # no marker: wrong even when the number is right
        (ANSWER, "#### 72\n#### 24", False),
        ("So it costs $1000.\n#### 1000", "#### $1,000", True),
        ("#### 1,000", "#### 1000", True),
        ("#### -4", "#### 4", False),
        ("#### 2.5", "#### 2.50", True),
        ("#### 0.1", "#### 0.1000001", True),  # within 1e-6
        ("#### 0.1", "#### 0.10001", False),
    ],
)
def test_is_correct(task, label, output, correct):
    assert task.is_correct(example(label=label), output) is correct


def test_target_strips_calculator_annotations_and_ends_with_the_answer(task):
    target = task.target(example())
    assert target == "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n#### 72"
    assert "<<" not in target and task.is_correct(example(), target)


def test_validate_rejects_a_label_without_a_final_number(task):
    task.validate([example()])
    with pytest.raises(DataError, match=r"gsm8k\.jsonl:7: .*####"):
        task.validate([example(label="Natalia sold 72 clips.", source="gsm8k.jsonl:7")])
    with pytest.raises(DataError, match="seed-9"):  # no source: the id names the row
        task.validate([example(label="#### many", id="seed-9")])


def test_student_prompt_asks_for_the_final_line_and_holds_only_the_question(task):
    system, user = task.student_messages(example())
    assert "step by step" in system["content"] and "#### <number>" in system["content"]
    assert user == {"role": "user", "content": QUESTION}


def test_teacher_prompt_has_rules_one_worked_example_and_the_wrong_problem(task):
    system, user = task.teacher_messages(example(), [example(), example("Other question?", id="seed-2")])
    assert "new names" in system["content"] and "#### <number>" in system["content"]
    assert WORKED_EXAMPLE in system["content"] and arithmetic_error(WORKED_EXAMPLE) is None
    assert QUESTION in user["content"] and task.target(example()) in user["content"]
    assert "<<" not in user["content"] and "Other question?" not in user["content"]
    assert "similar problem with new names and numbers" in user["content"]


GOOD_RATIONALE = "Each box holds 3 * 4 = 12 eggs.\nFive boxes hold 5 * 12 = 60 eggs.\n#### 60"


@pytest.mark.parametrize(
    "reply, expected_question, expected_answer",
    [
        (
            "Question: Omar packs eggs in boxes of 3 rows of 4. How many eggs fit in 5 boxes?\nAnswer: " + GOOD_RATIONALE,
            "Omar packs eggs in boxes of 3 rows of 4. How many eggs fit in 5 boxes?",
            GOOD_RATIONALE,
        ),
        (  # chatter, markdown bold, rationale on the lines after 'Answer:', closing chatter
            "Sure! Here is a new problem that tests the same skill:\n\n**Question:** Lena reads 15 pages a day. "
            "How many pages does she read in 2 weeks?\n**Answer:**\nTwo weeks have 2 * 7 = 14 days.\n"
            "She reads 15 * 14 = 210 pages.\n#### 210\n\nLet me know if you want another one!",
            "Lena reads 15 pages a day. How many pages does she read in 2 weeks?",
            "Two weeks have 2 * 7 = 14 days.\nShe reads 15 * 14 = 210 pages.\n#### 210",
        ),
        (  # correct calculator annotations, money, thousands separators, a final line with '$' and units
            "Question: A bike costs $1,200 and a helmet costs $45. What do 2 bikes and 1 helmet cost?\n"
            "Answer: Two bikes cost 2 * $1,200 = $<<2*1200=2400>>2,400.\nAdding the helmet: $2,400 + $45 = "
            "$<<2400+45=2445>>2,445.\n#### $2,445 dollars",
            "A bike costs $1,200 and a helmet costs $45. What do 2 bikes and 1 helmet cost?",
            "Two bikes cost 2 * $1,200 = $<<2*1200=2400>>2,400.\nAdding the helmet: $2,400 + $45 = "
            "$<<2400+45=2445>>2,445.\n#### 2445",
        ),
        (  # rounding to the written precision, '×' and 'x', a claim followed by more arithmetic
            "Question: Three friends split a $10 bill and a $5 tip. How much does each pay?\n"
            "Answer: The total is 10 + 5 = 15 + 0 = 15 dollars.\nEach pays 15 / 3 = 5 dollars, and 10 / 3 = 3.33 "
            "for the bill alone. Check: 5 × 3 = 15 and 5 x 3 = 15.\n#### 5",
            "Three friends split a $10 bill and a $5 tip. How much does each pay?",
            "The total is 10 + 5 = 15 + 0 = 15 dollars.\nEach pays 15 / 3 = 5 dollars, and 10 / 3 = 3.33 "
            "for the bill alone. Check: 5 × 3 = 15 and 5 x 3 = 15.\n#### 5",
        ),
        (  # quotes around the whole question go; a quote that ends it alone stays (the old parser cut it off)
            'Question: "A sign reads \'2 for $3\'. What do 6 cost?"\nAnswer: 6 / 2 * 3 = 9\n#### 9',
            "A sign reads '2 for $3'. What do 6 cost?",
            "6 / 2 * 3 = 9\n#### 9",
        ),
        (
            'Question: **Ana has 3 boxes of 4 pens. She labels the total "pens"**\nAnswer: 3 * 4 = 12\n#### 12',
            'Ana has 3 boxes of 4 pens. She labels the total "pens"',
            "3 * 4 = 12\n#### 12",
        ),
        (  # a second problem after the first is dropped
            "Question: Sam has 4 bags of 6 marbles. How many marbles?\nAnswer: 4 * 6 = 24\n#### 24\n\n"
            "Question: Another one?\nAnswer: 1 + 1 = 2\n#### 2",
            "Sam has 4 bags of 6 marbles. How many marbles?",
            "4 * 6 = 24\n#### 24",
        ),
    ],
)
def test_parse_good_teacher_replies(task, reply, expected_question, expected_answer):
    assert task.parse_teacher_reply(reply, example()) == {"text": expected_question, "label": expected_answer}


@pytest.mark.parametrize(
    "reply, reason, detail",
    [
        ("Here is a problem: Tom has 3 apples and eats 1. 3 - 1 = 2.\n#### 2", "unparsable", ""),
        ("Question: Tom has 3 apples and eats 1. How many are left?", "unparsable", ""),
        ("Question: \nAnswer: 3 - 1 = 2\n#### 2", "unparsable", "empty question"),
        ("Question: Tom has 3 apples and eats 1. How many are left?\nAnswer: #### 2", "unparsable", "no rationale"),
        ("Question: Tom has 3 apples and eats 1. How many are left?\nAnswer: 3 - 1 = 2, so 2 apples.", "no_final_number", ""),
        ("Question: Tom has 3 apples and eats 1. How many?\nAnswer: 3 - 1 = 2\n#### two", "no_final_number", ""),
        ("Question: " + QUESTION.upper() + "\nAnswer: 48 / 2 = 24\n24 + 48 = 72\n#### 72", "copy_of_seed", ""),
        (
            "Question: Ana buys 7 pens at $3 each. What does she pay?\nAnswer: She pays 7*3 = <<7*3=24>>24 dollars.\n#### 24",
            "arithmetic_error",
            "7*3 = 24, not 21",
        ),
        (
            "Question: Ana buys 7 pens at $3 each and a $5 pad. What does she pay?\nAnswer: Pens: 7 * 3 = 21.\n"
            "Total: 21 + 5 = 27.\n#### 27",
            "arithmetic_error",
            "21 + 5 = 27, not 26",
        ),
        (
            "Question: A $20 pizza is shared by 4 kids. What does each pay?\nAnswer: $20 / 4 = $6\n#### 6",
            "arithmetic_error",
            "$20 / 4 = $6, not 5",
        ),
        (  # a wrong step on a bulleted line, after a correct one on the line above
            "Question: Jo has 4 bags of 6 nuts. How many nuts?\nAnswer:\n- 4 * 6 = 24\n- 24 + 1 = 26\n#### 26",
            "arithmetic_error",
            "24 + 1 = 26, not 25",
        ),
        (
            "Question: Milk costs $2.25 and bread $3.50. What do both cost?\nAnswer: 2.25 + 3.5 = 5.5\n#### 5.5",
            "arithmetic_error",
            "2.25 + 3.5 = 5.5, not 5.75",
        ),
    ],
)
def test_reject_bad_teacher_replies(task, reply, reason, detail):
    with pytest.raises(Rejected) as caught:
        task.parse_teacher_reply(reply, example())
    assert caught.value.reason == reason
    assert detail in caught.value.detail


@pytest.mark.parametrize(
    "rationale",
    [
        "Ella's score is 40 items - 4 items = 36 items.",  # units between numbers: not checkable, not flagged
        "Half of 10 + 4 = 9 apples.",  # the expression starts in words
        "She keeps 3/4 of 40 = 30 stamps.",
        "The share is 1/4 = 25%.",
        "It rose 50% * 40 + 10 = 30 points.",
        "So 4 + 4 = 2 * 4 = 8.",  # the claim continues as arithmetic
        "Let x = 5, then y = x + 2 = 7.",
        "Step 2: 12 + 5.5 = 17.5 and 3 * 4 = 12 and 2^3 = 8 and (2 + 3) * 4 = 20 and -3 + 5 = 2.",
        "- 3 * 4 = 12\n* 12 + 1 = 13\n1. 13 - 3 = 10",  # list bullets are not minus signs
        "He has 12 apples. 12 + 3 = 15 in all.\n4 * 6 = 24\n24 + 1 = 25",
        "Annotations with a name <<a+1=5>>, a call <<__import__('os')=0>> and a fraction 20 / 3 = 6.67.",
    ],
)
def test_arithmetic_check_skips_what_it_cannot_read_and_passes_correct_steps(rationale):
    assert arithmetic_error(rationale) is None


@pytest.mark.parametrize(
    "expression, value",
    [
        ("3 * 4", 12.0),
        ("12 + 5.5", 17.5),
        ("$20 / 4", 5.0),
        ("1,000 - 1", 999.0),
        ("-(2 + 3) * 2", -10.0),
        ("2 ** 3", 8.0),
        ("2^3", 8.0),
        ("7 // 2 + 7 % 2", 4.0),
        ("3 x 4", 12.0),
        ("__import__('os')", None),
        ("__import__('os').system('echo hacked')", None),
        ("a+1", None),
        ("(1).__class__", None),
        ("abs(-3)", None),
        ("[1, 2]", None),
        ("'12'", None),
        ("True + 1", None),
        ("9 ** 9 ** 9", None),  # would hang: exponents are capped
        ("1 / 0", None),
        ("(-8) ** 0.5", None),  # complex
        ("1e308 * 10", None),
        ("(" * 300 + "1" + ")" * 300, None),
        ("", None),
    ],
)
def test_safe_eval_computes_arithmetic_and_refuses_everything_else(expression, value):
    assert safe_eval(expression) == value


def test_safe_eval_never_executes(monkeypatch):
    import builtins

    calls = []
    monkeypatch.setattr(builtins, "__import__", lambda *args, **kwargs: calls.append(args))
    assert safe_eval("__import__('os').system('exit 1')") is None
    assert calls == []


@pytest.mark.parametrize(
    "first, second, same",
    [
        ("How many apples does Tom have?", "how many  apples does tom have", True),
        ("It costs $1,000.", "It costs 1000", True),
        ("It costs 3.5 dollars.", "It costs 35 dollars.", False),
        ("Tom has 3 apples.", "Tom has 4 apples.", False),
    ],
)
def test_copies_compare_normalized_text(first, second, same):
    assert (normalize(first) == normalize(second)) is same


@pytest.mark.parametrize(
    "reply",
    ["#### " + " " * 20000 + "x", " " * 20000 + "= 5", "1" * 20000 + " = 1", "1 + " * 5000 + "1 = 2", "(" * 20000, "1," * 10000],
)
def test_long_adversarial_replies_are_handled_in_linear_time(task, reply):
    import time

    start = time.perf_counter()
    task.extract_answer(reply)
    arithmetic_error(reply)
    with pytest.raises(Rejected):
        task.parse_teacher_reply(reply, example())
    assert time.perf_counter() - start < 2  # a backtracking regex would take tens of seconds here
