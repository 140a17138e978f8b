"""Grade-school math word problems (GSM8K, as in the LLM2LLM paper, arXiv 2403.15042): the student reasons step by
step and ends with `#### <number>`; grading compares that number; teacher problems are re-checked by arithmetic.

Labels are GSM8K answers: a rationale with calculator annotations (`<<48/2=24>>`) and a final line `#### 72`.
Model output is never executed: numbers are parsed with regexes and arithmetic with a tiny `ast` walker.
"""

from __future__ import annotations

import ast
import operator
import re
from decimal import Decimal

from llm2llm.config import TaskConfig
from llm2llm.data import Example, column_key
from llm2llm.errors import DataError
from llm2llm.tasks import Messages, Rejected, unquote

# A number as people write it: thousands separators only in groups of three, so "3,4" is not 34.
_NUMBER = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+"
# After the last '####': optional bold, sign, '$' and spaces, then the number. "3/4" is a fraction, not 3.
# Each optional part starts with its own character, so no two `\s*` touch (they would backtrack badly).
_FINAL = re.compile(
    rf"\s*(?:[*_]+\s*)?(?:(?P<sign>[-+−])\s*)?(?:\$\s*)?(?:(?P<sign2>[-−])\s*)?"
    rf"(?P<number>{_NUMBER})(?![\d,]*\d|\s*/\s*\d)"
)
_ANNOTATION = re.compile(r"<<([^<>]*)>>")
# Plain-text equations: operands joined by operators, '=', then a number (read by lookahead, so chains
# like "3 * 4 = 12 + 5 = 17" give both equations). An equation stays on one line, starts only where a
# number token starts and has at most 20 operators, so long runs of digits, spaces or terms stay linear
# instead of quadratic; a longer chain is matched from its middle and then skipped by _BEFORE_UNCHECKABLE.
# A minus must touch its number: "- 3 * 4 = 12" is a bullet point, not -12.
_OPERAND = rf"(?:\([ \t]*)*[-−]?(?:\$[ \t]*)?(?:{_NUMBER})(?:[ \t]*\))*"
_EQUATION = re.compile(
    rf"(?<![\d.,(])(?P<lhs>{_OPERAND}(?:[ \t]*(?:\*\*|//|[-+*/^xX])[ \t]*{_OPERAND}){{1,20}})[ \t]*="
    rf"(?=[ \t]*(?P<rhs>(?:[-−][ \t]*)?(?:\$[ \t]*)?(?:{_NUMBER}))(?P<after>[ \t]*\S{{0,9}}))"
)
# "half of 10 + 4 = 9", "50% * 40 + 10 = 30": the expression starts before what we matched (on the same line,
# after any list bullet), so we cannot check it.
_BEFORE_UNCHECKABLE = re.compile(
    r"(?:[\d%*/+\-^]|\b(?:of|times|by|plus|minus|over|twice|double|triple|half))[ \t]*$", re.I
)
_BULLET = re.compile(r"[ \t]*(?:[-*+•]|\d+[.)])[ \t]*")
# "= 3/4", "= 20%", "= 2 * 6", "= 3 thousand": the claim is not just the number we read.
_AFTER_UNCHECKABLE = re.compile(r"[ \t]*(?:[-+*/^%(x×÷]|\d|,\d|thousand|million|billion|hundred|dozen)", re.I)
_OPERATORS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}

STUDENT_PROMPT = (
    "Solve the math word problem step by step. Show each calculation, then end with a final line of the form "
    "'#### <number>' that gives only the numeric answer."
)
# The one in-context example of a good reply (paper: rules, one example, then the wrong problem). Written for
# this library, not taken from GSM8K, so it cannot leak a test question; every equation in it checks out.
WORKED_EXAMPLE = (
    "Question: A bakery sells muffins for $3 each and cookies for $1.50 each. Priya buys 4 muffins and 6 "
    "cookies and pays with a $25 bill. How much change does she get?\n"
    "Answer: The muffins cost 4 * $3 = $12.\n"
    "The cookies cost 6 * $1.50 = $9.\n"
    "Together she spends $12 + $9 = $21.\n"
    "Her change is $25 - $21 = $4.\n"
    "#### 4"
)
TEACHER_PROMPT = (
    "You write grade-school math word problems to train a student model. The student got the problem below "
    "wrong. Write ONE new problem that tests the same skill, so the student learns it.\n"
    "Rules:\n"
    "- Use new names, objects and numbers; do not copy or lightly reword the original problem.\n"
    "- Keep the same kind and number of reasoning steps as the original.\n"
    "- The problem must have exactly one correct answer, and it must be a number.\n"
    "- Solve it step by step, one calculation per line, written like '4 * 3 = 12'. Every calculation must be "
    "correct.\n"
    "- End the answer with a final line '#### <number>' holding only the number (no units, no '$').\n"
    "Reply in exactly this format and nothing else:\n"
    "Question: <the new problem>\nAnswer: <the step-by-step solution>\n#### <number>\n\n"
    f"Example of a good reply:\n{WORKED_EXAMPLE}"
)


def _canonical(value: Decimal) -> str:
    """'1000.50' -> '1000.5', '72.0' -> '72', '-0' -> '0': one spelling per number, for logs and labels."""
    if value == 0:
        return "0"
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def safe_eval(expression: str) -> float | None:
    """Value of a pure arithmetic expression, or None for anything else (names, calls, huge powers). Never executes."""
    text = expression.replace("$", "").replace("^", "**")
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # thousands separators
    text = re.sub(r"(?<=[\d)])\s*[xX]\s*(?=[\d(.$])", " * ", text)  # "3 x 4"
    if len(text) > 200:  # deep nesting could exhaust the parser; real steps are short
        return None
    try:
        value = _evaluate(ast.parse(text.strip(), mode="eval").body)
    except (SyntaxError, ValueError, TypeError, ArithmeticError, RecursionError, MemoryError):
        return None
    return value if isinstance(value, float) and abs(value) < 1e300 else None  # complex or inf: not checkable


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 10:
            raise ValueError("exponent too large")  # 9**9**9 would hang the loop
        return _OPERATORS[type(node.op)](left, right)
    raise ValueError(f"not arithmetic: {type(node).__name__}")


def _claim_holds(actual: float, claimed_text: str) -> bool:
    claimed = float(claimed_text)
    if abs(actual - claimed) <= 1e-4 * max(abs(actual), abs(claimed)) + 1e-9:
        return True
    # A claim written with decimals may be rounded or cut to that precision: "10 / 3 = 3.33" is fine.
    decimals = len(claimed_text.partition(".")[2])
    return decimals > 0 and abs(actual - claimed) <= 10.0**-decimals


def arithmetic_error(rationale: str) -> str | None:
    """'<expr> = <claimed>, not <actual>' for the first wrong annotation or plain equation, else None."""
    checks = [(expr, claimed) for expr, _, claimed in (a.rpartition("=") for a in _ANNOTATION.findall(rationale))]
    text = _ANNOTATION.sub("", rationale)
    for old, new in (("×", "*"), ("÷", "/"), ("−", "-"), ("\\times", "*"), ("\\cdot", "*"), ("\\div", "/")):
        text = text.replace(old, new)
    for match in _EQUATION.finditer(text):
        start = match.start("lhs")
        line_before = text[max(0, start - 30) : start].rpartition("\n")[2]
        if _BULLET.fullmatch(line_before):
            line_before = ""
        if _BEFORE_UNCHECKABLE.search(line_before) or _AFTER_UNCHECKABLE.match(match["after"]):
            continue
        checks.append((match["lhs"], match["rhs"]))
    for expr, claimed in checks:
        claimed_text = re.sub(r"[\s$,]", "", claimed).replace("−", "-")
        actual = safe_eval(expr.replace("−", "-"))
        if actual is None or not re.fullmatch(r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)", claimed_text):
            continue  # not plain arithmetic: skip rather than reject a reply we cannot read
        if not _claim_holds(actual, claimed_text):
            return f"{' '.join(expr.split())} = {claimed.strip()}, not {actual:.10g}"
    return None


def normalize(text: str) -> str:
    """Like tasks.normalize, but keeps decimal points and drops thousands commas: '3.5' and '35' stay apart."""
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text.lower())
    text = re.sub(r"(?!(?<=\d)\.(?=\d))[^\w\s]", " ", text)
    return " ".join(text.split())


class MathTask:
    name = "math"
    max_new_tokens = 320  # GSM8K rationales run to ~200 tokens; headroom for wordier students
    verify_by_default = False

    def __init__(self, config: TaskConfig, seeds: list[Example]) -> None:
        # config.description is not shown: its default describes ticket routing, and the prompts below are
        # specific to GSM8K. config.teacher_context_examples is unused: the paper shows one worked example.
        pass

    # ── student side ────────────────────────────────────────────────────────────────────────────
    def validate(self, examples: list[Example]) -> None:
        for example in examples:
            if self.extract_answer(example.label) is None:
                raise DataError(
                    f"{example.source or example.id}: the answer has no final '#### <number>' line "
                    f"(ends with {example.label.strip()[-40:]!r}); GSM8K answers end with e.g. '#### 72'. "
                    f"Check that {column_key(example.origin, 'label')} names the answer column."
                )

    def student_messages(self, example: Example) -> Messages:
        return [{"role": "system", "content": STUDENT_PROMPT}, {"role": "user", "content": example.text}]

    def target(self, example: Example) -> str:
        # Calculator annotations are tool-call markup in GSM8K, not text the student should learn to write.
        rationale = _ANNOTATION.sub("", example.label).rpartition("####")[0].strip()
        return f"{rationale}\n#### {self.extract_answer(example.label)}".strip()

    def answer_choices(self, example: Example) -> None:
        return None  # an open answer: predicted by generating

    def extract_answer(self, output: str) -> str | None:
        marker = output.rfind("####")
        match = _FINAL.match(output, marker + 4) if marker >= 0 else None
        if match is None:
            return None
        value = Decimal(match["number"].replace(",", ""))
        negative = bool(match["sign2"]) or match["sign"] in ("-", "−")
        return _canonical(-value if negative else value)

    def is_correct(self, example: Example, output: str) -> bool:
        predicted, expected = self.extract_answer(output), self.extract_answer(example.label)
        if predicted is None or expected is None:
            return False
        return abs(Decimal(predicted) - Decimal(expected)) < Decimal("1e-6")

    # ── teacher side ────────────────────────────────────────────────────────────────────────────
    def teacher_messages(self, wrong: Example, context: list[Example], student_answer: str | None = None) -> Messages:
        user = f"The student got this problem wrong:\nQuestion: {wrong.text}\nAnswer: {self.target(wrong)}\n\n"
        if student_answer is not None and student_answer != self.extract_answer(wrong.label):
            user += f"The student's final answer was {student_answer}.\n"
        user += "Write one similar problem with new names and numbers."
        return [{"role": "system", "content": TEACHER_PROMPT}, {"role": "user", "content": user}]

    def parse_teacher_reply(self, reply: str, parent: Example) -> dict[str, str]:
        # Field names may be wrapped in markdown bold ("**Question:**") and preceded by chatter.
        field = r"(?im)^[ \t#>]*(?:\*+[ \t]*)?{}[ \t]*(?:\*+[ \t]*)?:[ \t]*(?:\*+[ \t]*)?"
        question_marker = re.search(field.format("question"), reply)
        rest = reply[question_marker.end() :] if question_marker else ""
        answer_marker = re.search(field.format("(?:answer|solution)"), rest)
        if not question_marker or not answer_marker:
            raise Rejected("unparsable", "no 'Question:' line followed by an 'Answer:' line")
        question = unquote(rest[: answer_marker.start()].strip().strip("*"))
        answer = rest[answer_marker.end() :]
        second = re.search(field.format("question"), answer)
        answer = answer[: second.start()] if second else answer  # a second problem is not part of this one
        final = self.extract_answer(answer)
        if final is None:
            raise Rejected("no_final_number", "no '#### <number>' line in the answer")
        rationale = answer[: answer.rfind("####")].strip()
        if not question or not rationale:
            raise Rejected("unparsable", "empty question" if not question else "no rationale before '####'")
        if normalize(question) == normalize(parent.text):
            raise Rejected("copy_of_seed")
        error = arithmetic_error(rationale)
        if error is not None:
            raise Rejected("arithmetic_error", error)
        return {"text": question, "label": f"{rationale}\n#### {final}"}
