"""MaleniaSegment: zero-shot CT lesion segmentation from a description of the lesion.

The widget only wires the UI to MaleniaSegmentLib.logic.MaleniaSegmentLogic, which does the
work headless (and is tested without Qt). The model runs in a separate engine process, so
this (Slicer's) process never imports torch.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import (
    Choice,
    GuiConnector,
    WithinRange,
    parameterNodeWrapper,
)
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

_MODULE_DIR = os.path.dirname(__file__)
if _MODULE_DIR not in sys.path:
    sys.path.insert(0, _MODULE_DIR)  # MaleniaSegmentLib and malenia live beside this file

# Attribute key (engine) -> its row in the .ui: an editable combo box of the vocabulary.
ATTRIBUTE_WIDGETS = {
    "location": "locationComboBox",
    "shape": "shapeComboBox",
    "density": "densityComboBox",
    "density_variation": "densityVariationComboBox",
    "surface": "surfaceComboBox",
    "enhancement": "enhancementComboBox",
    "relation": "relationComboBox",
    "specific_features": "specificFeaturesComboBox",
}
ATTRIBUTE_PARAMETERS = {
    "location": "location",
    "shape": "shape",
    "density": "density",
    "density_variation": "densityVariation",
    "surface": "surface",
    "enhancement": "enhancement",
    "relation": "relation",
    "specific_features": "specificFeatures",
}
DEVICE_CHOICES = ["auto", "gpu", "cpu"]


class MaleniaSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Malenia Segment"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["MaleniaSegment developers"]
        self.parent.helpText = (
            "Segment lesions in CT from a description of what they look like: pick a preset, set "
            "the eight attributes (location, shape, density, density variation, surface, "
            "enhancement, relation to surrounding organs, specific features) or type free text, "
            "then click Segment (Ctrl+Enter). Results are new, editable segments; your own "
            "segments are never changed. The threshold slider re-cuts instantly. See "
            "<a href='https://github.com/malenia-segment/SlicerMaleniaSegment/blob/main/docs/SLICER.md'>"
            "the step-by-step guide</a>."
        )
        self.parent.acknowledgementText = (
            "Method: Jiang Y, Lei W, Zhang X, Zhang S. Unleashing the Potential of Vision-Language "
            "Pre-Training for 3D Zero-Shot Lesion Segmentation via Mask-Attribute Alignment "
            "(Malenia). ICLR 2025, arXiv:2410.15744. Attribute annotations from the Malenia "
            "authors (MIT). This is an independent implementation with weights trained by the "
            "MaleniaSegment developers; it is a research tool, not a medical device."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """The bundled sample CT (real anatomy, two synthetic lesions) in the Sample Data module."""
    import SampleData
    from MaleniaSegmentLib.sample_data import sample_source

    SampleData.SampleDataLogic.registerCustomSampleDataSource(**sample_source())


# ---------------------------------------------------------------------------- parameters
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
        if self._widget.currentText != value:
            self._widget.setEditText(value)


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
        index = self._widget.findData(value or "")
        self._widget.setCurrentIndex(max(index, 0))


# Parameters bound with the connectors above (the rest use SlicerParameterName in the .ui).
CUSTOM_BINDINGS = {
    "preset": ("presetComboBox", ComboBoxDataToStrConnector),
    "location": ("locationComboBox", EditableComboBoxToStrConnector),
    "shape": ("shapeComboBox", EditableComboBoxToStrConnector),
    "density": ("densityComboBox", EditableComboBoxToStrConnector),
    "densityVariation": ("densityVariationComboBox", EditableComboBoxToStrConnector),
    "surface": ("surfaceComboBox", EditableComboBoxToStrConnector),
    "enhancement": ("enhancementComboBox", EditableComboBoxToStrConnector),
    "relation": ("relationComboBox", EditableComboBoxToStrConnector),
    "specificFeatures": ("specificFeaturesComboBox", EditableComboBoxToStrConnector),
}


@parameterNodeWrapper
class MaleniaSegmentParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    roi: vtkMRMLMarkupsROINode
    preset: str = ""
    location: str = ""
    shape: str = ""
    density: str = ""
    densityVariation: str = ""
    surface: str = ""
    enhancement: str = ""
    relation: str = ""
    specificFeatures: str = ""
    freeText: str = ""
    threshold: Annotated[float, WithinRange(0.01, 0.99)] = 0.5  # the slider's range
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    outputSegmentation: vtkMRMLSegmentationNode


# ---------------------------------------------------------------------------- widget
class MaleniaSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTags = []
        self._job = None  # dict: thread, cancel flag, outcome, prepared job
        self._run = None  # last Run, for threshold re-cuts and the table
        # Until the user moves the slider, runs use the model's calibrated threshold and the
        # slider then shows the one used (set without triggering a re-cut).
        self._thresholdChosen = False
        self._showingThreshold = False
        self._gpu = {}  # filled by a background probe
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(100)
        self._pollTimer.connect("timeout()", self._poll)
        self._recutTimer = qt.QTimer()  # re-cut once the slider rests, not on every step
        self._recutTimer.setSingleShot(True)
        self._recutTimer.setInterval(150)
        self._recutTimer.connect("timeout()", self._recut)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MaleniaSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MaleniaSegmentLogic()
        self._fillVocabulary()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.findAllButton.connect("clicked(bool)", self.onFindAllButton)
        self.ui.fillFromTextButton.connect("clicked(bool)", self.onFillFromText)
        self.ui.presetComboBox.connect("activated(int)", self.onPresetChosen)
        self.ui.thresholdSlider.connect("valueChanged(double)", self.onThresholdChanged)
        self.ui.resultsTable.connect("cellClicked(int,int)", self.onResultClicked)
        self.ui.installButton.connect("clicked(bool)", self.onInstallDependencies)
        shortcut = qt.QShortcut(qt.QKeySequence("Ctrl+Return"), self.parent)
        shortcut.connect("activated()", self.onSegmentButton)
        self._shortcuts = [shortcut]
        for sequence in ("Ctrl+Enter",):  # the keypad Enter key
            extra = qt.QShortcut(qt.QKeySequence(sequence), self.parent)
            extra.connect("activated()", self.onSegmentButton)
            self._shortcuts.append(extra)
        self._showDependencies()
        self.initializeParameterNode()

    def _fillVocabulary(self) -> None:
        from malenia.attributes import load_presets, load_vocabulary

        vocabulary = load_vocabulary()
        self.ui.presetComboBox.addItem("(no preset)", "")
        for preset in load_presets().values():
            suffix = "" if preset.seen_in_training else "  (zero-shot)"
            self.ui.presetComboBox.addItem(preset.name + suffix, preset.category)
        for key, name in ATTRIBUTE_WIDGETS.items():
            combo = getattr(self.ui, name)
            combo.addItem("")
            combo.addItems(vocabulary.values(key))

    def _showDependencies(self) -> None:
        """Missing packages -> the install button; else probe the GPU in the background."""
        from MaleniaSegmentLib.dependencies import missing

        needed = missing()
        self.ui.installButton.visible = bool(needed)
        if needed:
            self.ui.gpuLabel.text = "Dependencies missing: " + ", ".join(needed)
            return
        self.ui.gpuLabel.text = "Detecting the GPU ..."

        def probe():
            from MaleniaSegmentLib.dependencies import probe_gpu

            try:
                self._gpu = probe_gpu()
            except Exception as error:  # reported in the label, never fatal
                self._gpu = {"error": str(error)}

        threading.Thread(target=probe, daemon=True).start()
        qt.QTimer.singleShot(500, self._showGpu)

    def _showGpu(self) -> None:
        if not self._gpu:
            qt.QTimer.singleShot(500, self._showGpu)
            return
        from MaleniaSegmentLib.dependencies import assess_gpu

        text, warning = assess_gpu(self._gpu)
        self.ui.gpuLabel.text = text + (f"\nWARNING: {warning}" if warning else "")

    def cleanup(self) -> None:
        self.removeObservers()
        if self._job:
            self._job["cancel"].cancel()
        if self.logic:
            self.logic.shutdown()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self._run = None
        self.ui.resultsTable.setRowCount(0)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            for tag in self._parameterNodeGuiTags:
                self._parameterNode.disconnectGui(tag)
            self._parameterNodeGuiTags = []
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTags = [
                self._parameterNode.connectGui(self.ui),  # SlicerParameterName widgets
                self._parameterNode.connectParametersToGui({
                    parameter: connector(getattr(self.ui, widget))
                    for parameter, (widget, connector) in CUSTOM_BINDINGS.items()
                }),
            ]  # fmt: skip

    # ------------------------------------------------------------------ description
    def _attributes(self) -> dict:
        return {
            key: getattr(self._parameterNode, parameter)
            for key, parameter in ATTRIBUTE_PARAMETERS.items()
        }

    def onPresetChosen(self, index: int) -> None:
        """A preset fills the attribute rows (which stay editable)."""
        category = self.ui.presetComboBox.itemData(index)
        if not category:
            return
        from malenia.attributes import load_presets

        preset = load_presets()[category]
        values = preset.description.to_dict()
        with slicer.util.NodeModify(self._parameterNode):
            for key, parameter in ATTRIBUTE_PARAMETERS.items():
                value = values.get(key) or ""
                if isinstance(value, list | tuple):
                    value = ", ".join(value)
                setattr(self._parameterNode, parameter, value)
        seen = "seen in training" if preset.seen_in_training else "zero-shot: never seen"
        self.ui.statusLabel.text = f"Preset {preset.name} ({seen}); edit any row before running."

    def onFillFromText(self) -> None:
        from malenia.attributes import parse_text

        result = parse_text(self._parameterNode.freeText)
        values = result.description.to_dict()
        with slicer.util.NodeModify(self._parameterNode):
            for key, parameter in ATTRIBUTE_PARAMETERS.items():
                value = values.get(key) or ""
                if isinstance(value, list | tuple):
                    value = ", ".join(value)
                setattr(self._parameterNode, parameter, value)
        unparsed = f" Not understood: {', '.join(result.unparsed)}." if result.unparsed else ""
        notes = " ".join(result.notes)
        self.ui.statusLabel.text = (f"Attributes filled from the text. {notes}{unparsed}").strip()

    # ------------------------------------------------------------------ runs
    def onSegmentButton(self) -> None:
        if self._job:
            self._job["cancel"].cancel()
            self.ui.statusLabel.text = "Cancelling ..."
            return
        from MaleniaSegmentLib.logic import build_query

        try:
            query = build_query(
                self._attributes(), self._parameterNode.freeText, self._parameterNode.preset
            )
        except Exception as error:
            self.ui.statusLabel.text = str(error)
            return
        self._start(query)

    def onFindAllButton(self) -> None:
        if not self._job:
            self._start(None)

    def _start(self, query) -> None:
        """Read the scene here (main thread); the engine work runs in a worker thread."""
        from MaleniaSegmentLib.logic import CancelFlag

        p = self._parameterNode
        try:
            self.logic.client.set_device(p.device)
            threshold = p.threshold if self._thresholdChosen else None
            job = self.logic.core.prepare(
                p.inputVolume, query, threshold, p.outputSegmentation, p.roi
            )
        except Exception as error:
            self.ui.statusLabel.text = str(error)
            return
        cancel, outcome = CancelFlag(), {"progress": ("starting", 0, 1)}

        def progress(stage, done, total):
            outcome["progress"] = (stage, done, total)

        def work():
            try:
                outcome["result"] = self.logic.core.run_engine(job, progress, cancel)
            except Exception as error:  # shown in the status line, scene untouched
                outcome["error"] = error

        thread = threading.Thread(target=work, daemon=True, name="malenia-job")
        self._job = {"thread": thread, "cancel": cancel, "outcome": outcome, "job": job}
        self.ui.segmentButton.text = "Cancel"
        self.ui.findAllButton.enabled = False
        self.ui.statusLabel.text = "Running (the first run on a volume encodes it) ..."
        thread.start()
        self._pollTimer.start()

    def _poll(self) -> None:
        state = self._job
        stage, done, total = state["outcome"]["progress"]
        self.ui.progressBar.maximum = max(total, 1)
        self.ui.progressBar.value = done
        self.ui.progressBar.format = f"{stage}: %p%"
        if state["thread"].is_alive():
            return
        self._pollTimer.stop()
        self._job = None
        self.ui.segmentButton.text = "Segment"
        self.ui.findAllButton.enabled = True
        self.ui.progressBar.format = "idle"
        self.ui.progressBar.value = 0
        outcome = state["outcome"]
        note = self.logic.client.take_note()
        if "error" in outcome:
            self.ui.statusLabel.text = f"Nothing changed: {outcome['error']} {note}".strip()
            return
        volume_id, result = outcome["result"]
        try:
            self._run = self.logic.core.apply(state["job"], volume_id, result, state["cancel"])
        except Exception as error:
            self.ui.statusLabel.text = f"Nothing changed: {error}"
            return
        self._parameterNode.outputSegmentation = self._run.output_node
        self._showingThreshold = True
        try:
            self._parameterNode.threshold = result.threshold
        finally:
            self._showingThreshold = False
        self._fillTable()
        self.ui.statusLabel.text = f"{self._run.status()} {note}".strip()

    def onThresholdChanged(self, value: float) -> None:
        if self._showingThreshold:
            return
        self._thresholdChosen = True
        if self._run and not self._job:
            self._recutTimer.start()

    def _recut(self) -> None:
        if not self._run or self._job:
            return
        try:
            self._run = self.logic.core.recut(self._run, self._parameterNode.threshold)
            self._fillTable()
            self.ui.statusLabel.text = (
                f"Re-cut at {self._parameterNode.threshold:.2f}: "
                f"{len(self._run.segment_ids)} segment(s)."
            )
        except Exception as error:
            self.ui.statusLabel.text = f"Re-cut failed, segments unchanged: {error}"

    def _fillTable(self) -> None:
        rows = self.logic.core.results_table(self._run)
        table = self.ui.resultsTable
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, value in enumerate(
                [
                    row["lesion"],
                    row["category"],
                    f"{row['volume_ml']:.2f}",
                    f"{row['diameter_mm']:.1f}",
                    f"{row['score']:.2f}",
                ]
            ):
                item = qt.QTableWidgetItem(value)
                item.setData(qt.Qt.UserRole, row["segment_id"])
                table.setItem(r, c, item)

    def onResultClicked(self, row: int, column: int) -> None:
        segment_id = self.ui.resultsTable.item(row, 0).data(qt.Qt.UserRole)
        try:
            x, y, z = self.logic.core.lesion_centre_ras(self._run, segment_id)
        except Exception as error:
            self.ui.statusLabel.text = str(error)
            return
        slicer.modules.markups.logic().JumpSlicesToLocation(x, y, z, True)

    def onInstallDependencies(self) -> None:
        from MaleniaSegmentLib.dependencies import (
            has_pytorch_extension,
            install,
            install_plan,
            missing,
        )

        needed = missing()
        if not needed:
            self._showDependencies()
            return
        plan = install_plan(needed, has_pytorch_extension())
        if not slicer.util.confirmOkCancelDisplay(
            "MaleniaSegment will install these Python packages into Slicer:\n\n"
            + "\n".join(plan)
            + "\n\nThis downloads a few hundred MB (more with a GPU build of torch)."
        ):
            return
        with slicer.util.tryWithErrorDisplay("Installing dependencies failed.", waitCursor=True):
            self.ui.statusLabel.text = install(needed)
        self._showDependencies()


# ---------------------------------------------------------------------------- logic
class MaleniaSegmentLogic(ScriptedLoadableModuleLogic):
    """Slicer-side glue: Slicer's module logics + the engine process for the headless core."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        from MaleniaSegmentLib.engine_process import EngineProcessClient
        from MaleniaSegmentLib.logic import MaleniaSegmentLogic as Core

        class _Logics:
            segmentations_logic = slicer.modules.segmentations.logic()
            terminologies_logic = slicer.modules.terminologies.logic()

        self.client = EngineProcessClient()
        self.core = Core(_Logics(), self.client)

    def getParameterNode(self):
        return MaleniaSegmentParameterNode(super().getParameterNode())

    def shutdown(self) -> None:
        self.client.close()


# ---------------------------------------------------------------------------- self-test
class MaleniaSegmentTest(ScriptedLoadableModuleTest):
    """End-to-end inside Slicer: sample CT -> preset -> new segments -> re-cut -> find all,
    through the real engine process."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_sample_ct_end_to_end()

    def test_sample_ct_end_to_end(self):
        import SampleData
        from MaleniaSegmentLib import segments

        registerSampleData()
        volume = SampleData.downloadSample("MaleniaSampleCT")
        self.assertIsNotNone(volume)
        logic = MaleniaSegmentLogic()
        try:
            user = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "user")
            user.GetSegmentation().AddEmptySegment("mine", "Renal cyst 1")
            nodes_before = slicer.mrmlScene.GetNumberOfNodes()
            run = logic.core.segment(volume, "renal cyst", threshold=0.5, output_node=user)
            self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes_before)
            segmentation = user.GetSegmentation()
            self.assertEqual(segmentation.GetSegment("mine").GetName(), "Renal cyst 1")
            for segment_id in run.segment_ids:
                segment = segmentation.GetSegment(segment_id)
                self.assertNotEqual(segment.GetName(), "Renal cyst 1")
                self.assertEqual(segments._tag(segment, "Malenia.Threshold"), "0.500")
            recut = logic.core.recut(run, 0.7)
            self.assertEqual(segmentation.GetSegment("mine").GetName(), "Renal cyst 1")
            for segment_id in recut.segment_ids:
                segment = segmentation.GetSegment(segment_id)
                self.assertEqual(segments._tag(segment, "Malenia.Threshold"), "0.700")
            found = logic.core.find_lesions(volume, threshold=0.5)
            self.assertIsNot(found.output_node, user)
            self.delayDisplay(
                f"{len(run.segment_ids)} renal cyst segment(s); "
                f"{len(found.segment_ids)} lesion(s) found in all"
            )
        finally:
            logic.shutdown()
        self.delayDisplay("MaleniaSegment end-to-end test passed")
