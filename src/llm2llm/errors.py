"""Domain exceptions. Each message says what is wrong, where, and what to do; `cli.py` maps them to exit codes."""


class Llm2llmError(Exception):
    """Base class: an error the user can act on (printed without a traceback)."""


class ConfigError(Llm2llmError):
    """The config file or an override is invalid; the message names the key."""


class DataError(Llm2llmError):
    """An input data file is invalid; the message names the file, line and field."""


class ModelError(Llm2llmError):
    """A model reference cannot be resolved, verified or loaded."""


class TeacherError(Llm2llmError):
    """The teacher endpoint refused or failed in a way retrying will not fix."""


class RunStateError(Llm2llmError):
    """The run directory does not match the request (changed config, missing stage output, another run writing it,
    a corrupt state file)."""


class ExportError(Llm2llmError):
    """What a finished run hands over cannot be written or published as asked (an optional package missing, an
    output folder in the way, the Hugging Face Hub without a token or unreachable)."""


class BudgetReached(Llm2llmError):
    """The run spent its teacher budget; everything is saved and raising the cap continues it."""


class Llm2llmWarning(UserWarning):
    """Something the user should know that does not stop the run (the CLI prints it as one `warning:` line)."""
