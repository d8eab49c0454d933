"""The parts of the Slicer widget that run without Qt: the write-skip rule of its GUI
connectors, the GPU report after an install, and when the self-test skips itself.

Qt and PythonQt exist only inside Slicer; where a test needs a widget it uses a small stand-in
with the documented behaviour of the Qt call involved, and docs/SLICER.md lists the check a
Slicer user makes by hand.
"""

from __future__ import annotations

import sys
import threading

from MaleniaSegmentLib.compat import self_test_skip_reason
from MaleniaSegmentLib.connectors import write_if_changed
from MaleniaSegmentLib.dependencies import GpuProbe


class PlainTextEdit:
    """What QTextEdit.setPlainText does that matters here (Qt documentation): it replaces the
    text, puts the cursor at the start and clears the undo/redo history."""

    def __init__(self) -> None:
        self.text, self.cursor, self.undo = "", 0, []

    def toPlainText(self) -> str:  # noqa: N802 - Qt's name
        return self.text

    def setPlainText(self, text: str) -> None:  # noqa: N802 - Qt's name
        self.text, self.cursor, self.undo = text, 0, []

    def type(self, char: str) -> None:
        self.undo.append(self.text)
        self.text = self.text[: self.cursor] + char + self.text[self.cursor :]
        self.cursor += 1


def type_with_the_wrapper_writing_back(edit: PlainTextEdit, text: str, write) -> None:
    """Each keystroke changes the parameter (connector.read), and parameterNodeWrapper then
    writes every connector of the node with the node's value (wrapper.py, _updateGui)."""
    for char in text:
        edit.type(char)
        value = edit.toPlainText()  # what the connector read into the parameter node
        write(edit, value)


def test_free_text_keeps_caret_and_undo_while_the_parameter_node_writes_back():
    skipping = PlainTextEdit()
    type_with_the_wrapper_writing_back(
        skipping, "renal cyst", lambda e, v: write_if_changed(e.toPlainText, e.setPlainText, v)
    )
    assert skipping.text == "renal cyst"
    assert skipping.cursor == len("renal cyst") and len(skipping.undo) == len("renal cyst")

    # Slicer's QTextEditPlainTextToStrConnector.write: setPlainText unconditionally.
    unconditional = PlainTextEdit()
    type_with_the_wrapper_writing_back(unconditional, "renal cyst", lambda e, v: e.setPlainText(v))
    assert unconditional.text != "renal cyst"  # every keystroke after the first lands at 0
    assert unconditional.undo == []


def test_a_changed_value_is_still_written():
    edit = PlainTextEdit()
    edit.type("x")
    assert write_if_changed(edit.toPlainText, edit.setPlainText, "liver cyst")
    assert edit.text == "liver cyst" and edit.cursor == 0
    assert not write_if_changed(edit.toPlainText, edit.setPlainText, "liver cyst")
    assert write_if_changed(edit.toPlainText, edit.setPlainText, None) and edit.text == ""


def test_a_new_gpu_probe_forgets_the_report_from_before_an_install():
    releases = [threading.Event(), threading.Event()]
    reports = iter([{"torch": None}, {"torch": "2.13.0", "devices": []}])
    calls = []

    def probe() -> dict:
        index = len(calls)
        calls.append(index)
        releases[index].wait(10)
        return next(reports)

    gpu = GpuProbe(probe)
    gpu.start()
    releases[0].set()
    for _ in range(200):
        if gpu.report() is not None:
            break
        threading.Event().wait(0.01)
    assert gpu.report() == {"torch": None}  # before the install: no torch
    gpu.start()  # after the install
    assert gpu.report() is None  # "Detecting the GPU ..." until the new probe answers
    releases[1].set()
    for _ in range(200):
        if gpu.report() is not None:
            break
        threading.Event().wait(0.01)
    assert gpu.report() == {"torch": "2.13.0", "devices": []}


def test_a_failing_probe_is_reported_not_raised():
    def probe() -> dict:
        raise OSError("PythonSlicer not found")

    gpu = GpuProbe(probe)
    gpu.start()
    for _ in range(200):
        if gpu.report() is not None:
            break
        threading.Event().wait(0.01)
    assert gpu.report() == {"error": "PythonSlicer not found"}


def test_self_test_skips_without_the_engine_packages_or_on_an_old_slicer(tmp_path):
    absent = tmp_path / "requirements.txt"
    absent.write_text("malenia-no-such-package>=1\n")
    reason = self_test_skip_reason((5, 12), sys.version_info, absent)
    assert reason and "not installed" in reason and "malenia-no-such-package" in reason
    assert "5.10 or newer" in self_test_skip_reason((5, 8), (3, 9, 10), absent)
    present = tmp_path / "present.txt"
    present.write_text("numpy\n")  # installed here, as torch is
    assert self_test_skip_reason((5, 12), sys.version_info, present) is None
