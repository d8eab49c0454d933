"""The rule the module's parameter-node GUI connectors share: write only a changed value.

Slicer's parameterNodeWrapper writes every connector of a node whenever any parameter of that
node changes, that is on every keystroke in any bound widget. Its own
QTextEditPlainTextToStrConnector.write calls setPlainText unconditionally, and setPlainText
moves the caret to the start and clears the undo history (Qt's documentation), so typing in
the free-text box would jump and lose Ctrl+Z (Slicer fixed the same for QLineEdit only, issue
8620). The connectors in MaleniaSegmentWidgets/connectors.py call this instead of writing
directly.
"""

from __future__ import annotations

from collections.abc import Callable


def write_if_changed(read: Callable[[], str], write: Callable[[str], None], value) -> bool:
    """``write(value)`` unless the widget already shows ``value``; True when it wrote."""
    value = "" if value is None else str(value)
    if read() == value:
        return False
    write(value)
    return True
