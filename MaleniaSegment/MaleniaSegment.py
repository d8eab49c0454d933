"""MaleniaSegment: zero-shot CT lesion segmentation from a description of the lesion.

The widget only wires the UI to MaleniaSegmentLib (logic.SegmentationSession does the work,
background.RunController drives a run from the widget's timers), which runs headless and is
tested without Qt. The model runs in a separate engine process, so this (Slicer's) process
never imports torch.

Needs Slicer 5.10 or newer. This file stays importable on Python 3.9 (Slicer 5.8), so that an
older Slicer shows that message in the panel; MaleniaSegmentLib and the engine are imported
only after the check (Testing/test_slicer_ui_static.py checks both with vermin).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import (
    Choice,
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

from MaleniaSegmentWidgets.connectors import (  # noqa: E402 - found through the path above
    ComboBoxDataToStrConnector,
    EditableComboBoxToStrConnector,
    PlainTextEditToStrConnector,
)

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
ORGAN_MAP_CHOICES = ["model", "astra"]  # MaleniaSegmentLib.engine_process.ORGAN_MAPS


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


def _versionProblem():
    """A message when this Slicer is too old for the module (see MaleniaSegmentLib.compat)."""
    from MaleniaSegmentLib.compat import version_problem

    return version_problem((slicer.app.majorVersion, slicer.app.minorVersion), sys.version_info)


def registerSampleData():
    """The bundled sample CT (real anatomy, two synthetic lesions) in the Sample Data module."""
    if _versionProblem():
        return
    import SampleData
    from MaleniaSegmentLib.sample_data import sample_source

    SampleData.SampleDataLogic.registerCustomSampleDataSource(**sample_source())


# ---------------------------------------------------------------------------- parameters
# Parameters bound with MaleniaSegmentWidgets' connectors (the rest use SlicerParameterName in
# the .ui).
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
    "freeText": ("freeTextEdit", PlainTextEditToStrConnector),
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
    organMaps: Annotated[str, Choice(ORGAN_MAP_CHOICES)] = "model"
    outputSegmentation: vtkMRMLSegmentationNode


# ---------------------------------------------------------------------------- widget
class MaleniaSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.controller = None  # MaleniaSegmentLib.background.RunController
        self._gpuProbe = None
        self._parameterNode = None
        self._parameterNodeGuiTags = []
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(100)
        self._pollTimer.connect("timeout()", self._poll)
        self._recutTimer = qt.QTimer()  # re-cut once the slider rests, not on every step
        self._recutTimer.setSingleShot(True)
        self._recutTimer.setInterval(150)
        self._recutTimer.connect("timeout()", self._recut)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        problem = _versionProblem()
        if problem:  # an older Slicer: say so instead of failing on newer Python
            label = qt.QLabel(problem)
            label.wordWrap = True
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            return
        from MaleniaSegmentLib.background import RunController
        from MaleniaSegmentLib.dependencies import GpuProbe

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MaleniaSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MaleniaSegmentLogic()
        self.controller = RunController(
            self.logic.session, self.logic.client, self._pollTimer, self._recutTimer
        )
        self._gpuProbe = GpuProbe()
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
        self._shortcuts = []
        for sequence in ("Ctrl+Return", "Ctrl+Enter"):  # Return, and the keypad's Enter
            shortcut = qt.QShortcut(qt.QKeySequence(sequence), self.parent)
            shortcut.connect("activated()", self.onSegmentButton)
            self._shortcuts.append(shortcut)
        self._showDependencies()
        self.initializeParameterNode()

    def _fillVocabulary(self) -> None:
        from malenia.attributes import load_presets, load_vocabulary
        from malenia.attributes.locations import location_choices

        vocabulary = load_vocabulary()
        self.ui.presetComboBox.addItem("(no preset)", "")
        for preset in load_presets().values():
            suffix = "" if preset.seen_in_training else "  (zero-shot)"
            self.ui.presetComboBox.addItem(preset.name + suffix, preset.category)
        for key, name in ATTRIBUTE_WIDGETS.items():
            combo = getattr(self.ui, name)
            combo.addItem("")
            combo.addItems(
                location_choices(vocabulary) if key == "location" else vocabulary.values(key)
            )

    def _showDependencies(self) -> None:
        """Missing packages -> the install button; else probe the GPU in the background."""
        from MaleniaSegmentLib.dependencies import missing

        needed = missing()
        self.ui.installButton.visible = bool(needed)
        if needed:
            self.ui.gpuLabel.text = "Dependencies missing: " + ", ".join(needed)
            return
        self.ui.gpuLabel.text = "Detecting the GPU ..."
        self._gpuProbe.start()  # forgets the previous report (e.g. from before an install)
        qt.QTimer.singleShot(500, self._showGpu)

    def _showGpu(self) -> None:
        if self._gpuProbe is None:  # cleaned up
            return
        report = self._gpuProbe.report()
        if report is None:
            qt.QTimer.singleShot(500, self._showGpu)
            return
        from MaleniaSegmentLib.dependencies import assess_gpu

        text, warning = assess_gpu(report)
        self.ui.gpuLabel.text = text + (f"\nWARNING: {warning}" if warning else "")

    def cleanup(self) -> None:
        self.removeObservers()
        self._pollTimer.stop()
        self._recutTimer.stop()
        self._gpuProbe = None
        if self.controller:
            self.controller.shutdown()  # stops both timers, cancels a run, closes the engine
        elif self.logic:
            self.logic.shutdown()

    def enter(self) -> None:
        if self.controller:
            self.initializeParameterNode()

    def exit(self) -> None:
        if self.controller:
            self.setParameterNode(None)  # a run still in progress lands without it

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self.controller.scene_closing()
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
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply
            )
        self._parameterNode = inputParameterNode
        self.controller.parameter_node = inputParameterNode
        if self._parameterNode:
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._parameterNodeGuiTags = [
                self._parameterNode.connectGui(self.ui),  # SlicerParameterName widgets
                self._parameterNode.connectParametersToGui({
                    parameter: connector(getattr(self.ui, widget))
                    for parameter, (widget, connector) in CUSTOM_BINDINGS.items()
                }),
            ]  # fmt: skip
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        """Enable Segment / Find all only when they can run, with a tooltip saying why not."""
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        state = self.controller.buttons(volume)
        self.ui.segmentButton.text = state.segment_text
        self.ui.segmentButton.enabled = state.segment_enabled
        self.ui.segmentButton.toolTip = state.segment_tooltip
        self.ui.findAllButton.enabled = state.find_all_enabled
        self.ui.findAllButton.toolTip = state.find_all_tooltip

    # ------------------------------------------------------------------ description
    def _attributes(self) -> dict:
        return {
            key: getattr(self._parameterNode, parameter)
            for key, parameter in ATTRIBUTE_PARAMETERS.items()
        }

    def _setAttributes(self, description) -> None:
        from MaleniaSegmentLib.logic import attribute_rows

        rows = attribute_rows(description.to_dict())
        with slicer.util.NodeModify(self._parameterNode):
            for key, parameter in ATTRIBUTE_PARAMETERS.items():
                setattr(self._parameterNode, parameter, rows[key])

    def onPresetChosen(self, index: int) -> None:
        """A preset fills the attribute rows (which stay editable)."""
        category = self.ui.presetComboBox.itemData(index)
        if not category:
            return
        from malenia.attributes import load_presets

        preset = load_presets()[category]
        self._setAttributes(preset.query_description)
        seen = "seen in training" if preset.seen_in_training else "zero-shot: never seen"
        self.ui.statusLabel.text = f"Preset {preset.name} ({seen}); edit any row before running."

    def onFillFromText(self) -> None:
        from malenia.attributes import parse_text

        result = parse_text(self._parameterNode.freeText)
        self._setAttributes(result.description)
        unparsed = f" Not understood: {', '.join(result.unparsed)}." if result.unparsed else ""
        notes = " ".join(result.notes)
        self.ui.statusLabel.text = (f"Attributes filled from the text. {notes}{unparsed}").strip()

    # ------------------------------------------------------------------ runs
    def onSegmentButton(self) -> None:
        if self.controller.cancel():
            self.ui.statusLabel.text = "Cancelling ..."
            return
        from MaleniaSegmentLib.logic import build_query

        p = self._parameterNode
        try:
            query = build_query(self._attributes(), p.freeText, p.preset)
        except Exception as error:
            self.ui.statusLabel.text = str(error)
            return
        self._start(query)

    def onFindAllButton(self) -> None:
        if not self.controller.busy:
            self._start(None)

    def _start(self, query) -> None:
        """The controller reads the scene here (main thread) and runs the engine on a worker."""
        p = self._parameterNode
        try:
            self.controller.start(
                p.inputVolume,
                query,
                p.outputSegmentation,
                p.roi,
                p.threshold,
                p.device,
                p.organMaps,
            )
        except Exception as error:
            self.ui.statusLabel.text = str(error)
            return
        self._checkCanApply()
        self.ui.statusLabel.text = "Running (the first run on a volume encodes it) ..."

    def _poll(self) -> None:
        update = self.controller.tick()
        stage, done, total = update.progress
        self.ui.progressBar.maximum = max(total, 1)
        self.ui.progressBar.value = done
        self.ui.progressBar.format = f"{stage}: %p%"
        if not update.finished:
            return
        self._checkCanApply()
        self.ui.progressBar.format = "idle"
        self.ui.progressBar.value = 0
        if update.run is not None:
            self._fillTable()
        self.ui.statusLabel.text = update.message

    def onThresholdChanged(self, value: float) -> None:
        self.controller.threshold_changed()

    def _recut(self) -> None:
        message = self.controller.recut()
        if message is None:
            return
        self._fillTable()
        self.ui.statusLabel.text = message

    def _fillTable(self) -> None:
        run = self.controller.run
        rows = self.logic.results_table(run) if run else []
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
            x, y, z = self.logic.lesion_centre_ras(self.controller.run, segment_id)
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
    """Slicer-side glue: Slicer's module logics + the engine process for the headless
    ``SegmentationSession``, which does the work (each method below hands over to it)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        from MaleniaSegmentLib.engine_process import EngineProcessClient
        from MaleniaSegmentLib.logic import SegmentationSession

        class _Logics:
            segmentations_logic = slicer.modules.segmentations.logic()
            terminologies_logic = slicer.modules.terminologies.logic()

        self.client = EngineProcessClient()
        self.session = SegmentationSession(_Logics(), self.client)

    def getParameterNode(self):
        return MaleniaSegmentParameterNode(super().getParameterNode())

    def segment(self, volume, query, **options):
        """New segments for ``query`` (preset name, free text or attribute dict)."""
        return self.session.segment(volume, query, **options)

    def find_lesions(self, volume, **options):
        """New segments for every lesion the model sees, without a description."""
        return self.session.find_lesions(volume, **options)

    def recut(self, run, threshold: float):
        """The run's segments again at ``threshold``, from the engine's cached maps."""
        return self.session.recut(run, threshold)

    def results_table(self, run) -> list:
        return self.session.results_table(run)

    def lesion_centre_ras(self, run, segment_id: str):
        return self.session.lesion_centre_ras(run, segment_id)

    def shutdown(self) -> None:
        self.client.close()


# ---------------------------------------------------------------------------- self-test
class MaleniaSegmentTest(ScriptedLoadableModuleTest):
    """End-to-end inside Slicer: sample CT -> preset -> new segments -> re-cut -> find all,
    through the real engine process."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    @staticmethod
    def _skipReason():
        """Set on a build machine without the engine's packages (torch): the test needs the
        real engine, and a test never installs anything."""
        from MaleniaSegmentLib.compat import self_test_skip_reason

        return self_test_skip_reason(
            (slicer.app.majorVersion, slicer.app.minorVersion), sys.version_info
        )

    def runTest(self):
        reason = self._skipReason()
        if reason:
            self.delayDisplay(f"MaleniaSegment self-test skipped: {reason}")
            return
        self.setUp()
        self.test_sample_ct_end_to_end()

    def test_sample_ct_end_to_end(self):
        reason = self._skipReason()
        if reason:
            self.skipTest(reason)
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
            run = logic.segment(volume, "renal cyst", threshold=0.5, output_node=user)
            self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes_before)
            segmentation = user.GetSegmentation()
            self.assertEqual(segmentation.GetSegment("mine").GetName(), "Renal cyst 1")
            for segment_id in run.segment_ids:
                segment = segmentation.GetSegment(segment_id)
                self.assertNotEqual(segment.GetName(), "Renal cyst 1")
                self.assertEqual(segments.tag(segment, "Malenia.Threshold"), "0.500")
            recut = logic.recut(run, 0.7)
            self.assertEqual(segmentation.GetSegment("mine").GetName(), "Renal cyst 1")
            for segment_id in recut.segment_ids:
                segment = segmentation.GetSegment(segment_id)
                self.assertEqual(segments.tag(segment, "Malenia.Threshold"), "0.700")
            found = logic.find_lesions(volume, threshold=0.5)
            self.assertIsNot(found.output_node, user)
            self.delayDisplay(
                f"{len(run.segment_ids)} renal cyst segment(s); "
                f"{len(found.segment_ids)} lesion(s) found in all"
            )
        finally:
            logic.shutdown()
        self.delayDisplay("MaleniaSegment end-to-end test passed")
