"""Text classification (SST-2, TREC, SNIPS, the demo's ticket routing): the student answers with a label name."""

from __future__ import annotations

import re

from llm2llm.config import TaskConfig
from llm2llm.data import Example
from llm2llm.errors import ConfigError, DataError
from llm2llm.tasks import Messages, Rejected, normalize, unquote


class ClassificationTask:
    name = "classification"
    max_new_tokens = 12
    verify_by_default = True

    def __init__(self, config: TaskConfig, seeds: list[Example]) -> None:
        self.description = config.description.strip()
        self.labels = list(config.labels) if config.labels else sorted({seed.label for seed in seeds})
        if len(self.labels) < 2:
            raise ConfigError(f"task.labels: a classifier needs at least 2 labels, got {self.labels}")
        self._by_normal = {normalize(label): label for label in self.labels}
        if len(self._by_normal) != len(self.labels):
            raise ConfigError(f"task.labels: labels collide after normalisation: {self.labels}")
        self.context_examples = config.teacher_context_examples
        self.contrast_examples = config.teacher_contrast_examples
        self.keep_form = config.teacher_keep_form
        self.keep_opening = config.teacher_keep_opening
        # Longest label in words bounds the answer; a little slack covers tokenisation.
        self.max_new_tokens = max(8, 4 * max(len(label.split()) + len(label) // 4 for label in self.labels))

    # ── student side ────────────────────────────────────────────────────────────────────────────
    def validate(self, examples: list[Example]) -> None:
        for example in examples:
            if example.label not in self.labels:
                raise DataError(
                    f"{example.source or example.id}: unknown label {example.label!r}; "
                    f"known labels: {', '.join(self.labels)} (set task.labels to change them)"
                )

    def student_messages(self, example: Example) -> Messages:
        labels = ", ".join(self.labels)
        return [
            {"role": "system", "content": f"{self.description} Answer with one label from: {labels}."},
            {"role": "user", "content": example.text},
        ]

    def target(self, example: Example) -> str:
        return example.label

    def extract_answer(self, output: str) -> str | None:
        first_line = normalize(output.strip().split("\n")[0]) if output.strip() else ""
        if first_line in self._by_normal:
            return self._by_normal[first_line]
        # Accept "Label: billing" or "billing." but not an answer naming two labels.
        mentioned = {label for normal, label in self._by_normal.items() if re.search(rf"\b{re.escape(normal)}\b", first_line)}
        return mentioned.pop() if len(mentioned) == 1 else None

    def is_correct(self, example: Example, output: str) -> bool:
        return self.extract_answer(output) == example.label

    def answer_choices(self, example: Example) -> list[str]:
        return self.labels

    # ── teacher side ────────────────────────────────────────────────────────────────────────────
    def teacher_messages(self, wrong: Example, context: list[Example], student_answer: str | None = None) -> Messages:
        others = [example for example in context if example.label == wrong.label and example.id != wrong.id]
        shown = "".join(f"- {example.text}\n" for example in others[: self.context_examples])
        wording = ("Keep the example's form: begin with the same words, keep its sentence type and length, and "
                   "change its subject, names and details." if self.keep_form else
                   "Use new wording, names and details; do not copy or paraphrase the example closely.")
        system = (
            "You write training data for a text classifier.\n"
            f"Task: {self.description}\nLabels: {', '.join(self.labels)}.\n"
            "A student model misclassified the example at the end. Write ONE new example that tests the same "
            f"distinction, so the student learns it. {wording} The new text must clearly belong to the given label.\n"
            "Reply in exactly this format and nothing else:\nText: <the new text>\nLabel: <label>"
        )
        # What requests share comes first (the system prompt, then the label's examples), the seed last: a local
        # server reuses the cached prefix instead of reading it again (bench/teacher.py).
        user = f"Other examples labelled {wrong.label}:\n{shown}\n" if shown else ""
        # The other side of the confusion: real seeds of the label the student answered instead (none where it was right).
        across = [example for example in context if example.label == student_answer != wrong.label]
        if self.contrast_examples and across:
            listed = "".join(f"- {example.text}\n" for example in across[: self.contrast_examples])
            user += f"Examples labelled {student_answer}, for contrast:\n{listed}\n"
        user += f"Misclassified example:\nText: {wrong.text}\nLabel: {wrong.label}\n"
        if student_answer and student_answer != wrong.label:
            # The confusion is the skill to teach: without it a small teacher writes an easy, typical example of the
            # label (one that leans on the label's keyword), not one that separates the two labels.
            user += (f"The student answered {student_answer}. Write an example that is also {wrong.label}, not "
                     f"{student_answer}, and that a reader could mistake for {student_answer} in the same way.\n")
        user += f"\nWrite one new example labelled {wrong.label}" + (" in the misclassified example's form" if self.keep_form else "")
        # Named at the very end, where a small teacher follows it (3 in 81 TREC replies changed the word, 34 without);
        # as a sentence after the request it dropped the reply format instead.
        user += f', beginning with "{opening}".' if self.keep_opening and (opening := _opening(wrong.text)) else "."
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def parse_teacher_reply(self, reply: str, parent: Example) -> dict[str, str]:
        clean = reply.replace("**", "").replace("__", "")  # chat models like markdown bold around field names
        text_marker = re.search(r"(?im)^[ \t]*text[ \t]*:[ \t]*", clean)
        if text_marker is None:
            raise Rejected("unparsable", "no 'Text:' line")
        rest = clean[text_marker.end() :]
        # On a line of its own, or run on after the text's last sentence ("... I read. Label: RateBook": 1 of 2,989
        # kept SNIPS and TREC examples had it): the label is read, and checked, either way, and never left in the text.
        label_line = re.search(r"(?im)(?:^|(?<=[.?!]))[ \t]*label[ \t]*:[ \t]*(.*)$", rest)
        text = unquote(rest[: label_line.start()] if label_line else rest)
        if not text:
            raise Rejected("empty_text")
        label = parent.label
        if label_line is not None:
            written = self.extract_answer(label_line.group(1))
            if written is None:
                raise Rejected("unknown_label", label_line.group(1).strip()[:40])
            if written != parent.label:
                # The teacher drifted to another class: its text no longer tests the student's mistake.
                raise Rejected("label_changed", f"{parent.label} -> {written}")
        if normalize(text) == normalize(parent.text):
            raise Rejected("copy_of_seed")
        if self.keep_opening and (opening := _opening(parent.text)) and _opening(text).lower() != opening.lower():
            raise Rejected("opening_changed", f"{opening} -> {_opening(text)}")
        if re.search(r"[?.!]\s*\((?:[^()\s]+\s+){2,}[^()]*\)\s*$", text):  # a remark of 3+ words, not "5 p.m. (EST)"
            # "Who was ...? (This is the same as the misclassified example)": the teacher's remark, not the example's.
            raise Rejected("teacher_note", text[text.rindex("(") :][:40])
        tail = re.search(r"[(\[]\s*(?:label\s*:\s*)?([^()\[\]]+?)\s*[)\]]\s*$", text, re.I)
        if tail and normalize(tail.group(1)) in self._by_normal:
            # "What do ladybugs eat ? (entity)": the answer written into the question would teach the student to
            # read the label off the text, which no real input carries.
            raise Rejected("label_in_text", tail.group(0).strip())
        return {"text": text, "label": label}


def _opening(text: str) -> str:
    """The first word of a text ('What' of "What company 's logo ...?"), or '' where it has none."""
    word = re.search(r"\w+(?:'\w+)?", text)
    return word.group(0) if word else ""
