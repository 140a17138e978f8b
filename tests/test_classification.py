"""Classification task: answer extraction, teacher-reply parsing, and one prompt for training and evaluation."""

import pytest

from llm2llm.config import TaskConfig
from llm2llm.data import Example
from llm2llm.errors import DataError
from llm2llm.tasks import Rejected, build_task

LABELS = ["billing", "get_weather", "technical"]


def example(text="My card was charged twice", label="billing", **kwargs):
    return Example(id=kwargs.pop("id", "seed-1"), text=text, label=label, origin="seed", **kwargs)


@pytest.fixture
def task():
    return build_task(TaskConfig(labels=LABELS), [example()])


@pytest.mark.parametrize(
    "output, expected",
    [
        ("billing", "billing"),
        ("Billing.", "billing"),
        ("  BILLING  ", "billing"),
        ("get weather", "get_weather"),
        ("Get-Weather", "get_weather"),
        ("GetWeather", None),  # not the same words
        ("Label: technical", "technical"),
        ("technical\nbecause the app crashes", "technical"),
        ("billing or technical", None),  # two labels: no answer
        ("shipping", None),
        ("", None),
        ("I am not sure", None),
    ],
)
def test_extract_answer(task, output, expected):
    assert task.extract_answer(output) == expected


def test_labels_inferred_from_seeds_and_unknown_label_names_the_line():
    seeds = [example(label="b", id="1", source="s.jsonl:1"), example(label="a", id="2", source="s.jsonl:2")]
    assert build_task(TaskConfig(), seeds).labels == ["a", "b"]
    with pytest.raises(DataError, match=r"s\.jsonl:7: unknown label 'c'"):
        build_task(TaskConfig(labels=["a", "b"]), seeds + [example(label="c", id="3", source="s.jsonl:7")])


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Text: I was billed for a plan I cancelled\nLabel: billing", ("I was billed for a plan I cancelled", "billing")),
        ('**Text:** "Why is there a $5 fee on my invoice?"\n**Label:** Billing', ("Why is there a $5 fee on my invoice?", "billing")),
        ("Sure! Here it is:\nText: Refund my duplicate payment please\nLabel: billing\n", ("Refund my duplicate payment please", "billing")),
        ("Text: Two lines of\ncomplaint about charges\nLabel: billing", ("Two lines of\ncomplaint about charges", "billing")),
        ("Text: A charge I do not recognise", ("A charge I do not recognise", "billing")),  # label line omitted
        ("Text: Why was the (annual) fee charged twice?\nLabel: billing", ("Why was the (annual) fee charged twice?", "billing")),
        ("Text: I was billed at 5 p.m. (EST)\nLabel: billing", ("I was billed at 5 p.m. (EST)", "billing")),
        ("Text: Is the (technical) fee billed twice?\nLabel: billing", ("Is the (technical) fee billed twice?", "billing")),
        ("Text: 'I was billed twice. '\nLabel: billing", ("I was billed twice.", "billing")),  # quoted whole
        ("Text: 'd be billed twice if i said 'yes'\nLabel: billing", ("'d be billed twice if i said 'yes'", "billing")),
        ("Text: 'd be lying if i said my bill was fine\nLabel: billing", ("'d be lying if i said my bill was fine", "billing")),
        ('Text: “Why was I billed twice?”\nLabel: billing', ("Why was I billed twice?", "billing")),  # curly quotes
        # a quote at one end alone is part of the text (the old parser cut it off): it quotes something
        ('Text: The bill says "paid twice"\nLabel: billing', ('The bill says "paid twice"', "billing")),
        ('Text: "Paid twice" is what my bill says\nLabel: billing', ('"Paid twice" is what my bill says', "billing")),
        ('Text: "Paid" or "due"\nLabel: billing', ('"Paid" or "due"', "billing")),  # two quotations
        ('Text: "why was \"Plan B\" billed twice"\nLabel: billing', ('why was "Plan B" billed twice', "billing")),  # a title inside
        ("Text: 'paid' or 'due'\nLabel: billing", ("'paid' or 'due'", "billing")),
        ("Text: 'it 's billed twice and i didn't agree'\nLabel: billing", ("it 's billed twice and i didn't agree", "billing")),
        ("Text: I was billed twice. Label: billing", ("I was billed twice.", "billing")),  # the label run on
        ("Text: Why is my record label: Acme billed?\nLabel: billing", ("Why is my record label: Acme billed?", "billing")),
    ],
)
def test_parse_good_teacher_replies(task, reply, expected):
    assert task.parse_teacher_reply(reply, example()) == {"text": expected[0], "label": expected[1]}


@pytest.mark.parametrize(
    "reply, reason",
    [
        ("Here is a new example about billing.", "unparsable"),
        ("Text:   \nLabel: billing", "empty_text"),
        ("Text: My app keeps crashing\nLabel: technical", "label_changed"),
        ("Text: Where is my parcel\nLabel: shipping", "unknown_label"),
        ("Text: my card was charged TWICE!\nLabel: billing", "copy_of_seed"),
        ("Text: Was I billed twice? (This is the same as the misclassified example)\nLabel: billing", "teacher_note"),
        ("Text: Was I billed twice? (billing)\nLabel: billing", "label_in_text"),
        ("Text: Was I billed twice ? [Label: Billing]\nLabel: billing", "label_in_text"),
        ("Text: My app keeps crashing. Label: technical", "label_changed"),  # a run-on label is checked too
    ],
)
def test_reject_bad_teacher_replies(task, reply, reason):
    with pytest.raises(Rejected) as caught:
        task.parse_teacher_reply(reply, example())
    assert caught.value.reason == reason


def test_teacher_prompt_shows_the_wrong_example_and_same_label_context(task):
    wrong = example()
    context = [wrong, example("Invoice total is wrong", id="2"), example("App crashes", "technical", id="3")]
    messages = task.teacher_messages(wrong, context)
    user = messages[-1]["content"]
    assert "Text: My card was charged twice" in user and "Label: billing" in user
    assert "Invoice total is wrong" in user and "App crashes" not in user
    assert all(label in messages[0]["content"] for label in LABELS)
    # What requests share comes first, the seed last, so a server's prompt cache reuses the shared part.
    assert user.index("Invoice total is wrong") < user.index("Text: My card was charged twice")
    assert messages[0]["content"] == task.teacher_messages(context[1], context)[0]["content"]
    # Two seeds of one label outside the shown examples: everything up to the seed is the same text.
    first, second = (task.teacher_messages(example(text, id=i), context)[-1]["content"] for text, i in (("Refund please", "4"), ("Bill me less", "5")))
    shared = first.index("Misclassified example:")
    assert first[:shared] == second[:shared] and "Invoice total is wrong" in first[:shared]


@pytest.mark.slow
def test_training_and_evaluation_render_the_same_prompt(task, smollm2_dir):
    from transformers import AutoTokenizer

    from llm2llm.students.hf import IGNORE_INDEX, encode_pair, encode_prompt

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    messages = task.student_messages(example())
    input_ids, labels = encode_pair(tokenizer, messages, task.target(example()), max_length=512)
    prompt_ids = encode_prompt(tokenizer, messages)
    n_prompt = sum(1 for label in labels if label == IGNORE_INDEX)
    assert input_ids[:n_prompt] == prompt_ids  # the evaluation prompt is exactly the training prefix
    assert tokenizer.decode(input_ids[n_prompt:], skip_special_tokens=True) == "billing"
    assert input_ids[-1] == tokenizer.eos_token_id


def test_teacher_prompt_names_the_students_confusion_when_given(task):
    wrong = example()
    context = [wrong, example("Invoice total is wrong", id="2")]
    plain = task.teacher_messages(wrong, context)[-1]["content"]
    told = task.teacher_messages(wrong, context, student_answer="technical")[-1]["content"]
    assert "technical" not in plain and "The student answered technical" in told
    assert "also billing, not technical" in told
    assert told.startswith(plain.partition("Misclassified example:")[0])  # the shared part still comes first
    assert task.teacher_messages(wrong, context, student_answer="billing")[-1]["content"] == plain  # right: nothing to name


def test_teacher_prompt_shows_the_confused_labels_seeds_only_when_asked():
    seeds = [example(), example("Invoice total is wrong", id="2"), example("App crashes", "technical", id="3"),
             example("Login fails", "technical", id="4"), example("Rain tomorrow?", "get_weather", id="5")]
    plain = build_task(TaskConfig(labels=LABELS), seeds)
    contrast = build_task(TaskConfig(labels=LABELS, teacher_contrast_examples=1), seeds)
    told = contrast.teacher_messages(seeds[0], seeds, student_answer="technical")[-1]["content"]
    assert "Examples labelled technical, for contrast:\n- App crashes\n" in told
    assert "Login fails" not in told and "Rain tomorrow?" not in told  # one, of the label the student answered
    assert told.index("Invoice total is wrong") < told.index("App crashes") < told.index("Misclassified example:")
    # Off (the default), right, or no answer shown: the prompt is the plain one.
    assert "App crashes" not in plain.teacher_messages(seeds[0], seeds, student_answer="technical")[-1]["content"]
    assert contrast.teacher_messages(seeds[0], seeds, student_answer="billing") == plain.teacher_messages(seeds[0], seeds)
    assert contrast.teacher_messages(seeds[0], seeds) == plain.teacher_messages(seeds[0], seeds)


def test_teacher_prompt_asks_to_keep_the_form_only_when_told():
    seeds = [example(), example("App crashes", "technical", id="3")]
    rewording = build_task(TaskConfig(labels=LABELS), seeds).teacher_messages(seeds[0], seeds)
    keeping = build_task(TaskConfig(labels=LABELS, teacher_keep_form=True), seeds).teacher_messages(seeds[0], seeds)
    assert "Use new wording" in rewording[0]["content"] and "same words" not in rewording[0]["content"]
    assert "begin with the same words" in keeping[0]["content"] and "Use new wording" not in keeping[0]["content"]
    assert keeping[-1]["content"].endswith("labelled billing in the misclassified example's form.")
    assert rewording[-1]["content"].endswith("labelled billing.")


def test_keep_opening_names_the_first_word_and_rejects_another():
    seeds = [example("What company makes the iPhone ?", "billing"), example("App crashes", "technical", id="3")]
    off = build_task(TaskConfig(labels=LABELS, teacher_keep_form=True), seeds)
    on = build_task(TaskConfig(labels=LABELS, teacher_keep_form=True, teacher_keep_opening=True), seeds)
    asked = on.teacher_messages(seeds[0], seeds)[-1]["content"]
    assert asked.endswith('labelled billing in the misclassified example\'s form, beginning with "What".')
    assert off.teacher_messages(seeds[0], seeds)[-1]["content"].endswith("form.")  # off: the prompt as before
    easy = "Text: Who founded Apple ?\nLabel: billing"
    assert off.parse_teacher_reply(easy, seeds[0])["text"] == "Who founded Apple ?"
    with pytest.raises(Rejected) as caught:
        on.parse_teacher_reply(easy, seeds[0])
    assert (caught.value.reason, caught.value.detail) == ("opening_changed", "What -> Who")
    kept = on.parse_teacher_reply("Text: what store sells the most shoes ?\nLabel: billing", seeds[0])
    assert kept["text"].startswith("what store")  # case aside, the same word
    whose = example("Whose logo is a W ?", "billing")
    with pytest.raises(Rejected, match="opening_changed"):
        on.parse_teacher_reply("Text: Who's the owner of the W logo ?\nLabel: billing", whose)
    wordless = example("?!", "billing")  # no first word to keep: nothing named, nothing rejected
    assert on.teacher_messages(wordless, seeds)[-1]["content"].endswith("form.")
    assert on.parse_teacher_reply("Text: Who founded Apple ?\nLabel: billing", wordless)["text"] == "Who founded Apple ?"
