"""Does scoring the known answers agree with greedy generation? The rule for `eval.predict`'s default.

    python bench/scoring.py [--tasks trec snips sst2 casehold] [--limit 0] [--epochs 5] [--casehold-epochs 1]

For each task with a known answer set (classification, multiple choice; GSM8K's open answers are always generated):
the bundled student is fine-tuned on the paper-sized seeds with the task config's recipe (CaseHOLD's 450-token
prompts with fewer epochs, for time), then predicts the test set twice — greedy generation (eval.predict=generate)
and scoring every label's tokens (eval.predict=score). Printed per task and pooled: agreement of the two answers,
agreement where greedy produced a label at all, each one's test accuracy, and prompts/s. Scoring is the default only
if it agrees with greedy on at least 99% of the pooled test predictions. Reads ../shared/data.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llm2llm.config import load_config  # noqa: E402
from llm2llm.loop import load_data  # noqa: E402
from llm2llm.students import answer_index  # noqa: E402
from llm2llm.students.hf import HFStudent  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["trec", "snips", "sst2", "casehold"])
    parser.add_argument("--limit", type=int, default=0, help="test rows per task (0: all)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--casehold-epochs", type=int, default=1)
    args = parser.parse_args()
    if not (ROOT.parent / "shared" / "data").is_dir():
        sys.exit("bench/scoring.py needs the benchmark data in ../shared/data (see the README); it is not here.")

    rows, pooled = [], {"n": 0, "agree": 0, "valid": 0, "agree_valid": 0, "highest_agree": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tasks:
            epochs = args.casehold_epochs if name == "casehold" else args.epochs
            overrides = [f"student.epochs={epochs}"] + ([f"data.test_limit={args.limit}"] if args.limit else [])
            config = load_config(ROOT / "configs" / f"{name}.yaml", overrides)
            seeds, test, task = load_data(config)
            student = HFStudent(config.student, seed=0)
            student.train([(task.student_messages(e), task.target(e)) for e in seeds], Path(tmp) / name)
            prompts = [task.student_messages(e) for e in test]
            started = time.perf_counter()
            generated = [task.extract_answer(o) for o in student.predict(Path(tmp) / name, prompts, task.max_new_tokens)]
            generate_s = time.perf_counter() - started
            choices = [task.answer_choices(e) for e in test]
            started = time.perf_counter()
            scores = student.score(Path(tmp) / name, prompts, choices)
            score_s = time.perf_counter() - started
            # extract_answer gives the label (classification) or the choice index (multiple choice), like grading does
            scored = [task.extract_answer(c[answer_index(s)]) for c, s in zip(choices, scores)]
            highest = [task.extract_answer(c[max(range(len(s)), key=s.__getitem__)]) for c, s in zip(choices, scores)]
            pooled["highest_agree"] += sum(a == b for a, b in zip(generated, highest))
            agree = sum(a == b for a, b in zip(generated, scored))
            valid = [(a, b) for a, b in zip(generated, scored) if a is not None]
            accuracy = {how: 100 * sum(a == e.label for a, e in zip(answers, test)) / len(test)
                        for how, answers in (("generate", generated), ("score", scored), ("highest", highest))}
            for key, value in (("n", len(test)), ("agree", agree), ("valid", len(valid)), ("agree_valid", sum(a == b for a, b in valid))):
                pooled[key] += value
            rows.append((name, epochs, len(test), f"{100 * agree / len(test):.1f}%",
                         f"{100 * sum(a == b for a, b in valid) / max(len(valid), 1):.1f}% of {len(valid)}",
                         f"{accuracy['generate']:.1f}", f"{accuracy['score']:.1f}",
                         f"{100 * sum(a == b for a, b in zip(generated, highest)) / len(test):.1f}% / {accuracy['highest']:.1f}",
                         f"{len(test) / generate_s:.1f}", f"{len(test) / score_s:.1f} ({generate_s / score_s:.2f}x)"))
            print(rows[-1], flush=True)
    header = ("task", "epochs", "test rows", "agreement", "agreement where greedy named a label", "greedy acc",
              "score acc", "highest total: agreement / acc", "greedy prompts/s", "score prompts/s")
    rows.append(("pooled", "", pooled["n"], f"{100 * pooled['agree'] / pooled['n']:.1f}%",
                 f"{100 * pooled['agree_valid'] / max(pooled['valid'], 1):.1f}% of {pooled['valid']}", "", "",
                 f"{100 * pooled['highest_agree'] / pooled['n']:.1f}%", "", ""))
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    verdict = pooled["agree"] / pooled["n"] >= 0.99
    print(f"\nscoring agrees with greedy on {100 * pooled['agree'] / pooled['n']:.1f}% of pooled test predictions: "
          + ("at least 99%, so eval.predict=auto scores" if verdict else "under 99%, so greedy generation stays the default"))


if __name__ == "__main__":
    main()
