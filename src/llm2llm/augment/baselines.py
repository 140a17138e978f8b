"""Baselines that make training data without the loop (paper Table 2): AugGPT, EDA and more real data.

Each adds `augment.count` examples to the seeds (`llm2llm compare` sets it to what the LLM2LLM loop added, so
methods are compared at equal data size) and the student trains once on the result.

- auggpt: the loop's own teacher prompt and checks, applied round-robin to *every* seed rather than to the ones
  the student got wrong — so the comparison isolates the loop's targeting (paper §4.3 uses ChatGPT rephrasing).
- eda: synonym replacement, random insertion, swap and deletion (Wei & Zou, 2019) keeping the seed's label.
- more_data: real, labelled examples drawn at random from `augment.pool_path` (the paper's upper reference).
"""

from __future__ import annotations

import random
from pathlib import Path

from llm2llm.config import Config, file_columns
from llm2llm.context import RunContext
from llm2llm.data import Example, load_examples, read_examples, write_jsonl
from llm2llm.errors import ConfigError, DataError
from llm2llm.generate import teacher_examples
from llm2llm.tasks import normalize


def baseline_examples(run: RunContext, out_dir: Path) -> tuple[list[Example], dict]:
    """The examples augment.method adds to the seeds, written to out_dir/generated.jsonl, and its metrics."""
    config, seeds, augment = run.config, run.seeds, run.config.augment
    if augment.method == "auggpt":
        info = teacher_examples(run, out_dir, 0, seeds, seeds, count=augment.count)
        return read_examples(out_dir / "generated.jsonl"), info
    if augment.method == "eda":
        added = eda_examples(config, seeds)
    else:
        added = pool_examples(config, seeds, run.test)
        run.task.validate(added)  # a pool row with an unknown label names its file and line
    write_jsonl(out_dir / "generated.jsonl", added)
    return added, {"accepted": len(added), "requested": augment.count}


def eda_examples(config: Config, seeds: list[Example]) -> list[Example]:
    """One EDA variant per seed in turn until `count`, skipping variants that repeat a seed or an earlier variant."""
    from llm2llm.augment.eda import eda

    if config.task.type != "classification":
        raise ConfigError(f"augment.method=eda changes a text but keeps its label: it is for classification, not task.type={config.task.type}")
    rng = random.Random(config.seed)
    seen = {normalize(seed.text) for seed in seeds}
    added: list[Example] = []
    per_seed = [0] * len(seeds)
    count = config.augment.count
    for attempt in range(20 * count):  # bounded: one-word texts may have no new variant left
        if len(added) == count:
            break
        index = attempt % len(seeds)
        seed = seeds[index]
        text = eda(seed.text, 1, rng, alpha=config.augment.eda_alpha)[0]
        if normalize(text) in seen:
            continue
        seen.add(normalize(text))
        added.append(Example(id=f"eda-{seed.id}-{per_seed[index]}", text=text, label=seed.label, origin="eda", parent_id=seed.id))
        per_seed[index] += 1
    return added


def pool_examples(config: Config, seeds: list[Example], test: list[Example]) -> list[Example]:
    """`count` real examples drawn at random (config.seed) from the pool, none whose text is a seed or test text."""
    data, count = config.data, config.augment.count
    # Pool rows get ids from their content unless the pool names its own id column: a pool is often the split the
    # seeds were drawn from, and inherited ids could name a seed.
    columns = {**file_columns(data, config.augment.pool_columns), "id_field": config.augment.pool_columns.id}
    pool = load_examples(config.augment.pool_path, **columns, hf_subset=data.hf_subset, origin="pool")
    taken = {normalize(example.text) for example in seeds + test}
    fresh = []
    for example in pool:
        if normalize(example.text) not in taken:
            taken.add(normalize(example.text))  # the pool's own repeats count once
            fresh.append(example)
    if len(fresh) < count:
        raise DataError(f"{config.augment.pool_path}: only {len(fresh)} rows are not already seed or test examples; "
                        f"augment.count={count} needs more")
    return random.Random(config.seed).sample(fresh, count)
