"""Quality filters on generated examples: ROUGE-L near-duplicates, test overlap, and the blind verifier."""

from __future__ import annotations

import random

import pytest

from llm2llm.config import load_config
from llm2llm.data import Example, read_jsonl
from llm2llm.context import RunContext
from llm2llm.generate import teacher_examples
from llm2llm.progress import SilentUI
from llm2llm.quality import RougeIndex, SurfaceForm, rouge_l, verifier_messages, verifier_shots
from llm2llm.tasks import build_task, normalize
from llm2llm.teachers import ReplyCache, TeacherReply
from llm2llm.tasks.multiple_choice import MultipleChoiceTask


def _lcs(a: list[str], b: list[str]) -> int:
    """Textbook dynamic-programming LCS, the reference the fast index is checked against."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_rouge_l_matches_a_reference_lcs_on_random_texts():
    rng = random.Random(0)
    words = "the a cat dog sat ran on under mat rug big small".split()
    for _ in range(200):
        a = " ".join(rng.choices(words, k=rng.randint(1, 15)))
        b = " ".join(rng.choices(words, k=rng.randint(1, 15)))
        wa, wb = normalize(a).split(), normalize(b).split()
        assert rouge_l(a, b) == pytest.approx(2 * _lcs(wa, wb) / (len(wa) + len(wb)))


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("The cat sat on the mat.", "the cat sat on the mat", 1.0),  # case and punctuation do not count
        ("the cat sat on the mat", "the cat is on the mat", 10 / 12),
        ("play music by madonna", "what is the weather", 0.0),
        ("", "anything", 0.0),
    ],
)
def test_rouge_l_cases(a, b, expected):
    assert rouge_l(a, b) == pytest.approx(expected)


def test_index_finds_the_nearest_text_and_grows():
    index = RougeIndex(["play music by madonna", "what is the weather in paris"], ["s1", "s2"])
    assert index.nearest("Play some music, by Madonna!") == (pytest.approx(8 / 9), "s1")
    assert index.nearest("weather in paris today")[1] == "s2"
    index.add("book a table for two", "g1")
    assert len(index) == 3 and index.nearest("book a table for two")[1] == "g1"
    assert RougeIndex().nearest("anything") == (0.0, None)


SEEDS = [
    Example(id=f"s{i}", text=text, label=label, origin="seed")
    for i, (text, label) in enumerate(
        [("refund me", "billing"), ("where is my parcel", "shipping"), ("app crashes", "technical"),
         ("invoice missing", "billing"), ("courier lost it", "shipping"), ("wifi drops", "technical"),
         ("charged twice", "billing")]
    )
]


def _task(**overrides):
    config = load_config(None, [f"task.{k}={v}" for k, v in overrides.items()])
    return build_task(config.task, SEEDS)


def test_verifier_shots_interleave_labels_and_skip_the_parent():
    task = _task()
    shots = verifier_shots(task, SEEDS, parent=SEEDS[0], per_label=2)
    assert [s.id for s in shots] == ["s3", "s1", "s2", "s6", "s4", "s5"]  # billing, shipping, technical twice; no s0
    assert verifier_shots(task, SEEDS, parent=SEEDS[0], per_label=0) == []


def test_verifier_messages_are_blind_few_shot_student_prompts():
    task = _task()
    candidate = Example(id="g", text="my card was billed two times", label="billing", origin="teacher")
    shots = verifier_shots(task, SEEDS, parent=SEEDS[0], per_label=1)
    messages = verifier_messages(task, candidate, shots)
    assert messages[0] == task.student_messages(candidate)[0]  # the student's system prompt
    assert messages[-1] == {"role": "user", "content": candidate.text}
    turns = messages[1:-1]
    assert [m["role"] for m in turns] == ["user", "assistant"] * len(shots)
    assert [m["content"] for m in turns[1::2]] == [s.label for s in shots]
    # blind: nothing after the system prompt ties the candidate to its intended label
    assert all(candidate.text not in m["content"] for m in messages[:-1])


def test_multiple_choice_verifier_answers_with_letters():
    seeds = [Example(id=f"m{i}", text=f"context {i}", label=str(i % 3), choices=["x", "y", "z"], origin="seed") for i in range(4)]
    task = MultipleChoiceTask(load_config().task, seeds)
    candidate = Example(id="g", text="new context", label="2", choices=["p", "q", "r"], origin="teacher")
    messages = verifier_messages(task, candidate, verifier_shots(task, seeds, seeds[0], 2))
    assert [m["content"] for m in messages if m["role"] == "assistant"] == ["B", "C"]  # m1, m2 answers as letters
    assert "(C) r" in messages[-1]["content"]


class CannedTeacher:
    """Replies from a dict: generation requests by the parent's text, verification requests by the candidate's text."""

    def __init__(self, name: str, replies: dict[str, str]) -> None:
        self.name, self.replies, self.calls = name, replies, 0

    def params(self):
        return {"temperature": 0.7}

    def complete(self, request, seed):
        self.calls += 1
        last = request.messages[-1]["content"]
        key = last if request.temperature == 0 else last.split("Text: ")[1].split("\n")[0]
        return TeacherReply(text=self.replies[key], finish_reason="stop", prompt_tokens=10, completion_tokens=5)

    def close(self):
        pass


TEST_SET = [Example(id="t1", text="please send the refund for my broken blender to my visa card", label="billing", origin="test")]


def _run_generate(tmp_path, teacher, verifier, overrides=()):
    config = load_config(None, ["select.by=train_errors", *overrides])  # one request a parent, the paper's prompt
    task = build_task(config.task, SEEDS)
    wrong = SEEDS[:5]
    teacher.replies.update({
        "refund me": "Text: please send the refund for my broken blender to my visa card\nLabel: billing",  # a test row
        "where is my parcel": "Text: Where is my parcel?\nLabel: shipping",  # the seed again: copy_of_seed
        "app crashes": "Text: the app crashes!\nLabel: technical",  # 'app crashes' with one word more: near-duplicate?
        "invoice missing": "Text: I never got the invoice for last month\nLabel: billing",
        "courier lost it": "Text: i never got the invoice for last month!\nLabel: shipping",  # same as the previous reply
    })
    cache = ReplyCache(tmp_path / "cache.sqlite")
    run = RunContext(config, None, task, None, teacher, verifier, cache, SEEDS, TEST_SET, SilentUI())
    info = teacher_examples(run, tmp_path, 0, wrong, SEEDS)
    cache.close()
    return info, {row["reason"]: row for row in read_jsonl(tmp_path / "rejected.jsonl")}


def test_generate_rejects_copies_near_duplicates_test_overlap_and_mismatches(tmp_path):
    teacher = CannedTeacher("teacher", {})
    verifier = CannedTeacher("verifier", {"I never got the invoice for last month": "shipping"})
    info, reasons = _run_generate(tmp_path, teacher, verifier, ["quality.near_duplicate_rouge_l=0.8"])
    # 'the app crashes' vs 'app crashes': ROUGE-L 2*2/(3+2) = 0.8
    assert info["rejected_by_reason"] == {"test_overlap": 1, "copy_of_seed": 1, "near_duplicate": 2, "label_mismatch": 1}
    assert info["accepted"] == 0 and info["test_overlap_flagged"] == 1
    assert info["verify_requests"] == 1 and verifier.calls == 1  # only the survivor of the cheap checks is verified
    assert reasons["test_overlap"]["detail"].endswith("test example t1")
    near = sorted(row["detail"] for row in read_jsonl(tmp_path / "rejected.jsonl") if row["reason"] == "near_duplicate")
    assert near == ["ROUGE-L 0.80 with s2", "ROUGE-L 1.00 with gen-000-s3-0"]  # a seed's, and one within the batch
    assert reasons["label_mismatch"]["detail"] == "intended billing, verifier answered shipping"
    assert reasons["label_mismatch"]["example"]["text"] == "I never got the invoice for last month"
    assert read_jsonl(tmp_path / "test_overlap.jsonl")[0]["test_id"] == "t1"


def test_generate_keeps_flagged_overlap_when_asked_and_skips_verification_when_off(tmp_path):
    teacher = CannedTeacher("teacher", {})
    verifier = CannedTeacher("verifier", {})
    info, reasons = _run_generate(tmp_path, teacher, verifier, ["quality.drop_test_overlap=false", "quality.verify=false"])
    generated = {row["text"] for row in read_jsonl(tmp_path / "generated.jsonl")}
    assert generated == {"please send the refund for my broken blender to my visa card", "the app crashes!",
                         "I never got the invoice for last month"}
    assert info["test_overlap_flagged"] == 1 and read_jsonl(tmp_path / "test_overlap.jsonl")[0]["dropped"] is False
    assert verifier.calls == 0 and set(reasons) == {"copy_of_seed", "near_duplicate"}


def test_surface_form_is_what_nearly_every_seed_shares():
    assert SurfaceForm.of(["play some jazz", "book a table for 2 at 7:30"]) == SurfaceForm(lowercase=True, unpunctuated=False)
    assert SurfaceForm.of(["What is a lynx?", "Who wrote Dune?"]) == SurfaceForm(lowercase=False, unpunctuated=False)
    twenty = [f"row {i}" for i in range(20)]
    assert SurfaceForm.of(["Row 0: yes", *twenty[1:]]) == SurfaceForm(lowercase=True, unpunctuated=True)  # 19 of 20
    assert SurfaceForm.of(["Row 0: yes", "row 1!", *twenty[2:]]) == SurfaceForm(lowercase=True, unpunctuated=False)  # 18 of 20
    assert SurfaceForm.of([]) == SurfaceForm(lowercase=False, unpunctuated=False)


def test_surface_form_lowers_and_unpunctuates_only_what_it_found():
    text = 'Find the "Age of Success" soundtrack, it\'s rated 3.5 (of 6)!'
    assert SurfaceForm(True, True).apply(text) == "find the age of success soundtrack its rated 3.5 of 6"
    assert SurfaceForm(True, False).apply(text) == text.lower()
    assert SurfaceForm(False, True).apply(text) == "Find the Age of Success soundtrack its rated 3.5 of 6"
    assert SurfaceForm(False, False).apply(text) == text


def test_surface_form_parts_contractions_where_the_seeds_do():
    # SNIPS writes "i d like", "what s", "o clock" (41 of its 700 test rows; 3 join them): the seeds say which
    parted = ["i d like a table for two", "what s the weather", "play jazz at nine o clock", "add this song"]
    assert SurfaceForm.of(parted) == SurfaceForm(lowercase=True, unpunctuated=True, split_contractions=True)
    joined = ["whats the weather", "dont play jazz", "i d like that"]
    assert SurfaceForm.of(joined) == SurfaceForm(lowercase=True, unpunctuated=True, split_contractions=False)
    assert not SurfaceForm.of(["i d like a table, please", "what s on?"]).split_contractions  # punctuated: nothing to part
    text = "I'd like \"Let's Dance\" at 7 o’clock, it's 3.5 stars"
    assert SurfaceForm.of(parted).apply(text) == "i d like let s dance at 7 o clock it s 3.5 stars"
    assert SurfaceForm.of(joined).apply(text) == "id like lets dance at 7 oclock its 3.5 stars"


def test_generate_gives_teacher_examples_the_seeds_form_when_asked(tmp_path):
    (tmp_path / "off").mkdir(), (tmp_path / "on").mkdir()
    off, _ = _run_generate(tmp_path / "off", CannedTeacher("teacher", {}), CannedTeacher("verifier", {}),
                           ["quality.verify=false", "quality.drop_test_overlap=false"])
    assert off["form_matched"] == 0 and "the app crashes!" in {row["text"] for row in read_jsonl(tmp_path / "off" / "generated.jsonl")}
    info, reasons = _run_generate(tmp_path / "on", CannedTeacher("teacher", {}), CannedTeacher("verifier", {}),
                                  ["quality.match_seed_form=true", "quality.verify=false", "quality.drop_test_overlap=false"])
    # The seeds are lower case without punctuation: so are the examples trained on, and the de-duplication sees them so.
    generated = [row["text"] for row in read_jsonl(tmp_path / "on" / "generated.jsonl")]
    assert sorted(generated) == ["i never got the invoice for last month", "please send the refund for my broken blender to my visa card",
                                 "the app crashes"]
    assert info["form_matched"] == 3  # 'the app crashes!', both invoice replies ('Where is my parcel?' is a copy, unparsed)
    assert info["rejected_by_reason"] == {"copy_of_seed": 1, "near_duplicate": 1}


def test_generate_can_require_the_seeds_wording(tmp_path):
    teacher = CannedTeacher("teacher", {})
    info, reasons = _run_generate(tmp_path, teacher, CannedTeacher("verifier", {}),
                                  ["quality.min_seed_rouge_l=0.3", "quality.verify=false", "quality.drop_test_overlap=false"])
    # 'refund me' -> the blender refund: ROUGE-L 0.14; 'invoice missing' -> 'I never got the invoice ...': 0.20;
    # 'courier lost it' -> the invoice again: 0; 'app crashes' -> 'the app crashes!': 0.8, kept.
    assert [row["text"] for row in read_jsonl(tmp_path / "generated.jsonl")] == ["the app crashes!"]
    assert info["rejected_by_reason"] == {"copy_of_seed": 1, "unlike_seed": 3}
    details = sorted(row["detail"] for row in read_jsonl(tmp_path / "rejected.jsonl") if row["reason"] == "unlike_seed")
    assert details == ["ROUGE-L 0.00 with its seed s4", "ROUGE-L 0.14 with its seed s0", "ROUGE-L 0.20 with its seed s3"]


def test_verifier_without_an_answer_leaves_the_example_unverified(tmp_path):
    teacher = CannedTeacher("teacher", {})
    verifier = CannedTeacher("verifier", {
        "please send the refund for my broken blender to my visa card": "Billing.",
        "the app crashes!": "I am not sure.",
        "I never got the invoice for last month": "billing",
    })
    info, reasons = _run_generate(tmp_path, teacher, verifier, ["quality.drop_test_overlap=false"])
    assert [row["text"] for row in read_jsonl(tmp_path / "generated.jsonl")] == [
        "please send the refund for my broken blender to my visa card", "I never got the invoice for last month"]
    assert info["rejected_by_reason"] == {"copy_of_seed": 1, "unverified": 1, "near_duplicate": 1}
    assert reasons["unverified"]["detail"].startswith("no answer in the verifier's reply")


@pytest.mark.parametrize("select_by, shown", [("out_of_fold", True), ("train_errors", False)])
def test_the_teacher_is_told_the_students_answer_except_in_the_papers_loop(tmp_path, select_by, shown):
    seen = []

    class Recording(CannedTeacher):
        def complete(self, request, seed):
            seen.append(request.messages[-1]["content"])
            return super().complete(request, seed)

    config = load_config(None, [f"select.by={select_by}", "quality.verify=false"])
    task = build_task(config.task, SEEDS)
    cache = ReplyCache(tmp_path / "cache.sqlite")
    run = RunContext(config, None, task, None, Recording("teacher", {"refund me": "Text: my bill doubled\nLabel: billing"}), None,
                     cache, SEEDS, TEST_SET, SilentUI())
    teacher_examples(run, tmp_path, 0, SEEDS[:1], SEEDS, student_answers={SEEDS[0].id: "technical"})
    cache.close()
    assert seen and ("The student answered technical" in seen[0]) == shown


class RefusingTeacher(CannedTeacher):
    """A CannedTeacher whose reply 'REFUSE' stands for the server refusing the request for its size."""

    def complete(self, request, seed):
        reply = super().complete(request, seed)
        if reply.text == "REFUSE":
            return TeacherReply(text="", error="HTTP 400 (request (5000 tokens) exceeds the available context size)", too_long=True)
        return reply


def test_runaway_replies_and_requests_too_big_for_the_teacher_are_counted_rejections(tmp_path):
    # any failed request would stop it; one request a parent
    config = load_config(None, ["quality.verify=false", "teacher.max_failure_ratio=0", "teacher.samples_per_wrong=1"])
    task = build_task(config.task, SEEDS)
    teacher = RefusingTeacher("teacher", {
        "refund me": "Text: " + "please refund me " * 6000 + "\nLabel: billing",  # a 100k-character reply
        "where is my parcel": "REFUSE",
        "app crashes": "Text: my laptop freezes whenever I open the new app\nLabel: technical",
    })
    cache = ReplyCache(tmp_path / "cache.sqlite")
    run = RunContext(config, None, task, None, teacher, teacher, cache, SEEDS, [], SilentUI())
    info = teacher_examples(run, tmp_path, 0, SEEDS[:3], SEEDS)
    cache.close()
    reasons = {row["reason"]: row for row in read_jsonl(tmp_path / "rejected.jsonl")}
    assert info["rejected_by_reason"] == {"too_long": 1, "prompt_too_long": 1} and info["accepted"] == 1
    # The longest seed is 'where is my parcel' + 'shipping', 26 characters: at most 4 x 26 + 200.
    assert reasons["too_long"]["detail"] == "102,021 characters, more than 304 (quality.max_reply_ratio=4.0 x the longest seed, 26)"
    assert len(reasons["too_long"]["reply"]) == 306  # what was kept of it: the first 304 characters
    assert "exceeds the available context size" in reasons["prompt_too_long"]["detail"]
