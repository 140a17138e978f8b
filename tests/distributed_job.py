"""Run by test_distributed.py as several processes (python -m torch.distributed.run): each student of the spec file is
trained by all processes together (DDP), then predicts and scores the prompts with the batches shared; the main
process writes what it got back to <out>/<name>.json, and the student's weights to <out>/<name>/.

    python -m torch.distributed.run --nproc_per_node 2 tests/distributed_job.py SPEC.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llm2llm.config import StudentConfig
from llm2llm.distributed import join
from llm2llm.students import hf
from llm2llm.students.hf import HFStudent

SCORED: list[int] = []  # prompts this process scored, per score() call (a shared call scores only its batches)


def _counting(score_rows):
    def counted(model, prompts, *args, **kwargs):
        SCORED[-1] += len(prompts)
        return score_rows(model, prompts, *args, **kwargs)
    return counted


hf.candidate_logprobs = _counting(hf.candidate_logprobs)


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    team = join()
    out = Path(spec["out"])
    pairs = [(messages, target) for messages, target in spec["pairs"]]
    prompts = [messages for messages, _ in pairs]
    for name, settings in spec["students"].items():
        student = HFStudent(StudentConfig(**settings), seed=spec["seed"])
        stats = student.train(pairs, out / name)
        predictions = student.predict(out / name, prompts, spec["max_new_tokens"])
        SCORED.append(0)
        scores = student.score(out / name, prompts, spec["candidates"])
        scored = team.collect(SCORED[-1]) if team.size > 1 else [SCORED[-1]]
        if team.is_main:
            (out / f"{name}.json").write_text(json.dumps({"stats": stats, "predictions": predictions, "scores": scores,
                                                          "processes": team.size, "scored_by_process": scored}),
                                              encoding="utf-8")
    team.leave()


if __name__ == "__main__":
    main(sys.argv[1])
