"""Pluggable parts by name: built-in names, entry points of installed packages, or an explicit module:Class that must
be a class of the right protocol — never a function or a module that would be called blindly."""

from __future__ import annotations

import pytest

from llm2llm.config import StudentConfig, TaskConfig, TeacherConfig
from llm2llm.errors import ConfigError
from llm2llm.students import build_student
from llm2llm.tasks import build_task
from llm2llm.tasks.classification import ClassificationTask
from llm2llm.teachers import build_teacher

from scripted import ScriptedTeacher


@pytest.mark.parametrize(
    "spec, message",
    [
        ("os:system", r"task\.type: 'os:system' is a builtin_function_or_method, not a class; name a class that implements llm2llm\.tasks\.Task"),
        ("os:path", r"'os:path' is a module, not a class"),
        ("json:JSONDecoder", r"'json:JSONDecoder' is not a Task: it lacks validate, student_messages, .*parse_teacher_reply"),
        ("os", r"task\.type: unknown value 'os'; known: classification, multiple_choice, math"),
        ("no_such_module_x:Thing", r"cannot import 'no_such_module_x:Thing' \(No module named 'no_such_module_x'\)"),
        (":Thing", r"':Thing' is not of the form 'package.module:Class'"),
    ],
    ids=["function", "module", "wrong-protocol", "bare-name", "missing-module", "no-module"],
)
def test_only_a_class_of_the_right_protocol_is_loaded(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_task(TaskConfig(type=spec), [])


def test_teacher_and_student_plugins_are_checked_against_their_protocols():
    assert isinstance(build_teacher(TeacherConfig(type="scripted:ScriptedTeacher"), 0), ScriptedTeacher)
    with pytest.raises(ConfigError, match=r"quality\.verifier\.type: 'scripted:ScriptedStudent' is not a Teacher: it lacks params, complete, close"):
        build_teacher(TeacherConfig(type="scripted:ScriptedStudent"), 0, "quality.verifier")
    with pytest.raises(ConfigError, match=r"student\.type: 'scripted:ScriptedTeacher' is not a Student: it lacks train, predict, train_steps"):
        build_student(StudentConfig(type="scripted:ScriptedTeacher"), 0)


def test_an_installed_package_registers_a_task_by_entry_point(tmp_path, monkeypatch):
    """The plugin convention of the ecosystem: a distribution's entry_points.txt names the class."""
    dist = tmp_path / "llm2llm_tickets-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: llm2llm-tickets\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[llm2llm.tasks]\ntickets = llm2llm.tasks.classification:ClassificationTask\nbroken = os:system\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from llm2llm.data import Example

    seeds = [Example(id=f"s{k}", text=f"t{k}", label=label, origin="seed") for k, label in enumerate(["a", "b"])]
    assert isinstance(build_task(TaskConfig(type="tickets"), seeds), ClassificationTask)
    with pytest.raises(ConfigError, match=r"'broken' is a builtin_function_or_method, not a class"):
        build_task(TaskConfig(type="broken"), seeds)
    with pytest.raises(ConfigError, match=r"known: classification, multiple_choice, math, tickets, broken"):
        build_task(TaskConfig(type="nope"), seeds)
