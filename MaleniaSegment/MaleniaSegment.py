"""MaleniaSegment: zero-shot CT lesion segmentation from a description of the lesion.

The widget only wires the UI to MaleniaSegmentLib.logic.MaleniaSegmentLogic, which does the
work headless (and is tested without Qt). The model runs in a separate engine process.
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
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
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


def _resources() -> str:
    from malenia.paths import resources_dir

    return str(resources_dir())


class MaleniaSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Malenia Segment"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["MaleniaSegment developers"]
        self.parent.helpText = (
            "Segment lesions in CT from a description of what they look like: pick a preset, set the "
            "eight attributes (location, shape, density, density variation, surface, enhancement, relation "
            "to surrounding organs, specific features) or type free text, then click Segment. Results are "
            "new, editable segments; your own segments are never changed. "
            "See <a href='https://github.com/malenia-segment/SlicerMaleniaSegment'>the documentation</a>."
        )
        self.parent.acknowledgementText = (
            "Method: Jiang Y, Lei W, Zhang X, Zhang S. Unleashing the Potential of Vision-Language "
            "Pre-Training for 3D Zero-Shot Lesion Segmentation via Mask-Attribute Alignment (Malenia). "
            "ICLR 2025, arXiv:2410.15744. Attribute annotations from the Malenia authors (MIT). "
            "This is an independent implementation with weights trained by the MaleniaSegment developers."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """The bundled sample CT (real anatomy, two synthetic lesions) in the Sample Data module."""
    import SampleData
    from MaleniaSegmentLib.sample_data import SAMPLE_CT_SHA256, sample_ct_path

    path = sample_ct_path()
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="MaleniaSegment",
        sampleName="MaleniaSampleCT",
        thumbnailFileName=os.path.join(_resources(), "Icons", "MaleniaSegment.png"),
        uris=qt.QUrl.fromLocalFile(str(path)).toString(),
        fileNames="sample_ct.nii.gz",
        checksums=f"SHA256:{SAMPLE_CT_SHA256}",
        nodeNames="MaleniaSampleCT",
    )


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
    threshold: Annotated[float, WithinRange(0.01, 0.99)] = 0.5
    device: str = "auto"
    outputSegmentation: vtkMRMLSegmentationNode


class MaleniaSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None  # (thread, cancel token, outcome dict)
        self._run = None  # last Run, for threshold re-cuts
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(100)
        self._pollTimer.connect("timeout()", self._poll)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(os.path.join(_resources(), "UI", "MaleniaSegment.ui"))
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
        self.ui.presetComboBox.connect("currentIndexChanged(int)", self.onPresetChanged)
        self.ui.thresholdSlider.connect("valueChanged(double)", self.onThresholdChanged)
        self.ui.resultsTable.connect("cellClicked(int,int)", self.onResultClicked)
        self.ui.installButton.connect("clicked(bool)", self.onInstallDependencies)
        shortcut = qt.QShortcut(qt.QKeySequence("Ctrl+Return"), self.parent)
        shortcut.connect("activated()", self.onSegmentButton)
        self._showDevice()
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
            if key != "specific_features":
                combo.addItem("")
            combo.addItems(vocabulary.values(key))
        self.ui.deviceComboBox.addItems(["auto", "gpu", "cpu"])

    def _showDevice(self) -> None:
        from MaleniaSegmentLib.dependencies import gpu_report, missing

        needed = missing()
        self.ui.installButton.visible = bool(needed)
        if needed:
            self.ui.gpuLabel.text = "Dependencies missing: " + ", ".join(needed)
            return
        text, warning = gpu_report()
        self.ui.gpuLabel.text = text + (f"\nWARNING: {warning}" if warning else "")

    def cleanup(self) -> None:
        self.removeObservers()
        if self._job:
            self._job[1].cancel()
        if self.logic:
            self.logic.shutdown()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

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
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    # ------------------------------------------------------------------ description
    def description(self):
        """The query: free text if attributes are empty, else the attribute rows."""
        values = {
            key: getattr(self.ui, name).currentText.strip()
            for key, name in ATTRIBUTE_WIDGETS.items()
            if key != "specific_features"
        }
        features = (
            [f for f in self.ui.specificFeaturesComboBox.checkedIndexes()]
            if hasattr(self.ui.specificFeaturesComboBox, "checkedIndexes")
            else []
        )
        values["specific_features"] = [
            self.ui.specificFeaturesComboBox.itemText(i.row()) for i in features
        ]
        if any(values.values()):
            return {k: v for k, v in values.items() if v}
        text = self.ui.freeTextEdit.toPlainText().strip()
        return text or None

    def onPresetChanged(self, index: int) -> None:
        category = self.ui.presetComboBox.itemData(index)
        if not category:
            return
        from malenia.attributes import load_presets

        description = load_presets()[category].description
        for key, name in ATTRIBUTE_WIDGETS.items():
            if key != "specific_features":
                getattr(self.ui, name).currentText = getattr(description, key) or ""

    def onFillFromText(self) -> None:
        from malenia.attributes import parse_text

        result = parse_text(self.ui.freeTextEdit.toPlainText())
        for key, name in ATTRIBUTE_WIDGETS.items():
            if key != "specific_features":
                getattr(self.ui, name).currentText = getattr(result.description, key) or ""
        self.ui.statusLabel.text = " ".join(result.notes) or "Attributes filled from the text."

    # ------------------------------------------------------------------ runs
    def onSegmentButton(self) -> None:
        if self._job:
            self._job[1].cancel()
            self.ui.statusLabel.text = "Cancelling..."
            return
        query = self.description()
        if not query:
            self.ui.statusLabel.text = (
                "Describe the lesion first: a preset, attributes or free text."
            )
            return
        self._start(query)

    def onFindAllButton(self) -> None:
        if not self._job:
            self._start(None)

    def _start(self, query) -> None:
        from malenia.inference import CancelToken

        node = self._parameterNode.inputVolume
        try:
            array, ijk_to_ras = self.logic.core.volume_input(node)
        except Exception as error:
            self.ui.statusLabel.text = str(error)
            return
        roi = self.logic.core.roi_from_node(self._parameterNode.roi)
        token, outcome = CancelToken(), {"progress": (0, 1)}

        def progress(stage, done, total):
            outcome["progress"] = (done, total)

        def work():
            try:
                outcome["result"] = self.logic.core.engine_job(
                    array, ijk_to_ras, query, self._parameterNode.threshold, roi, progress, token
                )
            except Exception as error:  # shown in the status line, scene untouched
                outcome["error"] = error

        thread = threading.Thread(target=work, daemon=True)
        self._job = (thread, token, outcome, node)
        self.ui.segmentButton.text = "Cancel"
        self.ui.statusLabel.text = "Encoding the volume (first run) ..."
        thread.start()
        self._pollTimer.start()

    def _poll(self) -> None:
        thread, token, outcome, node = self._job
        done, total = outcome["progress"]
        self.ui.progressBar.maximum = max(total, 1)
        self.ui.progressBar.value = done
        if thread.is_alive():
            return
        self._pollTimer.stop()
        self._job = None
        self.ui.segmentButton.text = "Segment"
        if "error" in outcome:
            self.ui.statusLabel.text = f"Nothing changed: {outcome['error']}"
            return
        volume_id, result = outcome["result"]
        try:
            self._run = self.logic.core.apply_result(
                node, volume_id, result, self._parameterNode.outputSegmentation
            )
        except Exception as error:
            self.ui.statusLabel.text = f"Nothing changed: {error}"
            return
        self._parameterNode.outputSegmentation = self._run.output_node
        self._fillTable()
        note = getattr(self.logic.client, "restarted_note", "")
        self.ui.statusLabel.text = (
            f"{len(self._run.segment_ids)} lesion(s) for: {result.query}. {note}".strip()
        )

    def onThresholdChanged(self, value: float) -> None:
        if self._run and not self._job:
            try:
                self._run = self.logic.core.recut(self._run, value)
                self._fillTable()
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
        centre = self._run.output_node.GetSegmentCenterRAS(segment_id)
        slicer.modules.markups.logic().JumpSlicesToLocation(*centre, True)

    def onInstallDependencies(self) -> None:
        from MaleniaSegmentLib.dependencies import install, missing

        needed = missing()
        if not needed:
            return
        if not slicer.util.confirmOkCancelDisplay(
            "MaleniaSegment will install these Python packages into Slicer:\n\n"
            + "\n".join(needed)
            + "\n\nSlicer's own SimpleITK, numpy and requests are not changed."
        ):
            return
        with slicer.util.tryWithErrorDisplay("Installing dependencies failed.", waitCursor=True):
            self.ui.statusLabel.text = install(needed)
        self._showDevice()


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
        self.client.stop()


class MaleniaSegmentTest(ScriptedLoadableModuleTest):
    """End-to-end inside Slicer: sample CT -> preset -> new segments -> re-cut."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_sample_ct_end_to_end()

    def test_sample_ct_end_to_end(self):
        import SampleData

        registerSampleData()
        volume = SampleData.downloadSample("MaleniaSampleCT")
        self.assertIsNotNone(volume)
        logic = MaleniaSegmentLogic()
        try:
            user = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "user")
            user.GetSegmentation().AddEmptySegment("mine", "Renal cyst 1")
            run = logic.core.segment(volume, "renal cyst", threshold=0.5, output_node=user)
            self.assertIn(
                "mine",
                [
                    user.GetSegmentation().GetNthSegmentID(i)
                    for i in range(user.GetSegmentation().GetNumberOfSegments())
                ],
            )
            for segment_id in run.segment_ids:
                self.assertNotEqual(
                    user.GetSegmentation().GetSegment(segment_id).GetName(), "Renal cyst 1"
                )
            logic.core.recut(run, 0.7)
            self.assertEqual(user.GetSegmentation().GetSegment("mine").GetName(), "Renal cyst 1")
        finally:
            logic.shutdown()
        self.delayDisplay("MaleniaSegment end-to-end test passed")
