"""Parameter-node GUI connectors for the widget rows Slicer's own connectors do not bind
as we need: an editable combo box (picked or typed text), a combo box whose items carry a
key, and a QTextEdit written only when its text differs (``write_if_changed``: Slicer's own
connector moves the caret to the start and clears undo on every keystroke)."""

from __future__ import annotations

import qt
from slicer.parameterNodeWrapper import GuiConnector


class EditableComboBoxToStrConnector(GuiConnector):
    """An editable QComboBox <-> str (the text, picked or typed). Slicer's own combo-box
    connector only knows fixed choices, so these rows are bound explicitly."""

    widgetClasses = ("QComboBox",)

    @staticmethod
    def canRepresent(widget, datatype) -> bool:
        return isinstance(widget, qt.QComboBox) and widget.editable and datatype is str

    @staticmethod
    def create(widget, datatype):
        return EditableComboBoxToStrConnector(widget)

    def __init__(self, widget) -> None:
        super().__init__()
        self._widget = widget

    def _connect(self):
        self._widget.editTextChanged.connect(self.changed)

    def _disconnect(self):
        self._widget.editTextChanged.disconnect(self.changed)

    def widget(self):
        return self._widget

    def read(self):
        return self._widget.currentText

    def write(self, value) -> None:
        from MaleniaSegmentLib.connectors import write_if_changed

        write_if_changed(lambda: self._widget.currentText, self._widget.setEditText, value)


class ComboBoxDataToStrConnector(GuiConnector):
    """A QComboBox whose items carry a key in their data (preset category) <-> that key."""

    widgetClasses = ("QComboBox",)

    @staticmethod
    def canRepresent(widget, datatype) -> bool:
        return isinstance(widget, qt.QComboBox) and datatype is str

    @staticmethod
    def create(widget, datatype):
        return ComboBoxDataToStrConnector(widget)

    def __init__(self, widget) -> None:
        super().__init__()
        self._widget = widget

    def _connect(self):
        self._widget.currentIndexChanged.connect(self.changed)

    def _disconnect(self):
        self._widget.currentIndexChanged.disconnect(self.changed)

    def widget(self):
        return self._widget

    def read(self):
        return self._widget.itemData(self._widget.currentIndex) or ""

    def write(self, value) -> None:
        index = max(self._widget.findData(value or ""), 0)
        if self._widget.currentIndex != index:
            self._widget.setCurrentIndex(index)


class PlainTextEditToStrConnector(GuiConnector):
    """A QTextEdit's plain text <-> str, written only when it differs. Slicer's own
    QTextEditPlainTextToStrConnector calls setPlainText on every parameter-node change, which
    moves the caret to the start and clears the undo history while the user types."""

    widgetClasses = ("QTextEdit",)

    @staticmethod
    def canRepresent(widget, datatype) -> bool:
        return isinstance(widget, qt.QTextEdit) and datatype is str

    @staticmethod
    def create(widget, datatype):
        return PlainTextEditToStrConnector(widget)

    def __init__(self, widget) -> None:
        super().__init__()
        self._widget = widget

    def _connect(self):
        self._widget.textChanged.connect(self.changed)

    def _disconnect(self):
        self._widget.textChanged.disconnect(self.changed)

    def widget(self):
        return self._widget

    def read(self):
        return self._widget.toPlainText()

    def write(self, value) -> None:
        from MaleniaSegmentLib.connectors import write_if_changed

        write_if_changed(self._widget.toPlainText, self._widget.setPlainText, value)
