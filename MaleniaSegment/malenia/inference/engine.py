"""The inference engine, shaped like segment-anything's predictor: encode a volume once,
then answer many cheap queries (a preset, attributes or free text; a new threshold).

    engine = Engine.load()                       # bundled weights, auto device
    encoded = engine.encode(read_volume("ct.nii.gz"))   # heavy: sliding windows, cached
    result = encoded.segment("renal cyst")       # light: prompt -> probability map
    result = encoded.recut(result, 0.7)          # numpy only
    lesions = encoded.find_lesions()             # every lesion + predicted attributes
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from malenia.astra import ORGAN_FEATURES, ORGAN_FEATURES_ENV
from malenia.attributes import KnowledgeTable, LesionDescription, resolve_query
from malenia.attributes.locations import sub_locations
from malenia.attributes.schema import ATTRIBUTE_KEYS
from malenia.errors import CancelledError, MaleniaError, UnknownAttributeValueError, WeightsError
from malenia.inference.device import is_out_of_memory, log, pick_device
from malenia.inference.postprocess import (
    LesionInfo,
    components,
    foreground_box,
    longest_axial_diameter,
)
from malenia.io import CTVolume, validate_ct
from malenia.preprocessing import (
    body_bounding_box,
    normalize_ct,
    roi_spacing_mm,
    to_input_grid,
    to_model_grid,
)

Progress = Callable[[str, int, int], None]


class CancelToken:
    """Set from any thread; the engine checks it between windows."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise CancelledError("Cancelled by the user; nothing was changed.")


def default_weights_path() -> Path:
    from malenia.paths import resource

    return resource("Weights", "malenia-tiny.safetensors")


@dataclass
class Window:
    """What a query needs of one sliding window: its final mask tokens and the mask
    features F4 of its core, the voxels nearer to its centre than to any other window's.
    Cores tile the encoded box, so a query computes every voxel once, with no blending."""

    slices: tuple[slice, slice, slice]  # the core, on the model grid
    tokens: torch.Tensor  # [N, E] final mask tokens
    objectness: torch.Tensor  # [N]
    f4: torch.Tensor  # [C, d, h, w] float32 mask features of the core
    # Location features of the whole window at 1/4 resolution (None without a location
    # head) and where the core lies inside the window.
    location: torch.Tensor | None = None
    local: tuple[slice, slice, slice] | None = None


def _cores(starts: list[int], patch: int, length: int) -> dict[int, slice]:
    """Per window start on one axis: the part of the axis nearest to that window's centre
    (boundaries half-way between neighbouring centres), clipped to the grid."""
    ordered = sorted(set(starts))
    bounds = [max(ordered[0], 0)]
    bounds += [(a + b + patch) // 2 for a, b in itertools.pairwise(ordered)]
    bounds.append(min(ordered[-1] + patch, length))
    return {s: slice(bounds[i], bounds[i + 1]) for i, s in enumerate(ordered)}


EMPTY_WINDOW_HU = -500.0  # a window with nothing denser than this is air: skip the network


def _crop_box(region, patch) -> tuple[list[int], list[int]]:
    """Start and size of the box MONAI slides over: the region, grown to at least one
    patch per axis (centred; may reach outside the grid, where `_extract` repeats the edge)."""
    starts, sizes = [], []
    for r, p in zip(region, patch, strict=True):
        length = r.stop - r.start
        starts.append(r.start - max(0, p - length) // 2)
        sizes.append(max(length, p))
    return starts, sizes


# A small ROI is zoomed only when it is mostly lung (its median below this): the model learnt
# the finer grid on LIDC nodule boxes only.
ZOOM_MEDIAN_HU = -400.0


class Engine:
    """A loaded model on a device, with an LRU cache of encoded volumes."""

    def __init__(
        self,
        model,
        card: dict,
        device: torch.device,
        device_note: str,
        weights_path: Path | None = None,
        organ_mapper=None,
    ) -> None:
        self.model, self.card, self.device, self.device_note = model, card, device, device_note
        self.weights_path = weights_path
        self.organ_mapper = organ_mapper  # malenia.astra.OrganMapper, or the location head
        self.config = model.config
        self.window_batch = 4 if device.type == "cuda" else 1
        self.grounding = True  # answers grounded in the named organ when the weights can
        self.overlap = 0.25
        self._cache: OrderedDict[str, EncodedVolume] = OrderedDict()
        self.cache_size = 2
        from malenia.text import load_embedding_table

        self.table = load_embedding_table()
        self.knowledge = KnowledgeTable.load()
        if card.get("embedding_table_sha256") not in (None, self.table.sha256):
            log.warning(
                "the attribute embedding table differs from the one the weights were trained with"
            )

    @classmethod
    def load(
        cls,
        weights: str | Path | None = None,
        device: str = "auto",
        organ_features: str | None = None,
    ) -> Engine:
        """``organ_features``: "model" (the location head) or "astra" (the extra's pretrained
        encoder; checked and loaded here, before any CT is read); None: $MALENIA_ORGAN_FEATURES,
        else "model"."""
        import os

        from malenia.weights import load_weights

        organ_features = organ_features or os.environ.get(ORGAN_FEATURES_ENV) or "model"
        if organ_features not in ORGAN_FEATURES:
            raise WeightsError(
                f"Unknown organ feature source '{organ_features}' (from --organ-features or "
                f"${ORGAN_FEATURES_ENV}): use one of {', '.join(ORGAN_FEATURES)}."
            )

        path = Path(weights) if weights else default_weights_path()
        if not path.is_file():
            raise WeightsError(
                f"No model weights found at {path}. "
                + ("This checkout has no trained weights bundled yet; " if weights is None else "")
                + "train them with `malenia train --config configs/tiny_cpu.json` or pass --weights PATH."
            )
        torch_device, note = pick_device(device)
        model, card = load_weights(path, "cpu")
        mapper = None
        if organ_features == "astra":
            from malenia.astra.organ_maps import load_organ_mapper

            mapper = load_organ_mapper()
        return cls(model.to(torch_device).eval(), card, torch_device, note, path, mapper)

    @property
    def default_threshold(self) -> float:
        """The threshold these weights were calibrated for on the validation set
        (``malenia calibrate``, stored in the model card); 0.5 for an uncalibrated card."""
        value = (self.card.get("postprocess") or {}).get("threshold")
        return float(value) if value is not None else 0.5

    @property
    def anatomy_grounding(self) -> bool:
        """Whether prompts are answered in the organ their location names as well
        (``malenia.inference.grounding``): weights with a location head, not switched off."""
        return self.grounding and self.model.location_head is not None

    @property
    def organ_source(self) -> str:
        """What grounded answers take their organ maps from (recorded with evaluations)."""
        return self.organ_mapper.source if self.organ_mapper else "location head"

    @property
    def model_id(self) -> str:
        return f"{self.card.get('name', 'malenia')}@{str(self.card.get('sha256', ''))[:12]}"

    # ------------------------------------------------------------------ heavy pass
    def encode(
        self,
        volume: CTVolume,
        roi=None,
        progress: Progress | None = None,
        cancel: CancelToken | None = None,
    ) -> EncodedVolume:
        """Run the image encoder over the volume (or the ROI) once; cached by content."""
        validate_ct(volume)
        key = volume.key() + repr(roi)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        spacing = tuple(self.config.spacing_mm)
        crop = None
        if roi is not None:
            finer = roi_spacing_mm(np.asarray(roi[1], float)[::-1], spacing, self.config.patch_size)
            crop = _roi_crop(volume, roi) if finer != spacing else None
            # The finer grid was learnt on boxes around lung nodules: other boxes (a box in
            # the liver is soft tissue, not air) stay on the model's grid.
            if crop is not None and float(np.median(crop.array)) < ZOOM_MEDIAN_HU:
                spacing = finer
        zoomed = spacing != tuple(self.config.spacing_mm)
        # A small ROI in the lung is encoded on a finer grid (``roi_spacing_mm``): only the
        # ROI itself is resampled, and all of it is encoded (a lung nodule's box is mostly
        # air, which the body box would cut away).
        model_image = to_model_grid(crop if zoomed else volume, spacing)
        hu = sitk.GetArrayFromImage(model_image)
        if zoomed:
            region = tuple(slice(0, n) for n in hu.shape)
        else:
            region = body_bounding_box(hu)
            if roi is not None:
                region = _intersect(region, _roi_slices(roi, model_image))
        origin_zyx = tuple(reversed(model_image.GetOrigin()))
        windows, any_lesion = self._encode_windows(
            hu, region, origin_zyx, progress, cancel, spacing
        )
        encoded = EncodedVolume(self, volume, model_image, hu.shape, windows, region, spacing)
        encoded.any_lesion = any_lesion
        if self.anatomy_grounding:  # labelled here, not in the first (interactive) query
            encoded.lesion_components()
        self._cache[key] = encoded
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return encoded

    def _encode_windows(
        self, hu, region, origin_zyx, progress, cancel, spacing
    ) -> tuple[list[Window], np.ndarray]:
        """MONAI sliding-window inference over the body/ROI box. The predictor runs the
        image encoder and the prompt-free mask decoder once per window and keeps that
        window's mask tokens and F4 (the cache later queries use); what MONAI blends is the
        prompt-free "any lesion" map that ``find_lesions`` reads. All-air windows skip the
        network. Progress and cancel are handled between batches of windows; after a GPU
        out-of-memory the run resumes with smaller batches, finished windows are kept."""
        from monai.data.utils import dense_patch_slices
        from monai.inferers import sliding_window_inference
        from monai.inferers.utils import _get_scan_interval

        patch = tuple(self.config.patch_size)
        crop_start, crop_size = _crop_box(region, patch)
        crop = _extract(hu, crop_start, crop_size)
        image = torch.from_numpy(normalize_ct(crop))[None, None]
        del crop
        positions = [
            tuple(c.start + s for c, s in zip(window, crop_start, strict=True))
            for window in dense_patch_slices(
                crop_size, patch, _get_scan_interval(crop_size, patch, 3, (self.overlap,) * 3)
            )
        ]
        total = len(positions)
        axis_cores = [_cores([p[a] for p in positions], patch[a], hu.shape[a]) for a in range(3)]
        cores = {p: tuple(axis_cores[a][p[a]] for a in range(3)) for p in positions}
        empty_level = float(normalize_ct(np.float32(EMPTY_WINDOW_HU)))
        done: dict[tuple[int, ...], Window | None] = {}
        any_lesion_of: dict[tuple[int, ...], torch.Tensor] = {}  # full window, until blended

        def predictor(batch: torch.Tensor, coords) -> torch.Tensor:
            out = torch.zeros((len(coords), 1, *patch))
            todo = []
            for b, coord in enumerate(coords):
                key = tuple(c.start + s for c, s in zip(coord[2:], crop_start, strict=True))
                if key in done:
                    if key in any_lesion_of:
                        out[b, 0] = any_lesion_of[key]
                elif float(batch[b].max()) < empty_level:
                    done[key] = None
                else:
                    todo.append((b, key))
            if todo:
                if cancel:
                    cancel.check()
                windows, maps = self._run_batch(
                    batch[[b for b, _ in todo]], [(k, cores[k]) for _, k in todo], origin_zyx,
                    spacing,
                )  # fmt: skip
                for (b, key), window, window_map in zip(todo, windows, maps, strict=True):
                    done[key] = window
                    any_lesion_of[key] = out[b, 0] = window_map
            if progress:
                progress("encoding", len(done), total)
            return out

        if progress:
            progress("encoding", 0, total)
        if cancel:
            cancel.check()
        while True:
            try:
                with warnings.catch_warnings():  # MONAI's own indexing style, not ours
                    warnings.filterwarnings("ignore", "Using a non-tuple sequence", UserWarning)
                    blended = sliding_window_inference(
                        image, patch, self.window_batch, predictor, overlap=self.overlap,
                        mode="gaussian", sigma_scale=0.125, cval=-1.0, sw_device="cpu",
                        device="cpu", with_coord=True,
                    )  # fmt: skip
                break
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                self._handle_oom()
        any_lesion = np.zeros(hu.shape, np.float32)
        inside, in_crop = _overlap(crop_start, crop_size, hu.shape)
        any_lesion[inside] = blended[0, 0].numpy()[in_crop]
        return [w for w in done.values() if w is not None], any_lesion

    def _handle_oom(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.window_batch > 1:
            self.window_batch //= 2
            self.device_note += (
                f"; GPU memory full, retrying with {self.window_batch} window(s) at a time"
            )
        elif self.device.type != "cpu":
            self.device = torch.device("cpu")
            self.model.to(self.device)
            self.device_note += "; GPU memory full even for one window, continuing on CPU"
        else:
            raise MaleniaError(
                "Out of memory on the CPU even for one window: crop the volume to a region of interest (ROI) and try again."
            )
        log.warning(self.device_note)

    @torch.no_grad()
    def _run_batch(
        self, images: torch.Tensor, placed, origin_zyx, spacing
    ) -> tuple[list[Window], list[torch.Tensor]]:
        """The heavy pass on a batch of windows ``placed`` = [(start, core slices)]: the
        final mask tokens and F4 of the core are kept (and the location features, for
        which the model grid's ``origin_zyx`` gives each window its scanner position); the
        prompt-free map of the whole window goes to MONAI's blending."""
        features = self.model.encode_image(images.to(self.device))
        tokens = self.model.mask_tokens(features)[-1]
        objectness = self.model.objectness(tokens).squeeze(-1)
        # Prompt-free map: the best objectness-weighted token mask.
        masks = torch.sigmoid(self.model.token_masks(tokens, features.f4))
        any_lesion = (masks * torch.sigmoid(objectness)[:, :, None, None, None]).amax(1).cpu()
        location = None
        # The location head knows organs at the model's spacing only: a zoomed ROI has none.
        if self.model.location_head is not None and spacing == tuple(self.config.spacing_mm):
            from malenia.model.network import plane_coordinates

            patch = self.config.patch_size
            coordinates = torch.stack(
                [
                    plane_coordinates(
                        [o + i * s for o, i, s in zip(origin_zyx, start, spacing, strict=True)],
                        spacing,
                        patch,
                    )
                    for start, _ in placed
                ]
            )
            location = self.model.location_feature_map(features.f2, coordinates.to(self.device))
            location = location.to("cpu", torch.float32)
        windows = []
        for b, (start, core) in enumerate(placed):
            local = tuple(slice(c.start - s, c.stop - s) for c, s in zip(core, start, strict=True))
            f4 = features.f4[b][(slice(None), *local)].to("cpu", torch.float32).contiguous()
            windows.append(
                Window(
                    core,
                    tokens[b].cpu(),
                    objectness[b].cpu(),
                    f4,
                    None if location is None else location[b],
                    local,
                )  # fmt: skip
            )
        return windows, list(any_lesion)


def _overlap(start, size, shape) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """(part of the grid, same part inside a box at ``start``) where the box meets the grid."""
    grid, box = [], []
    for s, p, n in zip(start, size, shape, strict=True):
        low, high = max(s, 0), min(s + p, n)
        grid.append(slice(low, high))
        box.append(slice(low - s, high - s))
    return tuple(grid), tuple(box)


def _extract(hu: np.ndarray, start, size) -> np.ndarray:
    """A box at ``start``; where it reaches outside the grid (a volume smaller than one
    window), the edge voxels are repeated: the model was trained on windows full of body, and
    a wall of air cutting through the abdomen makes it see nothing."""
    inside, in_box = _overlap(start, size, hu.shape)
    pad = [(b.start, n - b.stop) for b, n in zip(in_box, size, strict=True)]
    return np.pad(hu[inside].astype(np.float32, copy=False), pad, mode="edge")


def _roi_corner_indices(roi, image: sitk.Image) -> np.ndarray:
    """[8, 3] continuous (x, y, z) indices on ``image`` of the corners of an ROI given as
    (centre RAS mm, size mm)."""
    centre, size = np.asarray(roi[0], float), np.asarray(roi[1], float)
    corners = [
        centre + np.array(signs) * size / 2 for signs in itertools.product((-1, 1), repeat=3)
    ]
    return np.array(
        [image.TransformPhysicalPointToContinuousIndex(tuple(c * [-1, -1, 1])) for c in corners]
    )


def _roi_outside() -> UnknownAttributeValueError:
    return UnknownAttributeValueError(
        "The region of interest lies outside the volume; move it over the anatomy."
    )


def _roi_slices(roi, model_image) -> tuple[slice, slice, slice]:
    """ROI given as (centre RAS mm, size mm) -> index box on the model grid (every voxel
    the box touches)."""
    indices = _roi_corner_indices(roi, model_image)
    low = np.maximum(np.floor(indices.min(0)).astype(int), 0)
    high = np.minimum(np.ceil(indices.max(0)).astype(int) + 1, model_image.GetSize())
    if (high <= low).any():
        raise _roi_outside()
    return tuple(slice(int(low[i]), int(high[i])) for i in (2, 1, 0))  # type: ignore[return-value]


def _roi_crop(volume: CTVolume, roi) -> CTVolume:
    """The part of ``volume`` inside an ROI (the voxels whose centres it holds), on its
    own grid."""
    image = volume.to_sitk()
    indices = _roi_corner_indices(roi, image)
    low = np.maximum(np.floor(indices.min(0) + 0.5).astype(int), 0)
    high = np.minimum(np.ceil(indices.max(0) - 0.5).astype(int) + 1, image.GetSize())
    if (high <= low).any():
        raise _roi_outside()
    crop = sitk.RegionOfInterest(image, [int(v) for v in high - low], [int(v) for v in low])
    return CTVolume.from_sitk(crop, volume.name)


def _intersect(a, b):
    out = tuple(
        slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b, strict=True)
    )
    return tuple(s if s.stop > s.start else b[i] for i, s in enumerate(out))


@dataclass
class SegmentationResult:
    """Probabilities and lesions of one query; the labelmap on the input grid is made on
    first access (so that a re-cut stays cheap)."""

    encoded: EncodedVolume
    probability: np.ndarray  # model grid, float32
    labels_model: np.ndarray  # model grid, int16
    lesions: list[LesionInfo]
    threshold: float
    description: LesionDescription | None
    mode: str  # "prompt" or "auto"
    query: str = ""
    min_volume_ml: float = 0.1
    ranking: list | None = None  # category ranking of a prompt (kept for re-cuts)
    # The location the answer was grounded in (``malenia.inference.grounding``), or None
    # when the prompt branch answered alone.
    grounded_in: str | None = None
    # Set when the grounding region is larger than its organ can be (``region_warning``).
    grounding_warning: str | None = None
    # Free-text words the parser did not use, and its notes (what it inferred, conflicts).
    not_understood: list[str] = field(default_factory=list)
    query_notes: list[str] = field(default_factory=list)
    _labelmap: np.ndarray | None = field(default=None, repr=False)

    @property
    def labelmap(self) -> np.ndarray:
        """int16 [k, j, i] on the input grid: 0 background, lesion i = i."""
        if self._labelmap is None:
            self._labelmap = self.encoded.to_input_labelmap(
                self.probability, self.labels_model, self.threshold
            )
        return self._labelmap

    @property
    def volume(self) -> CTVolume:
        return self.encoded.volume

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "query": self.query,
            "threshold": self.threshold,
            "grounded_in": self.grounded_in,
            "grounding_warning": self.grounding_warning,
            "not_understood": list(self.not_understood),
            "query_notes": list(self.query_notes),
            "description": self.description.to_dict() if self.description else None,
            "model": self.encoded.engine.model_id,
            "lesions": [lesion.to_dict() for lesion in self.lesions],
        }


class EncodedVolume:
    """A volume after the heavy pass: per-window mask tokens and mask features."""

    def __init__(
        self, engine: Engine, volume: CTVolume, model_image, shape, windows: list[Window], region,
        spacing_mm: tuple[float, float, float] | None = None,
    ) -> None:  # fmt: skip
        self.engine, self.volume, self.shape, self.windows, self.region = (
            engine,
            volume,
            shape,
            windows,
            region,
        )
        self.model_reference = _blank_like(model_image)
        self.input_reference = _blank_like(volume.to_sitk())
        self._maps: OrderedDict[str, np.ndarray] = OrderedDict()  # see _cached
        self.any_lesion = np.zeros(shape, np.float32)  # prompt-free map (set by the encoder)
        self._lesion_components = None  # any_lesion's lesions (see lesion_components)
        self._organ_maps = None  # the Astra organ maps of this volume (engine.organ_mapper)
        # The grid this volume was encoded on: the model's spacing, finer for a small ROI.
        self.spacing_mm = tuple(spacing_mm or engine.config.spacing_mm)
        self.voxel_ml = float(np.prod(self.spacing_mm)) / 1000.0
        # Smallest lesion kept, counted in voxels of the model's own grid (``min_volume_ml``
        # is meant at its spacing): a finer ROI grid keeps proportionally smaller lesions.
        self._model_voxel_ml = float(np.prod(engine.config.spacing_mm)) / 1000.0

    # ------------------------------------------------------------------ queries
    def resolve(self, query) -> tuple[LesionDescription, str, str | None]:
        """(description, readable query, preset category or None) from any query form
        (``malenia.attributes.query.resolve_query``, which callers may run first)."""
        resolved = resolve_query(query)
        return resolved.description, resolved.readable, resolved.category

    @property
    def zoomed(self) -> bool:
        """Whether this is a small ROI encoded on a finer grid than the model's own."""
        return self.spacing_mm != tuple(self.engine.config.spacing_mm)

    @property
    def default_threshold(self) -> float:
        """The engine's calibrated threshold; for a zoomed ROI the one calibrated for ROI
        queries (``malenia calibrate --roi``: LIDC training nodules) when the card has it."""
        postprocess = self.engine.card.get("postprocess") or {}
        if self.zoomed and postprocess.get("roi_threshold") is not None:
            return float(postprocess["roi_threshold"])
        return self.engine.default_threshold

    @property
    def grounded(self) -> bool:
        """Whether answers are grounded in the named organ (weights with a location head)."""
        return self.engine.anatomy_grounding

    def _grounds(self, description: LesionDescription, grounding: bool | None) -> bool:
        """Whether this query is grounded: it names a location, the weights can, and the
        caller did not ask for the prompt branch alone."""
        wanted = self.grounded if grounding is None else grounding and self.grounded
        has_map = all(w.location is not None for w in self.windows)  # not on a zoomed ROI
        return bool(wanted and description.location and has_map)

    def probability(
        self, description: LesionDescription, grounding: bool | None = None
    ) -> np.ndarray:
        """The answer's probability map on the model grid. ``grounding`` None: on whenever
        the weights have a location head (``malenia.inference.grounding``); False gives
        the prompt branch alone (for ablations)."""
        if not self._grounds(description, grounding) or self.grounding_warning(
            description.location
        ):  # no organ map, or one too large to be that organ: the description alone answers
            return self._prompt_probability(description)
        from malenia.inference.grounding import grounded_probability

        return self._cached(
            "grounded " + repr(description),
            lambda: grounded_probability(
                self._prompt_probability(description),
                self.any_lesion,
                self.location_region(description.location),
                self.lesion_components(),
            ),
        )

    def lesion_components(self):
        """The prompt-free map's lesions (``grounding.LesionComponents``): labelled once, at
        encoding when the weights ground answers, since every grounded query keeps the
        lesions that reach its organ whole."""
        from malenia.inference.grounding import LesionComponents

        if self._lesion_components is None:
            self._lesion_components = LesionComponents.of(self.any_lesion)
        return self._lesion_components

    def location_region(self, location: str) -> np.ndarray:
        """[model grid] where answers naming ``location`` are grounded (kept: editing the
        other attributes of a description keeps its location)."""
        from malenia.inference.grounding import location_region

        parts = sub_locations(location)
        if len(parts) > 1:  # an organ-level location: the union of its parts' regions
            return self._cached(
                "region " + location,
                lambda: np.logical_or.reduce([self.location_region(p) for p in parts]),
            )
        location = parts[0]
        return self._cached(
            "region " + location,
            lambda: location_region(self.location_probability(location), self.spacing_mm),
        )

    def _cached(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """Model-grid maps of recent queries (probabilities, organ regions): a user edits
        one description several times. The least recently used beyond 8 are dropped."""
        if key in self._maps:
            self._maps.move_to_end(key)
            return self._maps[key]
        self._maps[key] = value = compute()
        if len(self._maps) > 8:
            self._maps.popitem(last=False)
        return value

    def location_probability(self, location: str) -> np.ndarray:
        """[model grid] probability of being inside the organ a canonical location names.

        Windows whose 1/4-grid logits are all <= 0 stay 0: upsampling cannot lift them
        above 0.5, so the organ is not there, and most windows of a CT hold no given organ.
        An organ-level location ("liver") is the voxel-wise maximum over its parts."""
        parts = sub_locations(location)
        if len(parts) > 1:
            return self._cached(
                "location " + location,
                lambda: np.maximum.reduce([self.location_probability(p) for p in parts]),
            )
        return self._cached("location " + parts[0], lambda: self._location_map(parts[0]))

    @torch.no_grad()
    def _location_map(self, location: str) -> np.ndarray:
        mapper = self.engine.organ_mapper
        if mapper is not None and not self.zoomed and location in mapper.locations:
            if self._organ_maps is None:  # one encoder pass per volume, for every location
                self._organ_maps = mapper.maps(self.volume.to_sitk(), self.model_reference)
            return self._organ_maps.probability(location)
        model, table = self.engine.model, self.engine.table
        embedding = table.value_embedding("location", location)[None].to(self.engine.device)
        vectors = model.location_vectors(embedding).cpu()
        patch = tuple(self.engine.config.patch_size)
        probability = torch.zeros(self.shape)
        for w in self.windows:
            low = model.location_map_logits(vectors, w.location[None])
            if float(low.max()) <= 0:
                continue
            logits = model.upsample_location_logits(low, patch)[0]
            probability[w.slices] = torch.sigmoid_(logits[w.local])
        return probability.numpy()

    def _prompt_probability(self, description: LesionDescription) -> np.ndarray:
        """The prompt branch's map; for an organ-level location the voxel-wise maximum of
        the prompts naming each canonical part (the embeddings only know the parts)."""
        parts = sub_locations(description.location) if description.location else ()
        if len(parts) > 1 or (parts and parts[0] != description.location):
            return self._cached(
                repr(description),
                lambda: np.maximum.reduce(
                    [
                        self._prompt_probability(dataclasses.replace(description, location=p))
                        for p in parts
                    ]
                ),
            )
        return self._cached(repr(description), lambda: self._prompt_map(description))

    @torch.no_grad()
    def _prompt_map(self, description: LesionDescription) -> np.ndarray:
        model = self.engine.model
        attributes = self.engine.table.embed(description)[None].to(self.engine.device)
        probability = torch.zeros(self.shape)  # outside the encoded box: nothing
        if self.windows:  # one batched prompt pass over every window's tokens
            tokens = torch.stack([w.tokens for w in self.windows]).to(self.engine.device)
            vectors = model.prompt_vectors(tokens, attributes.expand(len(self.windows), -1, -1))[
                "ensemble"
            ].cpu()
        for w, vector in zip(self.windows, vectors if self.windows else [], strict=True):
            channels = w.f4.shape[0]
            logits = (vector[None] @ w.f4.view(channels, -1)).view(w.f4.shape[1:])
            probability[w.slices] = torch.sigmoid_(logits)
        return probability.numpy()

    def segment(
        self,
        query,
        threshold: float | None = None,
        min_volume_ml: float = 0.1,
        grounding: bool | None = None,
    ) -> SegmentationResult:
        """Lesions matching a preset name, attribute dict / LesionDescription, or free text.

        ``threshold`` None: the calibrated default of this encoding (``default_threshold``).
        ``grounding`` None: anatomy grounding whenever the weights support it."""
        if threshold is None:
            threshold = self.default_threshold
        _check_threshold(threshold)
        resolved = resolve_query(query)
        description, readable, category = (
            resolved.description,
            resolved.readable,
            resolved.category,
        )
        probability = self.probability(description, grounding)
        ranking = [(category, 1.0)] if category else self.engine.knowledge.rank(description)[:3]
        result = self._result(
            probability, threshold, description, "prompt", readable, ranking, min_volume_ml
        )
        result.not_understood, result.query_notes = resolved.not_understood, resolved.notes
        if not category:
            name = segment_name(self.engine.knowledge, ranking, description)
            for lesion in result.lesions:
                lesion.name = name
            _number_names(result.lesions)
        if self._grounds(description, grounding):
            result.grounding_warning = self.grounding_warning(description.location)
            result.grounded_in = None if result.grounding_warning else description.location
        return result

    def grounding_warning(self, location: str) -> str | None:
        """What to tell the user when ``location``'s region is larger than its organ can be."""
        from malenia.inference.grounding import PLAUSIBLE_REGION_ML, region_warning

        region_ml = float(np.count_nonzero(self.location_region(location))) * self.voxel_ml
        parts = sub_locations(location)
        bounds = [PLAUSIBLE_REGION_ML.get(p) for p in parts]
        bound = sum(bounds) if None not in bounds else None  # type: ignore[arg-type]
        return region_warning(location, region_ml, bound)

    def recut(self, result: SegmentationResult, threshold: float) -> SegmentationResult:
        """Same query, new threshold: numpy only, the network is not touched."""
        if result.mode == "auto":
            return self.find_lesions(threshold, result.min_volume_ml)
        recut = self._result(
            result.probability, threshold, result.description, result.mode, result.query,
            result.ranking, result.min_volume_ml,
        )  # fmt: skip
        recut.grounded_in, recut.grounding_warning = result.grounded_in, result.grounding_warning
        recut.not_understood, recut.query_notes = result.not_understood, result.query_notes
        if result.lesions:  # same query, same name
            base = result.lesions[0].name.rstrip("0123456789 ").strip()
            for lesion in recut.lesions:
                lesion.name = base
            _number_names(recut.lesions)
        return recut

    @torch.no_grad()
    def find_lesions(
        self, threshold: float | None = None, min_volume_ml: float = 0.1
    ) -> SegmentationResult:
        """Every lesion the model sees (objectness-weighted tokens), with predicted attributes.

        The prompt-free map is not calibrated, so ``threshold`` None means 0.5 here."""
        result = self._result(
            self.any_lesion,
            0.5 if threshold is None else threshold,
            None,
            "auto",
            "all lesions",
            None,
            min_volume_ml,
        )
        for lesion in result.lesions:
            soft = self._predicted_attributes(lesion)
            lesion.attributes = {k: max(v, key=v.get) for k, v in soft.items() if v}
            lesion.category_ranking = self.engine.knowledge.rank(soft)[:3]
            lesion.name = (
                f"{lesion.category[0].upper()}{lesion.category[1:]}"
                if lesion.category
                else "Lesion"
            )
        _number_names(result.lesions)
        return result

    @torch.no_grad()
    def _predicted_attributes(self, lesion: LesionInfo) -> dict[str, dict[str, float]]:
        """Attribute probabilities of the token whose mask covers the lesion best."""
        model, table = self.engine.model, self.engine.table
        best, best_score = None, -1.0
        centre = tuple((s.start + s.stop) // 2 for s in lesion.bbox_model)
        for w in self.windows:
            if all(sl.start <= c < sl.stop for sl, c in zip(w.slices, centre, strict=True)):
                local = tuple(c - sl.start for sl, c in zip(w.slices, centre, strict=True))
                scores = torch.sigmoid(
                    model.mask_head(w.tokens) @ w.f4.float()[(slice(None), *local)]
                ) * torch.sigmoid(w.objectness)
                index = int(scores.argmax())
                if float(scores[index]) > best_score:
                    best, best_score = w.tokens[index], float(scores[index])
        if best is None:
            return {}
        vocab = [table.vocabulary_matrix(k)[1] for k in ATTRIBUTE_KEYS]
        logits = model.attribute_logits(best[None], vocab)
        soft = {}
        for key, key_logits in zip(ATTRIBUTE_KEYS, logits, strict=True):
            probs = torch.softmax(key_logits[0], dim=-1)
            phrases = table.vocabulary_matrix(key)[0]
            if key == "specific_features":
                soft[key] = {
                    p: float(v) for p, v in zip(phrases, probs, strict=True) if float(v) > 0.5
                }
            else:
                soft[key] = {p: float(v) for p, v in zip(phrases, probs, strict=True)}
        return soft

    # ------------------------------------------------------------------ results
    def _result(
        self, probability, threshold, description, mode, query, ranking, min_volume_ml: float = 0.1
    ) -> SegmentationResult:
        _check_threshold(threshold)
        labels, boxes = _components_in_box(
            probability, threshold, max(1, int(round(min_volume_ml / self._model_voxel_ml)))
        )
        spacing = self.spacing_mm
        lesions = []
        for index, box in enumerate(boxes, start=1):
            mask = labels[box] == index
            centroid = np.array([s.start for s in box]) + np.argwhere(mask).mean(0)
            lps = self.model_reference.TransformContinuousIndexToPhysicalPoint(
                tuple(float(c) for c in centroid[::-1])
            )
            category = ranking[0][0] if ranking else None
            lesions.append(
                LesionInfo(
                    index=index,
                    name=category[0].upper() + category[1:] if category else "Lesion",
                    category_ranking=list(ranking or []),
                    score=round(float(probability[box][mask].mean()), 4),
                    volume_ml=round(float(mask.sum()) * self.voxel_ml, 3),
                    diameter_mm=round(longest_axial_diameter(mask, spacing), 1),
                    centroid_ras=(-lps[0], -lps[1], lps[2]),
                    attributes=description.to_dict() if description else {},
                    bbox_model=box,
                )
            )
        _number_names(lesions)
        return SegmentationResult(
            self, probability, labels, lesions, threshold, description, mode, query,
            min_volume_ml, ranking,
        )  # fmt: skip

    def to_input_labelmap(
        self, probability: np.ndarray, labels_model: np.ndarray, threshold: float
    ) -> np.ndarray:
        """Lesion ids on the input grid: probabilities resampled (linear) and cut again on
        the input grid for smooth edges, ids from the nearest model voxel. Only the input
        voxels around the lesions are resampled, so the cost follows lesion size."""
        labelmap = np.zeros(self.volume.array.shape, np.int16)
        if labels_model.max() == 0:
            return labelmap
        maps = self.input_maps(probability, labels_model, labels_model > 0)
        if maps is None:
            return labelmap
        box, probability_in, ids_in = maps
        labelmap[box] = np.where(probability_in > threshold, ids_in, 0)
        return labelmap

    def input_maps(
        self, probability: np.ndarray, labels_model: np.ndarray, cover: np.ndarray
    ) -> tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray] | None:
        """(box, probability, lesion ids) on the input voxels (k, j, i slices) around the
        model-grid voxels ``cover``: probability resampled linearly (float32), ids from the
        nearest model voxel of ``labels_model`` grown by one voxel. None when ``cover`` is
        empty or misses the input grid. ``to_input_labelmap`` cuts these; the browser viewer
        re-cuts them at other thresholds."""
        from scipy import ndimage

        if not cover.any():
            return None
        box = _input_box(cover, self.model_reference, self.input_reference)
        if box is None:
            return None
        reference = _sub_grid(self.input_reference, box)
        ids = ndimage.grey_dilation(labels_model, size=(3, 3, 3)).astype(np.int16)
        probability_in = to_input_grid(probability, self.model_reference, reference)
        ids_in = to_input_grid(ids, self.model_reference, reference, nearest=True)
        return box, probability_in, ids_in


def _check_threshold(threshold: float) -> None:
    if not 0.0 < float(threshold) < 1.0:
        raise UnknownAttributeValueError(
            f"The threshold must lie strictly between 0 and 1, not {threshold}."
        )


# A category names the segments only when the knowledge table is this sure of it.
NAME_MIN_PROBABILITY = 0.5


def segment_name(knowledge: KnowledgeTable, ranking, description: LesionDescription) -> str:
    """What to call the answer's segments: its most likely category when the knowledge table
    is sure (>= NAME_MIN_PROBABILITY) and it lies in the organ the description names; else
    a plain "Liver lesion" / "Lesion", never an unrelated category."""
    organ = _organ_of_location(description.location)
    if ranking:
        category, probability = ranking[0]
        in_organ = organ is None or knowledge.organ_of(category) == organ
        if probability >= NAME_MIN_PROBABILITY and in_organ:
            return category[0].upper() + category[1:]
    return f"{organ[0].upper()}{organ[1:]} lesion" if organ else "Lesion"


def _organ_of_location(location: str | None) -> str | None:
    if not location:
        return None
    from malenia.attributes import load_vocabulary

    vocabulary = load_vocabulary()
    organs = {vocabulary.organ(p) for p in sub_locations(location, vocabulary)}
    return organs.pop() if len(organs) == 1 else None


def _components_in_box(probability: np.ndarray, threshold: float, min_voxels: int):
    """Connected components of ``probability > threshold``, labelled only inside the box
    holding the foreground (most of a CT is not lesion; labelling all of it is slow)."""
    foreground = probability > threshold
    labels = np.zeros(probability.shape, np.int16)
    box = foreground_box(foreground)
    if box is None:
        return labels, []
    local, boxes = components(foreground[box], min_voxels)
    labels[box] = local
    shifted = [
        tuple(slice(b.start + o.start, b.stop + o.start) for b, o in zip(inner, box, strict=True))
        for inner in boxes
    ]
    return labels, shifted


def _input_box(mask: np.ndarray, model_image, input_image, margin_vox: int = 2):
    """The box of input-grid voxels (k, j, i slices) covering ``mask`` on the model grid,
    grown by a couple of model voxels; None when it misses the input grid."""
    hit = [
        np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)
    ]
    low = [int(h[0]) - margin_vox for h in hit]
    high = [int(h[-1]) + margin_vox for h in hit]
    corners = []
    for z, y, x in itertools.product(*zip(low, high, strict=True)):
        point = model_image.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z)))
        corners.append(input_image.TransformPhysicalPointToContinuousIndex(point)[::-1])
    corners = np.asarray(corners)
    size = input_image.GetSize()[::-1]
    start = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
    stop = np.minimum(np.ceil(corners.max(0)).astype(int) + 2, size)
    if np.any(stop <= start):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))


def _sub_grid(image: sitk.Image, box) -> sitk.Image:
    """A blank image on the part ``box`` (k, j, i slices) of ``image``'s grid."""
    size = [b.stop - b.start for b in box[::-1]]
    sub = sitk.Image(size, sitk.sitkUInt8)
    sub.SetSpacing(image.GetSpacing())
    sub.SetDirection(image.GetDirection())
    sub.SetOrigin(image.TransformIndexToPhysicalPoint([b.start for b in box[::-1]]))
    return sub


def _blank_like(image) -> sitk.Image:
    blank = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    blank.CopyInformation(image)
    return blank


def _number_names(lesions: list[LesionInfo]) -> None:
    counts: dict[str, int] = {}
    for lesion in lesions:
        base = lesion.name.rstrip("0123456789 ").strip() or "Lesion"
        counts[base] = counts.get(base, 0) + 1
        lesion.name = f"{base} {counts[base]}"
