"""The inference engine, shaped like segment-anything's predictor: encode a volume once,
then answer many cheap queries (a preset, attributes or free text; a new threshold).

    engine = Engine.load()                       # bundled weights, auto device
    encoded = engine.encode(read_volume("ct.nii.gz"))   # heavy: sliding windows, cached
    result = encoded.segment("renal cyst")       # light: prompt -> probability map
    result = encoded.recut(result, 0.7)          # numpy only
    lesions = encoded.find_lesions()             # every lesion + predicted attributes
"""

from __future__ import annotations

import itertools
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from malenia.astra import ORGAN_FEATURES, ORGAN_FEATURES_ENV
from malenia.attributes import KnowledgeTable
from malenia.cancel import CancelToken
from malenia.errors import InvalidRequestError, MaleniaError, WeightsError
from malenia.hu_anatomy import lungs_from_hu
from malenia.inference.device import is_out_of_memory, log, pick_device
from malenia.inference.encoded import EncodedVolume
from malenia.inference.windows import (
    EMPTY_WINDOW_HU,
    Window,
    WindowEncoder,
    crop_box,
    extract,
    grid_overlap,
    window_cores,
    window_positions,
)
from malenia.io import CTVolume, validate_ct
from malenia.preprocessing import (
    body_bounding_box,
    normalize_ct,
    roi_spacing_mm,
    to_model_grid,
)

Progress = Callable[[str, int, int], None]


def default_weights_path() -> Path:
    from malenia.paths import resource

    return resource("Weights", "malenia-tiny.safetensors")


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
        if not zoomed:  # where a lung answer may lie (``EncodedVolume.lung_envelope``)
            encoded.lungs = lungs_from_hu(hu, spacing, origin_zyx, region)
            encoded.keep_model_hu(hu)
        if self.anatomy_grounding:  # labelled here, not in the first (interactive) query
            encoded.prepare_grounding()
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
        from monai.inferers import sliding_window_inference

        patch = tuple(self.config.patch_size)
        box_start, box_size = crop_box(region, patch)
        box = extract(hu, box_start, box_size)
        image = torch.from_numpy(normalize_ct(box))[None, None]
        del box
        positions = window_positions(box_start, box_size, patch, self.overlap)
        predictor = WindowEncoder(
            lambda images, placed: self._run_batch(images, placed, origin_zyx, spacing),
            box_start,
            window_cores(positions, patch, hu.shape),
            patch,
            float(normalize_ct(np.float32(EMPTY_WINDOW_HU))),
            progress,
            cancel,
        )
        if progress:
            progress("encoding", 0, len(predictor.cores))
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
        inside, in_box = grid_overlap(box_start, box_size, hu.shape)
        any_lesion[inside] = blended[0, 0].numpy()[in_box]
        return predictor.windows, any_lesion

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


def _roi_outside() -> InvalidRequestError:
    return InvalidRequestError(
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
