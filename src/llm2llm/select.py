"""Step 3 of the loop, Select: which seed examples the teacher writes from (`select.by`).

- train_errors, the paper's signal (§3.1): the seeds the student gets wrong after training on them. A student trained
  to convergence answers 90-100% of its own seeds right, so this finds almost nothing (docs/results.md).
- out_of_fold: the seeds are split into k folds, stratified by label; for each fold a student is trained from the
  base weights on D_i without that fold's seeds *and without every generated example descended from them* (lineage
  makes this exact; otherwise a held-out seed leaks through its children), and predicts the held-out seeds. The
  seeds it gets wrong are the parents, and the share it gets right is an accuracy estimate that needs no test set.
- confidence: the student's log-probability of each seed's gold answer (of the label's tokens; per token for math);
  of the seeds answered right, the least confident join the parents (as many as `select.confidence_quantile` of
  all the seeds) — from the trained student, or with out_of_fold+confidence from the held-out predictions.
- spread (select.spread, with any of the above): the teacher gets as many requests as the chosen seeds would
  (teacher.samples_per_wrong each), dealt over the labels in the seeds' proportions and, within a label, one a seed
  in turn: the chosen ones first, then the label's other seeds, least confident first. Chosen seeds crowd into the
  labels the student confuses, and three children of one seed copy its names (docs/results.md, SNIPS); spreading
  keeps the training set's label shares and gives each child its own parent. With select.spread_by=errors the
  labels keep the chosen seeds' shares instead (on TREC the seeds' shares sent numeric, a label the student already
  gets right, its full share of requests) and only the parents within a label are spread. Neither measured better
  than not spreading (seeds on SNIPS and TREC, errors on TREC; docs/results.md), so spread is off.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from typing import Literal

from llm2llm.config import SelectConfig
from llm2llm.data import Example


def stratified_folds(seeds: list[Example], k: int, seed: int) -> list[list[str]]:
    """k lists of seed ids: each label's seeds shuffled (seeded) and dealt in turn, so every fold has every label
    in proportion and fold sizes differ by at most one; every seed is held out exactly once."""
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = defaultdict(list)
    for example in seeds:
        by_label[example.label].append(example.id)
    folds: list[list[str]] = [[] for _ in range(min(k, len(seeds)))]
    turn = 0
    for label in sorted(by_label):
        ids = by_label[label]
        rng.shuffle(ids)
        for ident in ids:
            folds[turn % len(folds)].append(ident)
            turn += 1
    return folds


def root_seed(example: Example, by_id: dict[str, Example]) -> str:
    """The seed an example descends from, following parent_id (generated examples can be parents with augment.source=all)."""
    seen = set()
    while example.parent_id is not None and example.parent_id in by_id and example.id not in seen:
        seen.add(example.id)
        example = by_id[example.parent_id]
    return example.parent_id if example.parent_id is not None and example.parent_id not in by_id else example.id


def without_fold(train_set: list[Example], held_out: set[str]) -> list[Example]:
    """D_i without the held-out seeds and without every example descended from one of them."""
    by_id = {example.id: example for example in train_set}
    return [example for example in train_set if root_seed(example, by_id) not in held_out]


def choose_parents(config: SelectConfig, seeds: list[Example], predictions: dict[str, dict],
                   trained: dict[str, dict] | None = None) -> list[tuple[Example, str]]:
    """(seed, reason) for each parent, in seed order: 'wrong'; with select.with_train_errors, 'wrong_after_training'
    for the seeds the trained student (`trained`: its rows) gets wrong though their fold's student got them right;
    or 'low_confidence' for the least confident seeds answered right. At most
    select.max_parents, in that order of reasons and the least confident first within each. `predictions` maps a
    seed id to its row (correct, gold_logprob) from the trained student (train_errors, confidence) or from its fold's
    student (out_of_fold, out_of_fold+confidence)."""
    def confidence(example: Example) -> float:
        value = predictions[example.id].get("gold_logprob")
        return -math.inf if value is None else value

    reasons = {example.id: "wrong" for example in seeds if not predictions[example.id]["correct"]}
    if config.with_train_errors and trained is not None:  # without folds `trained` is `predictions`: adds none
        reasons |= {e.id: "wrong_after_training" for e in seeds if e.id not in reasons and not trained[e.id]["correct"]}
    if config.by in ("confidence", "out_of_fold+confidence"):
        # A share of all the seeds, taken from those answered right: out of fold, where a third or more are wrong,
        # the least probable seeds are nearly all wrong ones already (on TREC-60 the 12 least probable of 60 were
        # among the 23 errors), so counting them in would add no parent.
        right = sorted((example for example in seeds if example.id not in reasons), key=confidence)
        for example in right[: math.ceil(config.confidence_quantile * len(seeds))]:
            reasons[example.id] = "low_confidence"
    rank = {"wrong": 0, "wrong_after_training": 1, "low_confidence": 2}
    ranked = sorted((e for e in seeds if e.id in reasons), key=lambda e: (rank[reasons[e.id]], confidence(e)))
    kept = {example.id for example in ranked[: config.max_parents]}
    return [(example, reasons[example.id]) for example in seeds if example.id in kept]


def spread(seeds: list[Example], chosen: list[tuple[Example, str]], predictions: dict[str, dict],
           per_parent: int, by: Literal["seeds", "errors"] = "seeds") -> list[tuple[Example, str, int]]:
    """(seed, reason, requests) for select.spread, in seed order: per_parent * len(chosen) requests dealt over the
    labels in proportion to their seed counts (by='seeds') or their chosen seeds (by='errors'; largest remainder, ties
    to the larger label), then within each label one request a seed in turn: the chosen seeds first (wrong, then
    unsure), then the label's other seeds ('spread'), least confident first within each. A label's share beyond its
    seeds goes round again."""
    total = per_parent * len(chosen)
    if not total:
        return []
    by_label: dict[str, list[Example]] = defaultdict(list)
    for example in seeds:
        by_label[example.label].append(example)
    weight = (Counter(example.label for example, _ in chosen) if by == "errors"
              else {label: len(members) for label, members in by_label.items()})
    exact = {label: total * weight.get(label, 0) / sum(weight.values()) for label in by_label}
    shares = {label: math.floor(value) for label, value in exact.items()}
    for label in sorted(exact, key=lambda lab: (shares[lab] - exact[lab], -len(by_label[lab]), lab))[: total - sum(shares.values())]:
        shares[label] += 1
    reasons = {example.id: reason for example, reason in chosen}

    def order(example: Example) -> tuple:  # chosen (wrong, then unsure) before the rest; least confident first
        value = predictions.get(example.id, {}).get("gold_logprob")
        return (example.id not in reasons, reasons.get(example.id) != "wrong", -math.inf if value is None else value)

    requests: Counter[str] = Counter()
    for label, members in by_label.items():
        ranked = sorted(members, key=order)
        for turn in range(shares[label]):
            requests[ranked[turn % len(ranked)].id] += 1
    return [(example, reasons.get(example.id, "spread"), requests[example.id]) for example in seeds if requests[example.id]]


def choose_with_requests(config: SelectConfig, seeds: list[Example], predictions: dict[str, dict], per_parent: int,
                         trained: dict[str, dict] | None = None) -> tuple[list[tuple[Example, str]], dict[str, int]]:
    """choose_parents, and with select.spread the requests it dealt (parent id → count; empty without it)."""
    chosen = choose_parents(config, seeds, predictions, trained)
    if not config.spread:
        return chosen, {}
    dealt = spread(seeds, chosen, predictions, per_parent, config.spread_by)
    return [(example, reason) for example, reason, _ in dealt], {example.id: n for example, _, n in dealt}


def summary(chosen: list[tuple[Example, str]]) -> dict[str, int]:
    return dict(Counter(reason for _, reason in chosen))
