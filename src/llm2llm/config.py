"""Typed experiment config: YAML first, then `key.sub=value` overrides; unknown keys are errors naming the key.

The defaults run offline: the bundled SmolLM2-135M student (LoRA), a bundled Qwen2.5-Coder teacher served
locally, and the bundled support-ticket data. `llm2llm demo` runs configs/demo.yaml, which is packaged.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llm2llm.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaskConfig(_Section):
    type: str = Field("classification", description="Task type: a key of llm2llm.tasks.TASKS or 'package.module:Class'.")
    description: str = Field(
        "Route a customer support ticket to the team that should handle it.",
        description="One sentence saying what the task is; shown to the student and the teacher.",
    )
    labels: list[str] | None = Field(
        None, description="Classification labels. None: inferred from the seed file (sorted)."
    )
    teacher_context_examples: int = Field(
        3, ge=0, description="Other seed examples with the same answer shown to the teacher as context."
    )
    teacher_contrast_examples: int = Field(
        0, ge=0, description="classification: seed examples of the label the student answered instead, shown to the "
        "teacher after the same-label examples, so it sees both sides of the confusion it is asked to write across. "
        "Only where the student's answer is shown (teacher.show_student_answer). 0: none; on TREC-60, 3 kept fewer examples "
        "(the teacher copied the seed more) and gained nothing (-0.4 points [-4.5, +3.8]; docs/results.md).",
    )
    teacher_keep_form: bool | None = Field(
        None, description="classification: ask the teacher to keep the misclassified example's form (its opening "
        "words, sentence type, length) and change its subject and details, instead of new wording. A small teacher "
        "told to reword writes a textbook example of the label (on TREC, 'Describe ...' for a 'What is ...?' "
        "description question). None: on, except in the paper's loop (select.by=train_errors) and the baselines "
        "(augment.method other than llm2llm), which ask for new wording.",
    )
    teacher_keep_opening: bool = Field(
        False, description="classification: name the misclassified example's first word in the request ('... "
        "beginning with \"What\"') and reject an example that begins otherwise (opening_changed). Off: on TREC-60 the "
        "bundled teacher kept the word but not the skill, and its verifier rejected more, so fewer examples were "
        "kept (-3.4 points [-9.8, +3.0] against the default loop; docs/results.md). For a stronger teacher.",
    )


class ColumnsConfig(_Section):
    """One file's column names where they differ from the seed file's (a CSV of seeds beside a JSONL test set)."""

    text: str | None = Field(None, description="Column holding the input text (None: the seed file's, data.text_field).")
    label: str | None = Field(None, description="Column holding the label or answer (None: data.label_field).")
    choices: str | None = Field(None, description="multiple_choice: column holding the choices (None: data.choices_field).")
    id: str | None = Field(None, description="Column with a stable example id (None: data.id_field; the pool: ids from content).")


class DataConfig(_Section):
    seed_path: str = Field(
        "demo:seeds.jsonl",
        description="Seed set D0: a .jsonl or .csv path, 'demo:<file>', or 'hf:<dataset id>@<split>' (Hugging Face datasets). "
        "Relative paths in a config file (data, pool, model paths) are read from the config file's folder; in a "
        "command-line override, from the working directory.",
    )
    test_path: str | None = Field("demo:test.jsonl", description="Test set for the final evaluation (None: skip).")
    text_field: str = Field("text", description="Column holding the input text (question, prompt); the test file's too, unless data.test_columns.text.")
    label_field: str = Field("label", description="Column holding the label or answer; the test file's too, unless data.test_columns.label.")
    choices_field: str | None = Field(None, description="multiple_choice: column holding the list of choices.")
    id_field: str | None = Field(None, description="Column with a stable example id (None: derived from content).")
    test_columns: ColumnsConfig = Field(default_factory=ColumnsConfig)
    hf_subset: str | None = Field(None, description="hf: sources: the dataset's configuration/subset name (e.g. 'main' for gsm8k).")
    seed_limit: int | None = Field(None, ge=1, description="Use only the first N seed rows.")
    test_limit: int | None = Field(None, ge=1, description="Use only the first N test rows.")
    truncate: bool = Field(
        False, description="Seed and test rows longer than student.max_length tokens (prompt and answer): false, an error "
        "listing them with file:line and token count; true, their text is shortened (the middle cut out) to fit.",
    )


class LoraConfig(_Section):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: str | list[str] = Field("all-linear", description="Modules to adapt ('all-linear' or names).")


class StudentConfig(_Section):
    type: str = Field("hf", description="Student backend: a key of llm2llm.students.STUDENTS or 'package.module:Class'.")
    model: str = Field(
        "smollm2-135m-instruct",
        description="Base weights: a Hugging Face id or folder, a local .gguf file, or a bundled alias.",
    )
    finetune: Literal["lora", "full"] = Field("lora", description="LoRA adapters or all weights.")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    epochs: int = Field(5, ge=1, description="Passes over D_i per iteration.")
    batch_size: int = Field(8, ge=1, description="Examples per optimizer step, over all processes: with several (accelerate "
                            "launch, --processes) each computes a share of every batch, and the weights are those of one process.")
    learning_rate: float | None = Field(
        None, gt=0, description="Peak learning rate, linear warm-up then decay. None: 1e-3 for LoRA, 5e-5 for full."
    )
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0)
    max_length: int = Field(512, ge=16, description="Longest prompt+target in tokens; longer prompts are cut on the left.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weights dtype. auto: bfloat16 where the device supports it, else float32."
    )
    eval_batch_size: int = Field(16, ge=1, description="Prompts per batch in prediction.")
    plain_forward: bool = Field(
        False, description="Train on every row in full, vocabulary head at every position. Off: the task's shared prompt "
        "prefix runs once per batch and the head only at target positions (same loss, 2-3x faster), and the gradient clip "
        "rides in the optimizer step; on: the path before that work, for speed comparisons.",
    )
    num_threads: int | None = Field(None, ge=1, description="CPU threads for torch (None: all cores).")
    keep_checkpoints: Literal["all", "last", "none"] = Field(
        "last", description="Student weights kept per iteration: all; the latest (and the best by out-of-fold accuracy, "
        "where there is one); or none after evaluation."
    )
    folds_side_by_side: bool = Field(
        True, description="With several processes: train the out-of-fold students of an iteration side by side, one per "
        "process on its own device, each exactly as one process would. Off, or under FSDP: one after another, each "
        "across all processes.",
    )
    continue_training: bool = Field(
        False, description="Ablation (paper Table 5): fine-tune each iteration from the previous iteration's student "
        "instead of the base weights. Off, as in the paper: from the base weights every time.",
    )


class TeacherConfig(_Section):
    type: str = Field("local", description="'local' (GGUF served on 127.0.0.1), 'openai' (any compatible endpoint), 'hf' (in-process), or 'package.module:Class'.")
    model: str = Field(
        "qwen2.5-coder-1.5b-instruct",
        description="local: a .gguf path or bundled alias; openai: the served model name; hf: like student.model.",
    )
    base_url: str | None = Field(None, description="openai: endpoint (None: https://api.openai.com/v1; vLLM e.g. http://localhost:8000/v1).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key (never stored).")
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, ge=1, description="Longest teacher reply; longer replies are rejected as truncated.")
    samples_per_wrong: int | None = Field(
        None, ge=1, description="New examples asked for per selected seed example per iteration. None: 6, except in the "
        "paper's loop (select.by=train_errors), which asks for 1. On TREC-60 6 beat 3 by +5.4 points [+2.0, +8.8] "
        "(5 paired repeats; docs/results.md): the loop's gain grows with what the teacher writes.",
    )
    show_student_answer: bool | None = Field(
        None, description="Tell the teacher what the student answered instead (the confusion to teach). None: on, "
        "except with select.by=train_errors, the paper's loop, whose prompt shows only the example and its answer.",
    )
    max_concurrency: int = Field(1, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(300, gt=0, description="Seconds to wait for one reply.")
    max_retries: int = Field(3, ge=0, description="Retries on connection errors, timeouts, 429, 5xx and malformed replies.")
    retry_wait_s: float = Field(1.0, gt=0, description="First retry waits up to this many seconds; the bound doubles per retry (random jitter).")
    retry_max_wait_s: float = Field(60.0, gt=0, description="Longest wait before a retry, also the cap on a server's Retry-After.")
    max_failure_ratio: float = Field(
        0.5, ge=0, le=1,
        description="Stop the run when more than this share of a batch's requests still fail after their retries "
        "(a dead endpoint should not turn into a round of request_failed rejections). Finished replies stay cached.",
    )
    n_ctx: int = Field(4096, ge=256, description="local: context tokens per request slot.")
    price_input_per_1m: float | None = Field(None, ge=0, description="Price per million prompt tokens (any currency); with the output price, metrics and the report show cost.")
    price_output_per_1m: float | None = Field(None, ge=0, description="Price per million completion tokens.")


class LoopConfig(_Section):
    iterations: int = Field(
        2, ge=1, description="Fine-tunes of the student (paper Alg. 1): iteration 0 trains on the seeds alone, each later one on D_i."
    )
    patience: int | None = Field(
        None, ge=1, description="Stop when seed accuracy has not beaten its earlier best for this many iterations (None: never). "
        "The loop always stops once no seed example is wrong.",
    )


class SelectConfig(_Section):
    by: Literal["train_errors", "out_of_fold", "confidence", "out_of_fold+confidence"] = Field(
        "out_of_fold",
        description="Which seed examples the teacher writes from. train_errors (the paper's loop, with "
        "teacher.samples_per_wrong=1 and the paper's prompt unless those are set): those the student gets wrong "
        "after training on them. out_of_fold: those wrong when held out (k students, each trained without a fold of "
        "seeds and the examples made from them). confidence: train_errors plus the seeds whose gold answer gets the "
        "lowest probability. out_of_fold+confidence: the out-of-fold errors plus the lowest out-of-fold probabilities.",
    )
    folds: int = Field(3, ge=2, description="out_of_fold: k, the folds the seeds are split into (stratified by label); "
                       "each costs one fine-tune on (k-1)/k of D_i per iteration.")
    confidence_quantile: float = Field(
        0.2, gt=0, lt=1, description="confidence: as many seeds as this share of them, those answered right whose "
        "gold answer is least probable, become parents beside the wrong ones.",
    )
    max_parents: int | None = Field(
        None, ge=1, description="At most this many parents per iteration (wrong ones first, then least confident).",
    )
    spread: bool = Field(
        False, description="Deal the teacher's requests (teacher.samples_per_wrong for each chosen seed) over the labels "
        "in the seeds' proportions and, within a label, one a seed in turn: the chosen seeds first, then the label's "
        "others, least confident first. Keeps the training set's label shares; each child gets its own parent.",
    )
    spread_by: Literal["seeds", "errors"] = Field(
        "seeds", description="select.spread: the label shares it deals in. seeds: the seeds' own (every label gets "
        "children); errors: the chosen seeds' (the labels the student gets wrong, as without select.spread, but each "
        "request to another seed of the label once every chosen one has one).",
    )
    with_train_errors: bool = Field(
        False, description="out_of_fold: also choose the seeds the iteration's student gets wrong after training on "
        "them (the paper's signal) where their fold's student got them right: the labels the trained student leans "
        "away from. train_errors and confidence choose them already.",
    )
    estimate_every_iteration: bool = Field(
        True, description="out_of_fold: also train the folds of the last iteration, so every iteration has an "
        "out-of-fold accuracy and the best iteration can be named (off: the last iteration skips them).",
    )


class EvalConfig(_Section):
    test_every_iteration: bool = Field(False, description="Also evaluate each iteration's student on the test set (the last one always is).")
    predict: Literal["auto", "score", "generate"] = Field(
        "auto", description="score: the task's known answers (labels, letters) scored after the prompt, teacher-forced, and the one greedy "
        "decoding kept to them would write taken; generate: greedy decoding. auto: score where the task has a known answer set, else generate.",
    )


class QualityConfig(_Section):
    near_duplicate_rouge_l: float = Field(
        0.95, gt=0, le=1,
        description="Reject a generated example whose ROUGE-L F1 with a seed, a D_i example or an earlier one of the "
        "same batch reaches this (paper: 0.95; 1.0 rejects exact duplicates only).",
    )
    min_seed_rouge_l: float = Field(
        0.0, ge=0, lt=1,
        description="Reject a generated example whose ROUGE-L F1 with the seed it was written from is below this "
        "(rejected: unlike_seed): the new example must keep the seed's wording and form, not only its label. "
        "0: off. On TREC the bundled teacher otherwise answers a hard seed with a textbook example of its label.",
    )
    test_overlap_rouge_l: float = Field(
        0.9, gt=0, le=1,
        description="Flag a generated example this similar (ROUGE-L F1) to a test example as possible test contamination. "
        "0.9 flags under 1% of real training rows of the paper's datasets (their verbatim repeats).",
    )
    drop_test_overlap: bool = Field(True, description="Drop flagged examples (rejected: test_overlap); false keeps and only reports them.")
    verify: bool | None = Field(
        None,
        description="Blind check: a verifier answers each new example, shown only seed examples, and the example is kept "
        "only if its answer matches (rejected: label_mismatch). None: on for classification and multiple choice, off "
        "for math (its arithmetic is re-checked instead).",
    )
    verify_examples: int = Field(
        2, ge=0,
        description="Seed examples shown to the verifier: this many per label for classification, this many in all otherwise.",
    )
    verifier: TeacherConfig | None = Field(
        None, description="Verifier model, with the teacher's keys (quality.verifier.model=...). None: the teacher, asked greedily."
    )
    match_seed_form: bool = Field(
        False,
        description="Give each teacher example the surface form (nearly) every seed has: lower case where 95% of the "
        "seeds are, no punctuation where 95% of them have none, an apostrophe then parting words (\"i d like\") or joining "
        "them as the seeds' contractions do (generate.py, quality.SurfaceForm). Off changes nothing.",
    )
    max_reply_ratio: float = Field(
        4.0, gt=0,
        description="Reject a teacher reply longer than this many times the longest seed example (characters of text, "
        "answer and choices, plus 200 for the reply's field names; rejected: too_long), so a runaway reply never trains.",
    )


class AugmentConfig(_Section):
    method: Literal["llm2llm", "auggpt", "eda", "more_data"] = Field(
        "llm2llm",
        description="llm2llm: the loop. Baselines that train once on the seeds plus `count` examples made without the loop: "
        "auggpt (the teacher writes from every seed, not just wrong ones), eda (synonym replacement, insertion, swap, "
        "deletion; classification), more_data (real examples drawn from pool_path).",
    )
    count: int | None = Field(
        None, ge=1, description="Examples to add for the baselines and one_shot (`llm2llm compare` sets it to what the loop added).",
    )
    one_shot: bool = Field(
        False, description="Ablation (paper Table 4): make all `count` examples from iteration 0's wrong seeds at once, "
        "then train once more (needs loop.iterations=2).",
    )
    source: Literal["seed", "all"] = Field(
        "seed", description="Ablation (paper Table 6): find wrong examples among the seeds only, or among all of D_i "
        "(generated ones too, which then become parents).",
    )
    pool_path: str | None = Field(
        None, description="more_data: file of extra real examples (the seed file's columns, unless augment.pool_columns); "
        "rows whose text is in the seed or test set are skipped.",
    )
    pool_columns: ColumnsConfig = Field(default_factory=ColumnsConfig)
    eda_alpha: float = Field(0.1, gt=0, le=0.5, description="eda: share of a sentence's words each operation changes (EDA paper: 0.1).")
    max_rounds: int = Field(
        3, ge=1, description="auggpt/one_shot: rounds of asking again for the shortfall when validation rejects replies.",
    )


class BudgetConfig(_Section):
    max_teacher_tokens: int | None = Field(
        None, ge=1, description="Stop before a generate stage once the run's teacher tokens (prompt + completion, verification "
        "included) reach this; raise it and run again to continue. One stage may overshoot.",
    )
    max_cost: float | None = Field(None, gt=0, description="The same, in cost; needs teacher.price_input_per_1m and price_output_per_1m.")


# The keys whose value select.by implies when left at None (Config._paper_or_ours): the paper's loop, and ours.
PAPER_LOOP = {"teacher": {"samples_per_wrong": 1}, "task": {"teacher_keep_form": False}}
OUR_LOOP = {"teacher": {"samples_per_wrong": 6}, "task": {"teacher_keep_form": True}}


class Config(_Section):
    name: str = Field("demo", description="Run name: the run lives in <output_dir>/<name>/.")
    output_dir: str = Field("runs", description="Parent folder of run directories; relative to the working directory, even in a config file.")
    seed: int = Field(0, description="Seed for shuffling, adapter init and teacher sampling.")
    task: TaskConfig = Field(default_factory=TaskConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list,
        description="Experiment trackers that get the config, each iteration's metrics and the training loss per step, "
        "as in transformers' report_to: tensorboard (event files in <run>/tensorboard), wandb (offline files in <run>/wandb "
        "unless WANDB_MODE or WANDB_API_KEY says online), mlflow (MLFLOW_TRACKING_URI, else a local store <run>/mlflow.db). "
        "Each needs its package: pip install 'llm2llm[tensorboard]' (or [wandb], [mlflow]).",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _tracker_names(cls, value: Any) -> Any:
        # transformers takes report_to="wandb" as well as a list; "none" and "" mean no tracker.
        if isinstance(value, str):
            value = [name.strip() for name in value.split(",") if name.strip() not in ("", "none")]
        return list(dict.fromkeys(value)) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _paper_or_ours(self) -> "Config":
        """What select.by implies where a key is left at None: the loop that wins here (out-of-fold errors, 6 requests
        a parent, the seed's form kept), or with select.by=train_errors the paper's loop (1 request, new wording).
        Resolved once, here, so a run's config.yaml says what it did."""
        paper = self.select.by == "train_errors" or self.augment.method != "llm2llm"
        for section, keys in (PAPER_LOOP if paper else OUR_LOOP).items():
            for key, value in keys.items():
                if getattr(getattr(self, section), key) is None:
                    setattr(getattr(self, section), key, value)
        return self

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        if self.budget.max_cost is not None and None in (self.teacher.price_input_per_1m, self.teacher.price_output_per_1m):
            raise ValueError("budget.max_cost needs teacher.price_input_per_1m and teacher.price_output_per_1m")
        augment = self.augment
        if augment.method != "llm2llm":
            if augment.count is None:
                raise ValueError(f"augment.method={augment.method} needs augment.count (how many examples to add)")
            if self.loop.iterations != 1:
                raise ValueError(f"augment.method={augment.method} trains once on the seeds plus its examples: set loop.iterations=1")
            if augment.one_shot or self.student.continue_training:
                raise ValueError("augment.one_shot and student.continue_training are switches of augment.method=llm2llm")
        if augment.method == "more_data" and not augment.pool_path:
            raise ValueError("augment.method=more_data needs augment.pool_path (a file of real examples to draw from)")
        if augment.one_shot and (augment.count is None or self.loop.iterations != 2):
            raise ValueError("augment.one_shot makes all examples in iteration 0 and trains once more: set augment.count and loop.iterations=2")
        if self.student.continue_training and self.student.keep_checkpoints == "none":
            raise ValueError("student.continue_training starts from the previous iteration's student: student.keep_checkpoints cannot be none")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def file_columns(data: DataConfig, own: ColumnsConfig | None = None) -> dict[str, str | None]:
    """load_examples' column arguments for one file: its own names where `own` sets them, else the seed file's."""
    own = own or ColumnsConfig()
    return {"text_field": own.text or data.text_field, "label_field": own.label or data.label_field,
            "choices_field": own.choices or data.choices_field, "id_field": own.id or data.id_field}


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read YAML (or start from the defaults), apply `a.b=value` overrides, validate, make paths absolute."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            raw = yaml.load(text, Loader=_StrictLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
        if raw is None:  # an empty file (or comments only) is a mistake, not a request for the defaults
            raise ConfigError(
                f"{path}: the config file is empty. Run `llm2llm demo` for the built-in demo, or copy a file from "
                "configs/ (configs/demo.yaml is the demo's) and edit it"
            )
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
        _relative_to_file(raw, Path(path).resolve().parent)
    for override in overrides:
        _apply_override(raw, override)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, source)) from None
    return _absolute_paths(config)


# Input paths a config file names are read from the config file's folder, so a config runs from any directory;
# command-line overrides and output_dir stay relative to the working directory (runs/ is made where you are).
_FILE_PATHS = (("data", "seed_path"), ("data", "test_path"), ("augment", "pool_path"))
_MODEL_PATHS = (("student", "model"), ("teacher", "model"), ("quality", "verifier", "model"))


def _relative_to_file(raw: dict[str, Any], folder: Path) -> None:
    def place(keys: tuple[str, ...], only_existing: bool) -> None:
        node = raw
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        value = node.get(keys[-1]) if isinstance(node, dict) else None
        if not isinstance(value, str) or not value or _is_reference(value) or Path(value).expanduser().is_absolute():
            return
        candidate = folder / value
        # A model may be a Hugging Face id or a bundled alias: it is a path only when the file or folder is there.
        if not only_existing or candidate.exists():
            node[keys[-1]] = str(candidate)

    for keys in _FILE_PATHS:
        place(keys, only_existing=False)
    for keys in _MODEL_PATHS:
        place(keys, only_existing=True)


def _is_reference(value: str) -> bool:
    """'demo:seeds.jsonl', 'hf:openai/gsm8k@train' and the like, not paths."""
    return ":" in value.split("/")[0] and not Path(value).exists()


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<: *defaults' merges may be overridden by the keys beside them
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                continue  # an unhashable key: the base class reports it
            if key in first_line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {first_line[key]}); keep one", key_node.start_mark
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} is not of the form key.sub=value")
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part!r} is a value, not a section")
        node = child
    # YAML parsing gives 'true' -> True, '3' -> 3, 'null' -> None, '[a, b]' -> list, like in the file.
    node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""


def _describe_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        if not key:  # a rule across keys (model validator)
            lines.append(f"  {error['msg'].removeprefix('Value error, ')}")
        elif error["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key{_did_you_mean(key)} (`llm2llm config --keys` lists them)")
        else:
            lines.append(f"  {key}: {error['msg']} (got {error.get('input')!r})")
    return "\n".join(lines)


def _did_you_mean(key: str) -> str:
    """'; did you mean student.learning_rate?' for the closest real key or section: the same name in another
    section first ('student.iterations' -> loop.iterations), then a close spelling of the whole key, then of its name."""
    known = _every_key(Config)
    known += sorted({name.rpartition(".")[0] for name in known} - {""})  # sections: 'student.lorra' -> student.lora
    leaf = key.rpartition(".")[2]
    by_leaf: dict[str, list[str]] = {}
    for name in known:
        by_leaf.setdefault(name.rpartition(".")[2], []).append(name)
    close = by_leaf.get(leaf) or difflib.get_close_matches(key, known, n=1, cutoff=0.75) or [
        name for match in difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.8) for name in by_leaf[match]]
    return f"; did you mean {' or '.join(close[:2])}?" if close else ""


def _every_key(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted names of every field, inside optional sections too (quality.verifier.model)."""
    names = []
    for name, field in model.model_fields.items():
        sections = [t for t in (field.annotation, *get_args(field.annotation)) if isinstance(t, type) and issubclass(t, BaseModel)]
        names += _every_key(sections[0], f"{prefix}{name}.") if sections else [f"{prefix}{name}"]
    return names


def _absolute_paths(config: Config) -> Config:
    def absolute(value: str | None) -> str | None:
        if value is None or _is_reference(value):
            return value  # 'demo:x', 'hf:x' and similar references stay as written
        return str(Path(value).expanduser().resolve())

    config.data.seed_path = absolute(config.data.seed_path)
    config.data.test_path = absolute(config.data.test_path)
    config.augment.pool_path = absolute(config.augment.pool_path)
    config.output_dir = absolute(config.output_dir)
    for section in (config.student, config.teacher, config.quality.verifier):
        if section is not None and Path(section.model).expanduser().exists():
            section.model = str(Path(section.model).expanduser().resolve())
    return config


def config_to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def config_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every field: the reference behind `llm2llm config`."""
    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(config_keys(annotation, f"{prefix}{name}."))
        else:
            rows.append((f"{prefix}{name}", repr(field.get_default(call_default_factory=True)), field.description or ""))
    return rows


def key_reference(config: Config) -> list[tuple[str, str, str | None, str]]:
    """(dotted key, default, `config`'s value where it differs from the default, description) for every field:
    what `llm2llm config --keys` shows, so a user sees which defaults their config (or the demo) replaces."""
    defaults = load_config()  # resolved like `config` (paths made absolute), so only real differences show
    rows = []
    for key, default, description in config_keys():
        value, default_value = config, defaults
        for part in key.split("."):
            value, default_value = getattr(value, part), getattr(default_value, part)
        rows.append((key, default, None if value == default_value else repr(value), description))
    return rows
