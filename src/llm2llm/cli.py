"""Command line: `llm2llm run|demo|compare|estimate|status|report|export|predict|config|models`. Exit codes are decided here and only here.

0 success · 2 a problem the user can fix (config, data, model, teacher refusal, changed run) · 130 interrupted
(run the same command again to resume) · 1 an internal error (traceback written to a log file, not the screen).
"""

from __future__ import annotations

import shlex
import sys
import traceback
import warnings
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from llm2llm.errors import Llm2llmError, Llm2llmWarning

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="LLM2LLM: fine-tune a student, find the seed examples it gets wrong, have a teacher write more like them, repeat.",
)
console = Console()
err_console = Console(stderr=True)
PIPED_WIDTH = 200  # a table printed to a file or pipe (a log, CI) is laid out this wide, not cut to 80 columns


def _print_table(table) -> None:
    """A table on stdout: as wide as the terminal, or, written to a file or pipe, as wide as it needs (up to PIPED_WIDTH):
    rich lays out a non-terminal at 80 columns and cuts the numbers to "70.…"."""
    (console if console.is_terminal else Console(width=PIPED_WIDTH)).print(table)  # print(width=) cannot widen it


OVERRIDES = typer.Argument(None, help="key.sub=value overrides, e.g. loop.iterations=3 student.finetune=full")


def _one_line_warnings(show: Callable[..., None]) -> Callable[..., None]:
    """A warnings.showwarning that prints ours as one `warning:` line (no source location: they are not bug reports)
    and hands the others to `show`."""

    def showwarning(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, Llm2llmWarning):
            err_console.print("[yellow]warning:[/] ", end="")
            err_console.print(str(message), highlight=False, markup=False, soft_wrap=True)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


def _guarded(action: Callable[[], None], log_dir: Path | None = None) -> None:
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            action()
    except Llm2llmError as exc:
        err_console.print("[bold red]error:[/] ", end="")
        # Messages hold paths and [brackets]: no markup, and no wrapping inside a path.
        err_console.print(str(exc), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print("\n[yellow]interrupted.[/] Finished stages are saved; run the same command again to resume.")
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:  # an internal error: keep the screen readable, keep the traceback for the bug report
        from llm2llm.errorlog import write_error_log

        trace = traceback.format_exc()
        log = write_error_log(trace, log_dir)
        err_console.print("[bold red]internal error:[/] ", end="")
        err_console.print(f"{type(exc).__name__}: {exc}", highlight=False, markup=False, soft_wrap=True)
        if log is not None:
            err_console.print(f"The full traceback is in {log}; please include it in a bug report.", highlight=False,
                              markup=False, soft_wrap=True)
        else:  # no file could take it: show it rather than lose it
            err_console.print("No log file could be written; the traceback, for a bug report:", highlight=False)
            err_console.print(trace, highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _quiet_transformers() -> None:
    # transformers warns about its own deprecated attribute when peft/accelerate read it: not actionable for users.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a bar per weight load/save; ours show the stages instead


def _run(config_path: Optional[Path], overrides: List[str], force: bool, quiet: bool) -> None:
    from llm2llm import report
    from llm2llm.config import load_config
    from llm2llm.distributed import is_main_process
    from llm2llm.loop import run
    from llm2llm.progress import RichUI, SilentUI

    config = load_config(config_path, overrides or [])
    _quiet_transformers()
    main = is_main_process()  # under accelerate launch the others only help it train and predict: they say nothing

    def action() -> None:
        ui = SilentUI() if quiet or not main else RichUI(err_console)
        # User-facing strings (paths, names, labels, install hints) may hold [brackets]: escaped wherever rich
        # prints with markup, or rich takes them for tags and drops them.
        if main:
            err_console.print(f"[bold]llm2llm[/] run [cyan]{escape(str(config.run_dir))}[/]")
        store = run(config, force=force, ui=ui)
        if main:
            _print_table(report.table(store))
            for path in report.write(store):
                console.print(f"wrote {path}", markup=False)

    _guarded(action, config.run_dir if main else None)


def _launch(processes: int, accelerate_config: Optional[Path], command: List[str]) -> None:
    """`llm2llm <command>` again, as `processes` processes under accelerate launch; exit as its main process did."""
    import os
    import subprocess
    import tempfile

    from llm2llm.distributed import launch_command

    with tempfile.TemporaryDirectory(prefix="llm2llm-launch-") as folder:
        exit_file = Path(folder) / "exit_code"
        env = {**os.environ, EXIT_CODE_FILE: str(exit_file)}
        try:
            launcher = subprocess.run(launch_command(processes, accelerate_config, command), env=env)
        except KeyboardInterrupt:  # the processes got it too; the main one says what to do
            raise typer.Exit(130) from None
        told = exit_file.read_text().strip() if exit_file.is_file() else ""
    if told:
        raise typer.Exit(int(told))
    if launcher.returncode != 0:  # the main process died without a word, or a helper failed (its traceback is above)
        err_console.print(f"[bold red]error:[/] one of the {processes} processes failed (the launcher's exit status is "
                          f"{launcher.returncode}); finished stages are saved: run the same command again to resume",
                          highlight=False)
        raise typer.Exit(1)


EXIT_CODE_FILE = "LLM2LLM_EXIT_CODE_FILE"  # where the main process of `--processes N` leaves its exit code


@app.command("run")
def run_command(
    config: Path = typer.Argument(..., help="YAML config (see configs/)."),
    overrides: Optional[List[str]] = OVERRIDES,
    force: bool = typer.Option(False, "--force", help="Resume even though the config changed (finished stages are kept)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    processes: int = typer.Option(1, "--processes", min=1, help="Train and predict with N processes, one per GPU: runs this command under `accelerate launch --num_processes N` (DDP, or FSDP where the accelerate config asks)."),
    accelerate_config: Optional[Path] = typer.Option(None, "--accelerate-config", help="With --processes: the accelerate config file to launch with (default: the one `accelerate config` wrote, if any)."),
) -> None:
    """Run (or resume) the LLM2LLM loop in <output_dir>/<name>/."""
    if processes > 1 or accelerate_config is not None:
        command = ["run", str(config), *(overrides or []), *(["--force"] if force else []), *(["--quiet"] if quiet else [])]
        _guarded(lambda: _launch(processes, accelerate_config, command))
    else:
        _guarded(lambda: _run(config, overrides, force, quiet))


@app.command()
def demo(
    overrides: Optional[List[str]] = OVERRIDES,
    force: bool = typer.Option(False, "--force", help="Resume even though the config changed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """The embedded demo (configs/demo.yaml): bundled SmolLM2-135M student, Qwen2.5-Coder teacher, ticket data."""
    from importlib import resources

    demo_config = Path(str(resources.files("llm2llm") / "demo_data" / "demo.yaml"))
    _guarded(lambda: _run(demo_config, overrides, force, quiet))


@app.command("compare")
def compare_command(
    config: Path = typer.Argument(..., help="YAML config (see configs/)."),
    overrides: Optional[List[str]] = OVERRIDES,
    methods: str = typer.Option(
        "finetune,llm2llm,auggpt,eda,more_data", "--methods",
        help="Comma-separated: finetune, llm2llm, auggpt, eda, more_data, one_shot, source_all, continue_training.",
    ),
    variants: Optional[List[str]] = typer.Option(
        None, "--variant", help="An extra row 'label=method key=value ...', e.g. 'no_verify=llm2llm quality.verify=false'. Repeatable.",
    ),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Runs per method, with seed, seed+1, ..."),
    keep_students: bool = typer.Option(False, "--keep-students", help="Keep each run's trained student (deleted by default once its repeat is done: the table needs none, and each is up to 0.5 GB)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Compare LLM2LLM with baselines and ablations on the same data (mean ± std over repeats); resumable."""

    def action() -> None:
        from rich.table import Table

        from llm2llm import compare as comparison, report
        from llm2llm.loop import run
        from llm2llm.progress import RichUI, SilentUI

        _quiet_transformers()
        ui = SilentUI() if quiet else RichUI(err_console)

        def run_one(settings):
            store = run(settings, ui=ui)
            report.write(store)
            return store

        chosen = [comparison.Method.parse(name.strip()) for name in methods.split(",") if name.strip()]
        chosen += [comparison.Method.parse(spec) for spec in variants or []]
        summary = comparison.compare(config, overrides or [], chosen, repeats, run_one, keep_students=keep_students,
                                     log=lambda line: err_console.print(line, highlight=False, markup=False))
        table = Table(title=escape(f"{config}: {summary['repeats']} repeat(s)"), padding=(0, 1))
        shown = [k for k, header in enumerate(comparison.HEADERS) if header not in ("#seed", "per repeat")]  # all in compare.md
        for k in shown:
            table.add_column(comparison.HEADERS[k], justify="left" if k == 0 else "right", no_wrap=k == 0)
        for row in summary["table"]:
            cells = comparison.cells(row)
            table.add_row(*(escape(cells[k]) for k in shown))
        _print_table(table)
        root = Path(summary["root"])
        console.print(f"wrote {root / 'compare.md'}, {root / 'compare.png'}, {root / 'compare.json'}", markup=False)

    _guarded(action)


@app.command()
def estimate(
    config: Path = typer.Argument(..., help="YAML config (see configs/)."),
    overrides: Optional[List[str]] = OVERRIDES,
) -> None:
    """Forecast teacher requests, tokens and cost for the whole run, before it starts (an upper bound)."""

    def action() -> None:
        from rich.table import Table

        from llm2llm.config import load_config
        from llm2llm.estimate import estimate as forecast

        settings = load_config(config, overrides or [])
        result = forecast(settings)
        table = Table(title=escape(f"{settings.name}: {result['seeds']} seeds · {result['generating_iterations']} generating iterations"))
        for header in ("", "requests", "prompt tokens", "completion tokens"):
            table.add_column(header, justify="right")
        for part in ("generate", "verify"):
            table.add_row(part, *(f"{result[part][key]:,}" for key in ("requests", "prompt_tokens", "completion_tokens")))
        _print_table(table)
        console.print(f"total teacher tokens ≤ {result['total_tokens']:,}"
                      + (f"; cost ≤ {result['cost']:.4f}" if result["cost"] is not None else " (set teacher.price_*_per_1m for a cost)"))
        budget = settings.budget
        if budget.max_teacher_tokens is not None or budget.max_cost is not None:
            console.print(f"budget: max_teacher_tokens={budget.max_teacher_tokens}, max_cost={budget.max_cost}")
        console.print(f"[dim]Assumes {escape(result['assumption'])}.[/]")

    _guarded(action)


@app.command()
def status(run_dir: Path = typer.Argument(..., help="A run directory, e.g. runs/demo, or where `compare` put its runs.")) -> None:
    """Where a run stands: finished stages per iteration and what would run next; a compare's runs, one line each."""

    def action() -> None:
        from llm2llm.compare import compare_runs
        from llm2llm.runstore import RunStore

        # `compare` keeps its runs in <name>/<method>/<run>/, beside a plain `run` of the same name in <name>/.
        runs = compare_runs(run_dir)
        if (run_dir / "config.yaml").is_file() or not runs:
            _print_run_status(RunStore(run_dir), run_dir)
        if runs:
            console.print(f"[bold]{escape(str(run_dir))}[/]: {len(runs)} `llm2llm compare` run(s), table in compare.md")
            for store in runs:
                state = store.state()
                where = escape(str(store.root.relative_to(run_dir)))
                if state.get("finished"):
                    console.print(f"  {where}: [green]finished[/] — {escape(state.get('stop_reason') or '')}")
                else:
                    done = state["iterations"]
                    last = max(done, key=int, default=None)
                    progress = f"iteration {last}, done: {', '.join(done[last])}" if last is not None else "nothing done yet"
                    console.print(f"  {where}: [yellow]not finished[/] ({escape(progress)})")

    _guarded(action)


def _print_run_status(store, run_dir: Path) -> None:
    from llm2llm import report

    config = store.config()
    state = store.state()
    stages = ["finetune", "evaluate", "select", "test", "generate", "append"]
    if config.augment.method != "llm2llm":
        stages = ["augment", "finetune", "evaluate", "test"]  # a baseline: its examples, then one fine-tune
    finished, reason = state.get("finished"), state.get("stop_reason")
    console.print(f"[bold]{escape(str(run_dir))}[/]: {config.loop.iterations} iterations planned; "
                  + ("[green]finished[/]" if finished else "[yellow]not finished[/]")
                  + (f" — {escape(reason)}" if reason else ""))
    # A finished run never runs what it has not done: the last iteration does not generate, a test set is not
    # evaluated every iteration unless asked, and an early stop ends the loop. Those stages are skipped, not pending.
    for iteration in range(config.loop.iterations):
        done = state["iterations"].get(str(iteration), {})
        if finished and not done:
            console.print(f"  iter {iteration}: [dim]skipped (the loop stopped before it)[/]")
            continue
        marks = " ".join(f"[green]{s}✓[/]" if s in done else f"[dim]{s}–[/]" if finished else f"[dim]{s}·[/]" for s in stages)
        console.print(f"  iter {iteration}: {marks}")
    console.print("[dim]✓ done · pending – skipped[/]")
    for iteration in range(config.loop.iterations):
        estimate = state["iterations"].get(str(iteration), {}).get("select", {}).get("oof_accuracy")
        if estimate is not None:
            console.print(f"  iter {iteration}: out-of-fold accuracy {estimate:.1%}", highlight=False)
    if best := report.best_line(store):
        console.print(best, highlight=False, markup=False)
    if not finished:
        console.print(f"Resume with: llm2llm run {run_dir / 'config.yaml'}", markup=False)


@app.command("report")
def report_command(run_dir: Path = typer.Argument(..., help="A run directory, e.g. runs/demo, or where `compare` put its runs.")) -> None:
    """Print the per-iteration table; write report.md, accuracy.png and report.html into the run directory (for a
    comparison: compare.html from compare.json)."""

    def action() -> None:
        import json

        from llm2llm import report, report_html
        from llm2llm.runstore import RunStore

        if not (run_dir / "config.yaml").is_file() and (run_dir / "compare.json").is_file():
            summary = json.loads((run_dir / "compare.json").read_text(encoding="utf-8"))
            console.print(f"wrote {report_html.write_compare(summary, run_dir, run_dir.name)}", markup=False)
            return
        store = RunStore(run_dir)
        _print_table(report.table(store))
        for path in report.write(store):
            console.print(f"wrote {path}", markup=False)

    _guarded(action)


@app.command("export")
def export_command(
    run_dir: Path = typer.Argument(..., help="A finished run directory, e.g. runs/demo."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder to write (default: RUN_DIR/export); an earlier export there is replaced."),
    iteration: Optional[int] = typer.Option(None, "--iteration", help="Export this iteration (default: the run's best by out-of-fold accuracy, else its last)."),
    adapter: bool = typer.Option(False, "--adapter", help="Keep a LoRA student as an adapter rather than merging it into its base weights."),
    no_student: bool = typer.Option(False, "--no-student", help="Export the dataset only."),
    push_to_hub: Optional[str] = typer.Option(None, "--push-to-hub", metavar="REPO", help="Then upload the dataset to the Hub dataset repo REPO and the student to the model repo REPO (private when new); needs a token (hf auth login)."),
) -> None:
    """Write the grown dataset (JSONL, Parquet, a datasets folder, a card) and the student (a model folder) of a finished run."""

    def action() -> None:
        from llm2llm.export import export

        _quiet_transformers()
        # The command as parsed (sys.argv is a test runner's or a notebook's when the app is called from Python).
        command = shlex.join(["llm2llm", "export", str(run_dir), *(["--out", str(out)] if out else []),
                              *(["--iteration", str(iteration)] if iteration is not None else []), *(["--adapter"] if adapter else []),
                              *(["--no-student"] if no_student else []), *(["--push-to-hub", push_to_hub] if push_to_hub else [])])
        manifest = export(run_dir, out, iteration, with_student=not no_student, adapter=adapter, push_to_hub=push_to_hub,
                          command=command)
        root = Path(manifest["out"])
        console.print(f"iteration {manifest['iteration']}: {manifest['chosen']}", markup=False, highlight=False)
        console.print(f"wrote {root / 'dataset'} ({manifest['rows']} rows: README.md, train.jsonl, train.parquet) and "
                      f"{root / 'dataset_arrow'}", markup=False, highlight=False)
        if "student" in manifest:
            console.print(f"wrote {root / 'student'} ({manifest['student_info']['format']})", markup=False, highlight=False)
        for url in manifest.get("pushed", []):
            console.print(f"pushed {url}", markup=False, highlight=False)

    _guarded(action)


@app.command("predict")
def predict_command(
    run_dir: Path = typer.Argument(..., help="A finished run directory, e.g. runs/demo."),
    input_path: Path = typer.Argument(..., metavar="INPUT", help="Rows to label: a .jsonl or .csv file."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write (.jsonl or .csv; default: INPUT's name + .predictions)."),
    iteration: Optional[int] = typer.Option(None, "--iteration", help="Use this iteration's student (default: the run's best, else its last)."),
    text_field: Optional[str] = typer.Option(None, "--text-field", help="The column holding the text (default: the run's data.text_field)."),
    choices_field: Optional[str] = typer.Option(None, "--choices-field", help="multiple_choice: the column holding the choices (default: data.choices_field)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Rows per batch (default: the run's student.eval_batch_size)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Label new rows with a finished run's student, the way the run evaluated it."""

    def action() -> None:
        from llm2llm.predict import predict_file
        from llm2llm.progress import RichUI, SilentUI

        _quiet_transformers()
        done = predict_file(run_dir, input_path, output, iteration=iteration, text_field=text_field,
                            choices_field=choices_field, batch_size=batch_size, ui=SilentUI() if quiet else RichUI(err_console))
        console.print(f"wrote {done['output']}: {done['rows']} rows predicted by iteration {done['iteration']}'s student "
                      f"({done['chosen']}; {'scored answers' if done['mode'] == 'score' else 'greedy decoding'})",
                      markup=False, highlight=False)

    _guarded(action)


@app.command("config")
def config_command(
    config: Optional[Path] = typer.Argument(None, help="YAML config (none: the built-in defaults, which the shipped configs change; see --keys)."),
    overrides: Optional[List[str]] = OVERRIDES,
    keys: bool = typer.Option(False, "--keys", help="List every key with its default and meaning, marking what the config (or else the demo) sets instead."),
) -> None:
    """Print the resolved config (file + overrides), or the reference of all keys."""

    def action() -> None:
        from importlib import resources

        from llm2llm.config import config_to_yaml, key_reference, load_config

        nonlocal config, overrides
        if config is not None and "=" in config.name and not config.exists():
            overrides, config = [str(config), *(overrides or [])], None  # `llm2llm config key=value` with no file
        if keys:
            # The defaults are what a key is when nothing sets it; every shipped config changes some of them
            # (the demo: full fine-tune, 5 epochs), so the reference marks what the user will actually get.
            if config is None and not overrides:
                shown, source = Path(str(resources.files("llm2llm") / "demo_data" / "demo.yaml")), "llm2llm demo"
            else:
                shown, source = config, " ".join([str(config)] * (config is not None) + list(overrides or []))
            console.print(f"Every key = its default (what you get when neither your config file nor a key=value override "
                          f"sets it). [yellow]Marked[/]: what {escape(source)} sets instead. "
                          "`llm2llm config YOUR.yaml --keys` marks what yours sets.\n", highlight=False)
            for key, default, value, description in key_reference(load_config(shown, overrides or [])):
                mark = f"   [yellow]{escape(source)}: {escape(value)}[/]" if value is not None else ""
                console.print(f"[cyan]{key}[/] = {escape(default)}{mark}\n    {escape(description)}", highlight=False)
            return
        console.print(config_to_yaml(load_config(config, overrides or [])), highlight=False, markup=False)

    _guarded(action)


@app.command()
def models(prepare: Optional[str] = typer.Option(None, "--prepare", help="Verify/assemble/convert this alias now.")) -> None:
    """List the bundled offline models and whether their packages are installed."""

    def action() -> None:
        import importlib.util

        from llm2llm.models import BUNDLED, resolve_gguf, resolve_hf

        if prepare:
            path = resolve_gguf(prepare)
            console.print(f"{prepare}: GGUF verified at {path}", markup=False)
            if prepare == "smollm2-135m-instruct":
                console.print(f"{prepare}: trainable copy at {resolve_hf(prepare)}", markup=False)
            return
        for alias, bundled in BUNDLED.items():
            installed = all(importlib.util.find_spec(p) is not None for p in bundled.packages)
            state = "[green]installed[/]" if installed else f"[yellow]missing[/] ({escape(bundled.install)})"
            console.print(f"[cyan]{alias}[/]: {escape(bundled.note)} — {state}")

    _guarded(action)


def main() -> None:
    from llm2llm.distributed import launched

    if launched() and sys.argv[1:2] != ["run"]:  # each launched process would do the whole command on its own
        err_console.print(f"[bold red]error:[/] only `llm2llm run` runs as several processes; start `llm2llm "
                          f"{' '.join(sys.argv[1:2])}` without accelerate launch or torchrun", highlight=False)
        sys.exit(2)
    try:
        app()
    except SystemExit as exc:
        _tell_launcher(exc.code)
        sys.exit(exc.code)


def _tell_launcher(code) -> None:
    """The main process of `llm2llm run --processes N` leaves its exit code for the command that launched it: the
    launcher's own says only that something failed."""
    import os

    from llm2llm.distributed import is_main_process

    if os.environ.get(EXIT_CODE_FILE) and is_main_process():
        Path(os.environ[EXIT_CODE_FILE]).write_text(str(code if isinstance(code, int) else 0 if code is None else 1))


if __name__ == "__main__":
    main()
