"""The chosen iteration's student as a standard Hugging Face model folder, which `AutoModelForCausalLM.from_pretrained`
opens with nothing from llm2llm installed:

    config.json, model.safetensors   the weights: a LoRA student merged into its base weights (the default), or a full
                                     fine-tune, in the dtype the run evaluated them in
    adapter_config.json, ...         with --adapter instead: the LoRA adapter alone (transformers loads it onto its base
                                     through peft; the base is named by its path or Hub id)
    tokenizer files, chat template   the tokenizer the student was trained with
    generation_config.json           greedy decoding up to the task's answer length, as the run evaluated
    llm2llm.json                     the task: its prompt, labels, and how the run read answers
    README.md                        model card: what it was trained on, its accuracy per iteration, how to prompt it

The weights are those the run evaluated (HFStudent._load_trained: an adapter merged into the same base weights), so
the folder reproduces the run's seed predictions (tests/test_export.py checks it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from llm2llm import markdown as tables
from llm2llm.config import Config
from llm2llm.errors import ExportError
from llm2llm.finished import Chosen, run_seeds, run_task
from llm2llm.runstore import RunStore

# Hub ids of bundled students, for the card's `base_model` (the bundled weights are a dequantized GGUF of these).
UPSTREAM = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def check_exportable(config: Config, source: Path, adapter: bool) -> None:
    """ExportError when the student in `source` cannot be written as asked (checked before anything is written)."""
    if config.student.type != "hf":
        raise ExportError(f"student.type={config.student.type}: export writes Hugging Face students only; export the "
                          "dataset alone with --no-student")
    if adapter and not (source / "adapter_config.json").is_file():
        raise ExportError(f"--adapter: {source} holds a full fine-tune (student.finetune=full), not a LoRA adapter; "
                          "export it without --adapter")


def export_student(store: RunStore, config: Config, chosen: Chosen, source: Path, out: Path, *, adapter: bool = False) -> dict[str, Any]:
    """Write the student in `source` as a model folder at `out`; return what the manifest records."""
    from transformers import AutoTokenizer, GenerationConfig

    from llm2llm.students.hf import HFStudent

    task = run_task(store, config)
    out.mkdir(parents=True)
    if adapter:
        for path in source.iterdir():
            if path.is_file() and path.name != "train_log.jsonl":
                shutil.copy2(path, out / path.name)
        tokenizer = AutoTokenizer.from_pretrained(source)
        base = json.loads((source / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
        model = None
    else:
        model, tokenizer = HFStudent(config.student, config.seed)._load_trained(source)
        base = None
    if not tokenizer.chat_template:  # a base model without one: the plain prompt the student was trained on, as a template
        tokenizer.chat_template = plain_template(tokenizer)
    generation = GenerationConfig(do_sample=False, max_new_tokens=task.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                  eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    if model is not None:
        model.generation_config = generation
        model.save_pretrained(out)
    generation.save_pretrained(out)
    tokenizer.save_pretrained(out)
    seed = run_seeds(store)[0]
    scored = bool(task.answer_choices(seed)) and config.eval.predict != "generate"
    info = {
        "iteration": chosen.iteration, "chosen": chosen.why, "format": "lora adapter" if adapter else
        "merged lora" if (source / "adapter_config.json").is_file() else "full fine-tune",
        "task": config.task.model_dump(mode="json"), "labels": getattr(task, "labels", None),
        "prompt": task.student_messages(seed), "predict": "score" if scored else "generate",
        "max_new_tokens": task.max_new_tokens, "base_model": base or config.student.model,
    }
    (out / "llm2llm.json").write_text(json.dumps(info, indent=1, ensure_ascii=False), encoding="utf-8")
    (out / "README.md").write_text(model_card(store, config, chosen, info, adapter), encoding="utf-8")
    return {key: info[key] for key in ("format", "predict", "base_model")}


def plain_template(tokenizer) -> str:
    """A chat template that renders messages as students/hf.encode_prompt does for a tokenizer without one: the
    messages' contents joined by blank lines, then 'Answer: ' (and the tokenizer's BOS where it adds one)."""
    with_special, without = tokenizer("a", add_special_tokens=True).input_ids, tokenizer("a", add_special_tokens=False).input_ids
    bos = "{{ bos_token }}" if len(with_special) > len(without) and with_special[0] == tokenizer.bos_token_id else ""
    return (bos + "{% for message in messages %}{{ message['content'] }}{% if not loop.last %}\n\n{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}\n\nAnswer: {% endif %}")


def model_card(store: RunStore, config: Config, chosen: Chosen, info: dict[str, Any], adapter: bool) -> str:
    student, i = config.student, chosen.iteration
    base = UPSTREAM.get(student.model) or (student.model if "/" in student.model and not Path(student.model).exists() else None)
    metrics = [store.metrics(j) for j in store.iterations() if "seed_accuracy" in store.metrics(j)]
    trained = store.metrics(i)
    seeds = len(run_seeds(store))
    lines = ["---", f"library_name: {'peft' if adapter else 'transformers'}", *([f"base_model: {base}"] if base else []),
             "pipeline_tag: text-generation", "tags:", "- llm2llm", "---", "",
             f"# {config.name}: the student of LLM2LLM iteration {i}", "",
             f"`{student.model}` fine-tuned by the LLM2LLM loop ({info['format']}) on {trained.get('train_examples', '?')} "
             f"examples, {seeds} of them seeds and the rest written by the teacher `{config.teacher.model}`: {chosen.why}. "
             "The training rows, with their lineage, are the dataset exported beside this folder.", ""]
    if adapter:
        lines += [f"This folder holds a LoRA adapter for `{info['base_model']}`; `AutoModelForCausalLM.from_pretrained` "
                  "loads it onto that base when peft is installed. A bundled student's base is a folder on the machine "
                  "that ran the loop (its GGUF weights, dequantized): export without --adapter to share a model that "
                  "stands alone.", ""]
    lines += ["## Accuracy", "", "Seed accuracy is measured on the seeds the student trained on; out-of-fold accuracy on "
              "seeds held out of training (select.by=out_of_fold), and test accuracy on the run's test set.", "",
              tables.table(["iteration", "training rows", "seed", "out-of-fold", "test"], [
                  [f"**{m['iteration']}** (this one)" if m["iteration"] == i else m["iteration"], m.get("train_examples", "—"),
                   _percent(m.get("seed_accuracy")), _percent(m.get("oof_accuracy")), _percent(m.get("test_accuracy"))]
                  for m in metrics]), ""]
    messages = json.dumps(info["prompt"], indent=1, ensure_ascii=False)
    lines += ["## Use", "", "Prompt it as it was trained: the messages below (the task's system message and the text as "
              "the user's), through the tokenizer's chat template. Greedy decoding is this folder's generation config.", "",
              "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
              'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")',
              f"messages = {messages}",
              "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", return_dict=True)",
              "output = model.generate(**inputs)",
              'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))', "```", ""]
    if info["predict"] == "score":
        labels = ", ".join(info["labels"] or []) or "the task's answers"
        lines += [f"The run read the student's answer by scoring each possible answer ({labels}) after the prompt and "
                  "taking the most probable (eval.predict=score), which always gives a valid answer; greedy decoding "
                  "usually agrees. `llm2llm predict RUN_DIR rows.jsonl` labels new rows the run's way.", ""]
    lines += ["## Training", "",
              f"- {student.finetune} fine-tune" + (f" (LoRA r={student.lora.r}, alpha={student.lora.alpha})" if student.finetune == "lora" else "")
              + f", {student.epochs} epochs, batch {student.batch_size}, learning rate "
              f"{student.learning_rate or ('1e-3' if student.finetune == 'lora' else '5e-5')}, at most {student.max_length} tokens",
              f"- Trained from the base weights at every iteration (paper §3.1); seed {config.seed}",
              "- LLM2LLM: Lee et al., 2024, [arXiv 2403.15042](https://arxiv.org/abs/2403.15042)", ""]
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"
