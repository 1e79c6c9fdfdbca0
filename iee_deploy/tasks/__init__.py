"""What each task adds to the one training loop: its data, model checks, loss and validation metric (see `base`)."""

from __future__ import annotations

import difflib

from iee_deploy.errors import UserError
from iee_deploy.tasks.base import StepOutcome, Task
from iee_deploy.tasks.classification import ClassificationTask
from iee_deploy.tasks.detection import DetectionTask

TASKS: dict[str, type[Task]] = {task.name: task for task in (ClassificationTask, DetectionTask)}

__all__ = ["TASKS", "StepOutcome", "Task", "task_named"]


def task_named(name: str) -> Task:
    """The task `name`, or a one-line UserError listing the tasks."""
    if not isinstance(name, str) or name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=1) if isinstance(name, str) else []
        raise UserError(f"unknown task {name!r}", (f"did you mean {close[0]}? " if close else "") +
                        f"choose one of: {', '.join(TASKS)}", fields=("task",))
    return TASKS[name]()
