"""Several processes (`accelerate launch -m llm2llm run CONFIG`, or `llm2llm run CONFIG --processes N`): the main
process runs the loop, the others help it train and predict.

The launcher starts N copies of the command. Process 0, the main process, runs the loop as a single process would:
it alone holds the run lock, writes the run directory, asks the teacher and owns the reply cache. The others, the
helpers, build the same student and wait for the main process's word. Each time the loop calls the student, the main
process first tells the helpers, then all of them do the work together through torch.distributed as accelerate set
it up (gloo on CPUs, NCCL on GPUs); students/hf.py does the sharing:
- train: one model, data-parallel (DDP; FSDP when the accelerate config asks for it), every process computing a
  share of each batch of `student.batch_size` examples, so the weights are those of one process on the same batches;
- predict and score: every process takes every N-th batch of prompts; the answers come back to all, in order;
- side by side: out-of-fold students are independent, so N of them train at once, one per process on its own device,
  each exactly as it would alone (`student.folds_side_by_side`).
While the main process works alone (the teacher writing, a report), the helpers wait on a gloo group of their own
whose timeout no stage reaches, never inside a training collective. A process that dies takes the others down (the
launcher stops them all); the run then resumes like any killed run, with the same command.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from llm2llm.answers import Questions, ask
from llm2llm.errors import ConfigError, RunStateError
from llm2llm.students import Advance, Messages, Student

# How long a helper waits for the main process's next word: through whole stages of the main process alone (the
# teacher's can take hours). A main process that dies does not leave it waiting: the launcher stops it.
WAIT_FOR_MAIN = timedelta(days=30)


def launched() -> bool:
    """Whether a launcher (accelerate launch, torchrun) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def fsdp() -> bool:
    """Whether the accelerate config asks for FSDP (accelerate launch hands it on in the environment)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


@dataclass
class Apart:
    """A student one process trains on its own and then questions: an out-of-fold student."""

    pairs: list[tuple[Messages, str]]
    student_dir: Path
    questions: Questions


@dataclass
class ApartAnswer:
    outputs: list[str]
    gold: list[float | None]
    seconds: float  # training and answering, on its process
    process: int


@functools.cache
def join() -> "Team":
    """This process's team: itself alone, unless a launcher started several; then torch.distributed is set up by
    accelerate and the main process's channel opened (every process calls this once, in the same order)."""
    if not launched():
        return Team()
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        raise ConfigError("the accelerate config asks for DeepSpeed, which llm2llm does not drive; choose multi-GPU "
                          "(DDP) or FSDP in `accelerate config`, or pass another --config_file")
    try:
        import torch
        import torch.distributed as dist
        from accelerate import PartialState
    except ImportError as exc:
        raise ConfigError(f"several processes need torch and accelerate ({exc.name} is missing): pip install llm2llm") from None
    state = PartialState(cpu=not torch.cuda.is_available())
    channel = dist.new_group(backend="gloo", timeout=WAIT_FOR_MAIN)
    return Team(state.process_index, state.num_processes, channel)


class Team:
    """This process's place among the launched ones, and the channel on which the main process gives its word."""

    def __init__(self, rank: int = 0, size: int = 1, channel: Any = None) -> None:
        self.rank, self.size, self.channel = rank, size, channel

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ── the main process ────────────────────────────────────────────────────────────────────────
    def lead(self, student: Student, side_by_side: bool = True) -> Student:
        """The student as the loop uses it: itself in one process; with helpers, one whose every call all make."""
        if self.size == 1:
            return student
        if not getattr(student, "shares_work", False):
            raise ConfigError(f"student.type: {type(student).__name__} trains and predicts in one process only, and this "
                              f"run was started as {self.size} processes; start it without accelerate launch or --processes")
        # Under FSDP a student needs every device at once: its folds train one after another, across all of them.
        return SharedStudent(student, self, self.size if side_by_side and not fsdp() else 1)

    def tell(self, command: str, *args: Any) -> None:
        import torch.distributed as dist

        dist.broadcast_object_list([(command, args)], src=0, group=self.channel)

    def collect(self, mine: Any) -> list[Any]:
        """Every process's `mine`, by process, on the main process (None elsewhere)."""
        import torch.distributed as dist

        gathered = [None] * self.size if self.is_main else None
        dist.gather_object(mine, gathered, dst=0, group=self.channel)
        return gathered

    def dismiss(self) -> None:
        """The helpers return: the run is over."""
        if self.size > 1:
            self.tell("stop")

    def leave(self) -> None:
        """Close torch.distributed once every process is here (each calls this last). A process that exits with its
        gloo group still open can abort on the way out ("terminate called without an active exception"), and the
        launcher then stops the others mid-work: a finished run would end as a failed one."""
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier(group=self.channel)
            dist.destroy_process_group()

    # ── a helper ────────────────────────────────────────────────────────────────────────────────
    def serve(self, student: Student) -> None:
        """Do what the main process says, with it, until it says stop."""
        import torch.distributed as dist

        # Ctrl-C reaches every process of the terminal: the main process stops and says so; the launcher stops us.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        while True:
            message: list[Any] = [None]
            try:
                dist.broadcast_object_list(message, src=0, group=self.channel)
            except RuntimeError:  # the channel closed: the main process ended, and said why
                raise RunStateError(f"process {self.rank}: the main process of this run stopped (its message is above); "
                                    "finished stages are saved: run the same command again to resume") from None
            command, args = message[0]
            if command == "stop":
                return
            if command == "apart":
                self.collect(_apart(student, args[self.rank], self.rank) if self.rank < len(args) else None)
            else:  # train, predict, score, release: the same call the main process makes (its progress bar aside)
                getattr(student, command)(*args)


class SharedStudent:
    """The student as the main process holds it: the helpers are told of each call, then all make it together."""

    def __init__(self, student: Student, team: Team, side_by_side: int) -> None:
        self.student, self.team = student, team
        self.side_by_side = side_by_side  # out-of-fold students trained at once, one per process (1: one at a time)

    def train_steps(self, n_pairs: int) -> int:
        return self.student.train_steps(n_pairs)

    def train(self, pairs: list[tuple[Messages, str]], out_dir: Path, advance: Advance | None = None,
              init_from: Path | None = None) -> dict[str, Any]:
        self.team.tell("train", pairs, out_dir, None, init_from)
        return self.student.train(pairs, out_dir, advance, init_from)

    def predict(self, student_dir: Path, prompts: list[Messages], max_new_tokens: int, advance: Advance | None = None) -> list[str]:
        self.team.tell("predict", student_dir, prompts, max_new_tokens)
        return self.student.predict(student_dir, prompts, max_new_tokens, advance)

    def score(self, student_dir: Path, prompts: list[Messages], candidates: list[list[str]],
              advance: Advance | None = None, per_token: bool = False) -> list[list[float]]:
        self.team.tell("score", student_dir, prompts, candidates, None, per_token)
        return self.student.score(student_dir, prompts, candidates, advance, per_token)

    def release(self) -> None:
        self.team.tell("release")
        self.student.release()

    def train_apart(self, jobs: list[Apart], advance: Advance | None = None) -> list[ApartAnswer]:
        """Job k trained and questioned by process k on its own (no more jobs than processes); answers in job order."""
        self.team.tell("apart", *jobs)
        return self.team.collect(_apart(self.student, jobs[0], 0, advance))[: len(jobs)]


def _apart(student: Any, job: Apart, process: int, advance: Advance | None = None) -> ApartAnswer:
    started = time.perf_counter()
    student.alone = True  # no DDP, no sharding: this process's own device, as a single process would
    try:
        student.train(job.pairs, job.student_dir, advance)
        outputs, gold = ask(student, job.student_dir, job.questions)
        student.release()
    finally:
        student.alone = False
    return ApartAnswer(outputs, gold, round(time.perf_counter() - started, 2), process)


def launch_command(processes: int, accelerate_config: Path | None, command: list[str]) -> list[str]:
    """The command line that runs `llm2llm <command>` as `processes` processes under accelerate launch (what
    `llm2llm run --processes N` runs), with the accelerate config given, or else the one `accelerate config` wrote."""
    import importlib.util
    import sys

    if launched():
        raise ConfigError(f"--processes: this command already runs as one of {os.environ['WORLD_SIZE']} launched processes; "
                          "drop --processes (the launcher decides how many)")
    if importlib.util.find_spec("accelerate") is None:
        raise ConfigError("--processes needs accelerate: pip install llm2llm")
    from accelerate.commands.config.config_args import default_config_file, load_config_from_file

    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes)]
    if accelerate_config is not None:
        if not accelerate_config.is_file():
            raise ConfigError(f"--accelerate-config: no file {accelerate_config}; write one with `accelerate config "
                              f"--config_file {accelerate_config}`, or leave the option out")
        launch += ["--config_file", str(accelerate_config)]
    chosen = accelerate_config or (Path(default_config_file) if Path(default_config_file).is_file() else None)
    kind = str(getattr(load_config_from_file(str(chosen)), "distributed_type", "")) if chosen else ""
    # Without a config that asks for FSDP (or DeepSpeed, which join() refuses by name), ask for DDP: accelerate launch
    # would otherwise start a single process on a machine without GPUs (there, --multi_gpu means gloo on CPUs).
    if not kind.endswith(("FSDP", "DEEPSPEED")):
        launch.append("--multi_gpu")
    if chosen is None:  # what accelerate would otherwise say it assumed, at length
        launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if not (chosen and getattr(load_config_from_file(str(chosen)), "main_process_port", None)):
        # A free port of this machine, not accelerate's fixed 29500: two runs (or a run just ended) do not collide.
        launch += ["--main_process_port", str(free_port())]
    if "OMP_NUM_THREADS" not in os.environ:  # the launcher's default is 1 thread per process: share the cores instead
        launch += ["--num_cpu_threads_per_process", str(max(1, (os.cpu_count() or 1) // processes))]
    return launch + ["-m", "llm2llm", *command]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that no one listens on now (the OS picks it)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
