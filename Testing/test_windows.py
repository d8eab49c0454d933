"""The sliding-window tiling the engine's cache rests on: cores tile the encoded box once,
and the predictor runs the network once per non-air window, whatever MONAI asks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from malenia.cancel import CancelToken
from malenia.errors import CancelledError
from malenia.inference.windows import (
    Window,
    WindowEncoder,
    crop_box,
    extract,
    window_cores,
    window_positions,
)

PATCH = (8, 8, 8)


@pytest.mark.parametrize(
    ("shape", "region"),
    [
        ((30, 41, 17), (slice(0, 30), slice(0, 41), slice(0, 17))),  # whole grid
        ((30, 41, 17), (slice(3, 25), slice(10, 40), slice(2, 9))),  # a body box inside it
        ((5, 41, 6), (slice(0, 5), slice(0, 41), slice(0, 6))),  # thinner than one window
    ],
)
@pytest.mark.parametrize("overlap", [0.25, 0.5])
def test_cores_tile_the_encoded_box_exactly_once(shape, region, overlap):
    start, size = crop_box(region, PATCH)
    assert all(s >= p for s, p in zip(size, PATCH, strict=True))
    positions = window_positions(start, size, PATCH, overlap)
    cores = window_cores(positions, PATCH, shape)
    count = np.zeros(shape, int)
    for position, core in cores.items():
        count[core] += 1
        for c, p, n in zip(core, position, PATCH, strict=True):  # a core lies in its window
            assert p <= c.start and c.stop <= p + n
    box = tuple(
        slice(max(s, 0), min(s + n, length))
        for s, n, length in zip(start, size, shape, strict=True)
    )
    assert (count[box] == 1).all()
    assert count.sum() == count[box].sum()  # nothing outside the box


def test_extract_repeats_the_edge_outside_the_grid():
    hu = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    box = extract(hu, (-2, 0, 1), (8, 5, 6))  # 2 slices before, 2 after, 1 column past x
    assert box.shape == (8, 5, 6) and box.dtype == np.float32
    np.testing.assert_array_equal(box[2:6, :, :5], hu[:, :, 1:])
    for z in (0, 1):
        np.testing.assert_array_equal(box[z], box[2])
    for z in (6, 7):
        np.testing.assert_array_equal(box[z], box[5])
    np.testing.assert_array_equal(box[..., 5], box[..., 4])


def _fake_run_batch(calls):
    """A network stand-in that records what it was given and returns one Window per
    window: the predictor's bookkeeping is under test here, the network is tested in
    test_engine.py."""

    def run_batch(images, placed):
        calls.append([start for start, _ in placed])
        windows = [
            Window(core, torch.zeros(2, 4), torch.zeros(2), torch.zeros(1, 1, 1, 1))
            for _, core in placed
        ]
        return windows, [torch.full(PATCH, float(len(calls))) for _ in placed]

    return run_batch


def _coords(positions, box_start):
    return [
        [
            slice(None),
            slice(None),
            *(slice(p - s, p - s + n) for p, s, n in zip(position, box_start, PATCH, strict=True)),
        ]
        for position in positions
    ]


def test_the_predictor_skips_air_and_never_runs_a_window_twice():
    shape = (16, 16, 16)
    start, size = crop_box(tuple(slice(0, n) for n in shape), PATCH)
    positions = window_positions(start, size, PATCH, 0.5)
    calls, seen = [], []
    encoder = WindowEncoder(
        _fake_run_batch(calls), start, window_cores(positions, PATCH, shape), PATCH,
        empty_level=-0.5, progress=lambda *update: seen.append(update),
    )  # fmt: skip
    batch = torch.full((len(positions), 1, *PATCH), -1.0)  # air everywhere ...
    batch[1:3] = 0.2  # ... but in two windows
    out = encoder(batch, _coords(positions, start))
    assert calls == [[positions[1], positions[2]]]  # one network batch: the two body windows
    assert len(encoder.windows) == 2 and len(encoder.done) == len(positions)
    assert (out[1:3] == 1.0).all() and (out[0] == 0).all() and (out[3:] == 0).all()
    again = encoder(batch[1:3], _coords(positions[1:3], start))  # MONAI asks again (OOM retry)
    assert calls == [[positions[1], positions[2]]] and (again == 1.0).all()
    assert seen[-1] == ("encoding", len(positions), len(positions))


def test_the_predictor_stops_before_the_network_when_cancelled():
    shape = (8, 8, 16)
    start, size = crop_box(tuple(slice(0, n) for n in shape), PATCH)
    positions = window_positions(start, size, PATCH, 0.25)
    calls, token = [], CancelToken()
    encoder = WindowEncoder(
        _fake_run_batch(calls), start, window_cores(positions, PATCH, shape), PATCH,
        empty_level=-0.5, cancel=token,
    )  # fmt: skip
    token.cancel()
    with pytest.raises(CancelledError):
        encoder(torch.zeros((len(positions), 1, *PATCH)), _coords(positions, start))
    assert calls == [] and not encoder.windows
