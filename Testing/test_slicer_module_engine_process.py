"""The module's path to the engine: a real `malenia serve` child process on loopback, driven by
SegmentationSession on real MRML; a killed engine is reported and restarted on the next run."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core wheel not installed")

from malenia.errors import MaleniaError  # noqa: E402
from MaleniaSegmentLib import volumes  # noqa: E402
from MaleniaSegmentLib.engine_process import EngineProcessClient  # noqa: E402
from MaleniaSegmentLib.logic import SegmentationSession  # noqa: E402


@pytest.mark.slow  # two engine start-ups (torch import + weights): ~50 s on 2 busy cores
@pytest.mark.timeout(300)
def test_real_engine_process_segments_survives_a_crash_and_restarts(slicer_scene):
    rng = np.random.default_rng(1)
    array = np.full((24, 40, 40), -1000, np.int16)
    array[:, 4:36, 4:36] = (30 + rng.normal(0, 10, (24, 32, 32))).astype(np.int16)
    ijk_to_ras = volumes.ijk_to_ras_from_lps((2.0, 2.0, 2.5), (-40.0, -40.0, 0.0), np.eye(3))
    ct = volumes.add_volume_node(slicer_scene.scene, array, ijk_to_ras, "CT")
    client = EngineProcessClient(device="cpu")
    try:
        logic = SegmentationSession(slicer_scene, client)
        run = logic.segment(ct, "renal cyst", threshold=0.5)
        assert client.take_note() == ""  # first start is no news
        labelmap = run.result.labelmap
        assert labelmap.shape == array.shape
        for segment_id, info in zip(
            run.segment_ids,
            [x for x in run.result.lesions if (labelmap == x["index"]).any()],
            strict=True,
        ):
            exported = volumes.export_segment_to_array(
                slicer_scene.segmentations_logic, run.output_node, segment_id, ct
            )
            assert np.array_equal(exported, labelmap == info["index"])
        nodes = slicer_scene.scene.GetNumberOfNodes()

        os.killpg(client.process.pid, signal.SIGKILL)  # the engine dies (OOM, crash)
        client.process.popen.wait(timeout=30)
        with pytest.raises(MaleniaError, match="run again"):
            logic.recut(run, 0.6)  # restarts the engine, which lost the cached probabilities
        assert "had stopped" in client.take_note()
        assert slicer_scene.scene.GetNumberOfNodes() == nodes
        assert volumes.segment_ids(run.output_node) == run.segment_ids

        again = logic.segment(ct, "renal cyst", threshold=0.5)  # uploads the volume again
        assert client.process.restarts == 1
        assert np.array_equal(again.result.labelmap, labelmap)
    finally:
        client.close()
