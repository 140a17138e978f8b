"""A scripted teacher and student for loop tests: deterministic replies, call counting, optional injected failure."""

from __future__ import annotations

import re

from llm2llm.teachers import TeacherReply, TeacherRequest


class ScriptedTeacher:
    """Writes 'Text: <seed text> (variant k, seed s, on <label>)' with the seed's label.

    About one request in four (chosen by its seed, so the same request always gets the same reply) gets the
    seed text back unchanged, so rejection is exercised too. As a verifier (asked greedily) it answers the label
    named in the text, except for about one text in five, where it answers another label (`label_mismatch`).
    `calls` counts requests that reached the teacher (cache hits never do).
    """

    calls: list[str] = []  # class-level so tests see calls made through a config-built instance

    def __init__(self, config=None, seed: int = 0) -> None:
        self.name = "scripted-teacher"
        self.fail_after: int | None = None

    def params(self) -> dict:
        return {"temperature": 0.7}

    def complete(self, request: TeacherRequest, seed: int) -> TeacherReply:
        if self.fail_after is not None and len(ScriptedTeacher.calls) >= self.fail_after:
            raise RuntimeError("injected teacher crash")
        user = request.messages[-1]["content"]
        if request.temperature == 0:
            return self._verify(request, seed)
        text = re.search(r"Text: (.*)", user).group(1)
        label = re.search(r"Label: (.*)", user).group(1)
        ScriptedTeacher.calls.append(text)
        if seed % 4 == 0:
            reply = f"Text: {text}\nLabel: {label}"
        else:
            reply = f"Text: {text} (variant {request.sample_index}, {seed % 1000}, on {label})\nLabel: {label}"
        return TeacherReply(text=reply, finish_reason="stop", prompt_tokens=len(user.split()), completion_tokens=len(reply.split()))

    def _verify(self, request: TeacherRequest, seed: int) -> TeacherReply:
        text = request.messages[-1]["content"]
        ScriptedTeacher.calls.append(f"verify: {text}")
        labels = re.search(r"label from: (.*)\.", request.messages[0]["content"]).group(1).split(", ")
        intended = re.search(r", on (.*)\)$", text).group(1)
        answer = intended if seed % 5 else next(label for label in labels if label != intended)
        return TeacherReply(text=answer, finish_reason="stop", prompt_tokens=len(text.split()), completion_tokens=1)

    def close(self) -> None:
        pass


class ScriptedStudent:
    """No weights: answers the gold label, except for the seed texts in `wrong`, which it always gets wrong."""

    def __init__(self, wrong: set[str]) -> None:
        from conftest import SEED_ROWS, TEST_ROWS

        self.gold = {row["text"]: row["label"] for row in SEED_ROWS + TEST_ROWS}
        self.wrong = wrong

    def train_steps(self, n_pairs):
        return 1

    def train(self, pairs, out_dir, advance=None, init_from=None):
        out_dir.mkdir(parents=True, exist_ok=True)
        return {"train_examples": len(pairs)}

    def predict(self, student_dir, prompts, max_new_tokens, advance=None):
        texts = [messages[-1]["content"] for messages in prompts]
        return ["nonsense" if text in self.wrong else self.gold[text] for text in texts]


class LookupStudent:
    """No weights: it knows what it was trained on. It answers a text right when that text, or a text made from it
    (a teacher variant starts with its parent's text), was in its training pairs, or when the text is in `knows`
    (what it would generalise to); otherwise it answers 'nonsense'. Every training set is kept in `trained`."""

    def __init__(self, knows: set[str] = frozenset()) -> None:
        from conftest import SEED_ROWS, TEST_ROWS

        self.gold = {row["text"]: row["label"] for row in SEED_ROWS + TEST_ROWS}
        self.knows = set(knows)
        self.trained: dict[str, list[str]] = {}

    def train_steps(self, n_pairs):
        return 1

    def train(self, pairs, out_dir, advance=None, init_from=None):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "texts.txt").write_text("\n".join(messages[-1]["content"] for messages, _ in pairs), encoding="utf-8")
        self.trained[str(out_dir)] = [messages[-1]["content"] for messages, _ in pairs]
        return {"train_examples": len(pairs)}

    def predict(self, student_dir, prompts, max_new_tokens, advance=None):
        seen = (student_dir / "texts.txt").read_text(encoding="utf-8").split("\n")
        texts = [messages[-1]["content"] for messages in prompts]
        return [self.gold[text] if text in self.knows or any(s.startswith(text) for s in seen) else "nonsense" for text in texts]
