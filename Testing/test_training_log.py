"""log.csv: each task writes its own columns, and a resumed run appends under the header the
file already has (runs started before a column changed stay readable)."""

from __future__ import annotations

import csv

from malenia.training.anatomy import AnatomyTask
from malenia.training.lesions import LesionTask
from malenia.training.loop import TASKS, TrainingLog


def rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_each_task_logs_its_own_columns(tmp_path):
    assert {"lesions": LesionTask, "anatomy": AnatomyTask} == TASKS
    log = TrainingLog(tmp_path / "log.csv", AnatomyTask.log_columns)
    log.write({"step": 1, "total": 0.5, "organ": 0.5, "lr": 1e-3, "seconds": 2.0, "val_dice": ""})
    log.close()
    assert rows(tmp_path / "log.csv") == [
        ["step", "total", "organ", "lr", "seconds", "val_dice"],
        ["1", "0.5", "0.5", "0.001", "2.0", ""],
    ]
    assert "contrast" in LesionTask.log_columns and "anatomy" in LesionTask.log_columns


def test_a_resumed_run_appends_under_the_files_own_header(tmp_path):
    path = tmp_path / "log.csv"
    old = ["step", "total", "mask", "objectness", "align", "prompt", "lr", "seconds", "val_dice"]
    path.write_text(",".join(old) + "\n1,2.0,1.0,0.5,0.2,0.3,0.001,1.5,\n", encoding="utf-8")
    log = TrainingLog(path, LesionTask.log_columns)
    log.write({"step": 2, "total": 1.0, "mask": 0.4, "objectness": 0.2, "align": 0.1,
               "prompt": 0.3, "contrast": 0.7, "lr": 0.002, "seconds": 1.0, "val_dice": 0.8})  # fmt: skip
    log.close()
    table = rows(path)
    assert table[0] == old and len(table) == 3
    assert dict(zip(old, table[2], strict=True)) == {
        "step": "2", "total": "1.0", "mask": "0.4", "objectness": "0.2", "align": "0.1",
        "prompt": "0.3", "lr": "0.002", "seconds": "1.0", "val_dice": "0.8",
    }  # fmt: skip
