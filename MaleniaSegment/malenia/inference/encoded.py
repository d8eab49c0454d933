"""The light side of the engine: an encoded volume answers queries (a preset, attributes or
free text; a new threshold; every lesion) from the windows' cached tokens and features, and a
result goes back onto the input grid. The heavy pass that makes it is ``engine.Engine.encode``.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk
import torch

from malenia.attributes import LesionDescription, resolve_query
from malenia.attributes.locations import sub_locations
from malenia.errors import InvalidRequestError
from malenia.inference.lesion_attributes import predicted_attributes
from malenia.inference.lesion_maps import (
    blank_like,
    components_in_box,
    input_maps,
    sub_grid,
    without_lesions,
)
from malenia.inference.lesion_rules import AnswerRules
from malenia.inference.naming import number_names, organ_of_location, segment_name
from malenia.inference.postprocess import foreground_box, measured_lesion
from malenia.inference.result import SegmentationResult
from malenia.io import CTVolume

if TYPE_CHECKING:
    from malenia.inference.engine import Engine
    from malenia.inference.windows import Window


class EncodedVolume:
    """A volume after the heavy pass: per-window mask tokens and mask features."""

    # True: a grounded answer keeps only the lesions that touch its organ's region (the
    # organ grown by the grounding margin), as lung answers keep only those touching the
    # lungs: on real CT the prompt branch also fires in other organs. Measured, not adopted
    # (docs/EVALUATION.md, "Answers kept in their organ"): where the location head's region
    # misses the lesion (a box cropped around a renal cyst, some colon tumours) the answer
    # loses it. Off unless a caller sets it (scripts/measure_organ_answers.py).
    keep_answers_in_organ: bool = False

    def __init__(
        self, engine: Engine, volume: CTVolume, model_image, shape, windows: list[Window], region,
        spacing_mm: tuple[float, float, float] | None = None,
    ) -> None:  # fmt: skip
        self.engine, self.volume, self.shape = engine, volume, shape
        self.windows, self.region = windows, region
        self.model_reference = blank_like(model_image)
        self.input_reference = blank_like(volume.to_sitk())
        self._maps: OrderedDict[str, np.ndarray] = OrderedDict()  # see _cached
        self.any_lesion = np.zeros(shape, np.float32)  # prompt-free map (set by the encoder)
        self._lesion_components = None  # any_lesion's lesions (see lesion_components)
        # Where grounded answers cut the prompt-free map (``grounding.aligned_lesion_map``);
        # None: at the answer's own threshold. Set it through ``set_organ_lesion_threshold``.
        postprocess = engine.card.get("postprocess") or {}
        self.organ_lesion_threshold = postprocess.get("organ_lesion_threshold")
        self.organ_lesion_faint_only = bool(postprocess.get("organ_lesion_faint_only"))
        # The card's calibrated lesion rules (``lesion_rules.AnswerRules``); callers may set them.
        self.rules = AnswerRules.from_card(postprocess)
        self._hu: np.ndarray | None = None  # see hu
        self._aligned_maps: dict = {}  # (cut, answer's cut, faint only) -> (map, lesions)
        self._organ_maps = None  # the Astra organ maps of this volume (engine.organ_mapper)
        self.lungs: np.ndarray | None = None  # lungs from HU on the model grid (set at encoding)
        self._lung_envelope: np.ndarray | None = None  # see lung_envelope
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

    def threshold_for(self, description: LesionDescription | None) -> float:
        """The calibrated default of one answer: ``default_threshold``, or, when the card has
        them, for a whole-scan answer naming a lung location the threshold calibrated on real
        lungs (``malenia calibrate --lung``: a lung mass's map is surer than an abdominal
        lesion's, and vessels beside it reach middling probabilities), and for one naming no
        location the threshold calibrated on masses in real muscle (``--unlocated``: the
        prompt branch answers alone there)."""
        postprocess = self.engine.card.get("postprocess") or {}
        if self.zoomed or description is None:
            return self.default_threshold
        if description.location is None:
            key = "unlocated_threshold"
        elif organ_of_location(description.location) == "lung":
            key = "lung_threshold"
        else:
            return self.default_threshold
        value = postprocess.get(key)
        return self.default_threshold if value is None else float(value)

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

        def answer() -> np.ndarray:
            lesion_map, lesions = self._grounding_lesion_map(description)
            region = self.location_region(description.location)
            prompt = self._prompt_probability(description)
            return grounded_probability(prompt, lesion_map, region, lesions)

        return self._cached("grounded " + repr(description), answer)

    def _grounding_lesion_map(self, description: LesionDescription):
        """(map, its lesions): the prompt-free map as grounded answers read it, aligned and
        labelled once per cut, as the plain map's lesions are once per encoding."""
        lung = organ_of_location(description.location) == "lung"  # calibrated in the abdomen
        if self.organ_lesion_threshold is None or lung:
            return self.any_lesion, self.lesion_components()
        return self._aligned_lesion_map(self.threshold_for(description))

    def _aligned_lesion_map(self, answer_threshold: float):
        """(map, its lesions) of the card's cut aligned onto ``answer_threshold``, made once."""
        from malenia.inference.grounding import LesionComponents, aligned_lesion_map

        cut, faint_only = float(self.organ_lesion_threshold), self.organ_lesion_faint_only
        key = (cut, answer_threshold, faint_only)
        if key not in self._aligned_maps:
            aligned = aligned_lesion_map(self.any_lesion, *key)
            self._aligned_maps[key] = (aligned, LesionComponents.of(aligned))
        return self._aligned_maps[key]

    def set_organ_lesion_threshold(self, cut: float | None, faint_only: bool = False) -> None:
        """Cut grounded answers' lesion map at ``cut`` (None: the answer's threshold; see
        ``aligned_lesion_map`` for ``faint_only``); earlier grounded answers are forgotten,
        prompt and organ maps kept (for ``--organ-lesions``)."""
        self.organ_lesion_threshold, self.organ_lesion_faint_only = cut, faint_only
        self._aligned_maps.clear()
        for key in [k for k in self._maps if k.startswith("grounded ")]:
            del self._maps[key]

    def prepare_grounding(self) -> None:
        """Label the prompt-free map's lesions, and align it at the card's cut for the default
        threshold, at encoding rather than in the first (interactive) grounded query."""
        self.lesion_components()
        if self.organ_lesion_threshold is not None:
            self._aligned_lesion_map(self.default_threshold)

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
        from malenia.inference.grounding import SINGLE_PIECE_LOCATIONS, location_region

        parts = sub_locations(location)
        if len(parts) > 1:  # an organ-level location: the union of its parts' regions
            return self._cached(
                "region " + location,
                lambda: np.logical_or.reduce([self.location_region(p) for p in parts]),
            )
        location = parts[0]
        return self._cached(
            "region " + location,
            lambda: location_region(
                self.location_probability(location),
                self.spacing_mm,
                single_piece=location in SINGLE_PIECE_LOCATIONS,
            ),
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
            if self._organ_maps is None:  # one encoder pass, over the encoded box only
                box = sub_grid(self.model_reference, self.region)  # body, or body and ROI
                self._organ_maps = mapper.maps(self.volume.to_sitk(), box)
            probability = np.zeros(self.shape, np.float32)
            probability[self.region] = self._organ_maps.probability(location)
            return probability
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

        ``threshold`` None: the calibrated default of this answer (``threshold_for``).
        ``grounding`` None: anatomy grounding whenever the weights support it."""
        resolved = resolve_query(query)
        description, readable, category = (
            resolved.description,
            resolved.readable,
            resolved.category,
        )
        if threshold is None:
            threshold = self.threshold_for(description)
        _check_threshold(threshold)
        probability = self.probability(description, grounding)
        ranking = [(category, 1.0)] if category else self.engine.knowledge.rank(description)[:3]
        grounds = self._grounds(description, grounding)
        warning = self.grounding_warning(description.location) if grounds else None
        organ = description.location if grounds and not warning else None
        if self.rules.keeps_density(description, organ, not self.zoomed):
            from malenia.inference.grounding import LOCATION_THRESHOLD
            from malenia.inference.lesion_rules import keep_density

            probability = keep_density(
                probability, self.hu, self.location_probability(organ) > LOCATION_THRESHOLD,
                description.density, float(self.rules.organ_density_contrast_hu),
                self.rules.organ_density_sides,
            )  # fmt: skip
        result = self._result(
            probability, threshold, description, "prompt", readable, ranking, min_volume_ml,
            self._organ_envelope(organ), grow_in=organ,
        )  # fmt: skip
        result.not_understood, result.query_notes = resolved.not_understood, resolved.notes
        if not category:
            name = segment_name(self.engine.knowledge, ranking, description)
            for lesion in result.lesions:
                lesion.name = name
            number_names(result.lesions)
        if grounds:
            result.grounding_warning = warning
            result.grounded_in = None if warning else description.location
        return result

    def grounding_warning(self, location: str) -> str | None:
        """What to tell the user when ``location``'s region is larger than its organ can be."""
        from malenia.inference.grounding import PLAUSIBLE_REGION_ML, region_warning

        region_ml = float(np.count_nonzero(self.location_region(location))) * self.voxel_ml
        parts = sub_locations(location)
        bounds = [PLAUSIBLE_REGION_ML.get(p) for p in parts]
        bound = sum(bounds) if None not in bounds else None  # type: ignore[arg-type]
        warning = region_warning(location, region_ml, bound)
        if warning and self.engine.organ_mapper is None:
            from malenia.astra import ORGAN_MAPS_HINT

            warning += " " + ORGAN_MAPS_HINT
        return warning

    def recut(self, result: SegmentationResult, threshold: float) -> SegmentationResult:
        """Same query, new threshold: numpy only, the network is not touched. A grown answer
        grows again from the new cut."""
        if result.mode == "auto":
            return self.find_lesions(threshold, result.min_volume_ml)
        source = result.probability if result.grown_from is None else result.grown_from
        recut = self._result(
            source, threshold, result.description, result.mode, result.query, result.ranking,
            result.min_volume_ml, self._organ_envelope(result.grounded_in),
            grow_in=result.grounded_in,
        )  # fmt: skip
        recut.grounded_in, recut.grounding_warning = result.grounded_in, result.grounding_warning
        recut.not_understood, recut.query_notes = result.not_understood, result.query_notes
        if result.lesions:  # same query, same name
            base = result.lesions[0].name.rstrip("0123456789 ").strip()
            for lesion in recut.lesions:
                lesion.name = base
            number_names(recut.lesions)
        return recut

    @torch.no_grad()
    def find_lesions(
        self, threshold: float | None = None, min_volume_ml: float = 0.1
    ) -> SegmentationResult:
        """Every lesion the model sees (objectness-weighted tokens), with predicted attributes.

        The prompt-free map is not calibrated, so ``threshold`` None means 0.5 here."""
        cut = 0.5 if threshold is None else threshold
        result = self._result(
            self.any_lesion, cut, None, "auto", "all lesions", None, min_volume_ml
        )  # fmt: skip
        for lesion in result.lesions:
            soft = predicted_attributes(self.engine, self.windows, lesion.bbox_model)
            lesion.attributes = {k: max(v, key=v.get) for k, v in soft.items() if v}
            lesion.category_ranking = self.engine.knowledge.rank(soft)[:3]
            lesion.name = (
                f"{lesion.category[0].upper()}{lesion.category[1:]}"
                if lesion.category
                else "Lesion"
            )
        number_names(result.lesions)
        return result

    # ------------------------------------------------------------------ results
    def _result(
        self, probability, threshold, description, mode, query, ranking, min_volume_ml: float = 0.1,
        organ_envelope: np.ndarray | None = None, grow_in: str | None = None,
    ) -> SegmentationResult:  # fmt: skip
        """The answer's lesions, in named stages: cut the map into lesions, keep those the
        rules keep (``_kept``), grow them in ``grow_in`` (the organ a grounded answer names;
        ``lesion_rules.grow_to_density``), describe each. ``organ_envelope``: keep only the
        lesions touching it."""
        _check_threshold(threshold)
        min_voxels = max(1, int(round(min_volume_ml / self._model_voxel_ml)))
        labels, boxes = components_in_box(probability, threshold, min_voxels)
        probability, labels, boxes = self._kept(
            probability, labels, boxes, description, mode, organ_envelope
        )
        seeds = None  # the map before growth, which a re-cut grows again from
        if boxes and self.rules.grows_in(grow_in, not self.zoomed):
            from malenia.inference.grounding import LOCATION_THRESHOLD
            from malenia.inference.lesion_rules import grow_to_density

            organ = self.location_probability(grow_in) > LOCATION_THRESHOLD
            seeds, probability = probability, grow_to_density(
                probability, labels, boxes, self.hu, organ, self.spacing_mm,
                float(self.rules.organ_growth_mm),
            )  # fmt: skip
            labels, boxes = components_in_box(probability, threshold, min_voxels)
        category = ranking[0][0] if ranking else None
        name = category[0].upper() + category[1:] if category else "Lesion"
        attributes = description.to_dict() if description else {}
        to_lps = self.model_reference.TransformContinuousIndexToPhysicalPoint
        lesions = [
            measured_lesion(index, box, labels[box] == index, probability[box], self.spacing_mm,
                            self.voxel_ml, to_lps, name, ranking, dict(attributes))
            for index, box in enumerate(boxes, start=1)
        ]  # fmt: skip
        number_names(lesions)
        result = SegmentationResult(
            self, probability, labels, lesions, threshold, description, mode, query,
            min_volume_ml, ranking,
        )  # fmt: skip
        result.grown_from = seeds
        return result

    def _kept(self, probability, labels, boxes, description, mode, organ_envelope):
        """(probability, labels, boxes) without the lesions the rules drop: those clear of
        the lungs (a lung answer) or of ``organ_envelope``; of fat density in a solid organ's
        (``lesion_rules.drop_fat``); in a whole-scan lung answer all but the largest
        (``lesion_rules.keep_largest``); in a small box all but the central one
        (``lesion_rules.keep_central``)."""
        from malenia.inference import lesion_rules

        names_lung = self._names_lung(description)
        whole_scan_prompt = mode == "prompt" and not self.zoomed
        if names_lung and self.lung_envelope() is not None:  # the lungs found from HU
            organ_envelope = self.lung_envelope()
        if boxes and organ_envelope is not None:
            probability, labels, boxes = self._keep_touching(
                probability, labels, boxes, organ_envelope
            )
        if boxes and self.rules.drops_fat(description, whole_scan_prompt):
            probability, labels, boxes = lesion_rules.drop_fat(
                probability, labels, boxes, self.hu, float(self.rules.organ_fat_hu)
            )
        if boxes and self.rules.keeps_largest_lung_lesion(names_lung, whole_scan_prompt):
            probability, labels, boxes = lesion_rules.keep_largest(
                probability, labels, boxes, float(self.rules.lung_keep_share),
                self.rules.lung_keep_by,
            )  # fmt: skip
        if len(boxes) > 1 and self.zoomed and mode == "prompt":
            probability, labels, boxes = lesion_rules.keep_central(
                probability, labels, boxes, self.spacing_mm
            )
        return probability, labels, boxes

    def keep_model_hu(self, hu: np.ndarray) -> None:
        """Keep the encoder's HU on the model grid where the card's rules read it (fat, density,
        growth): the first organ answer then does not resample the scan again."""
        if self.rules.read_hu:
            self._hu = _as_int16(hu)

    @property
    def hu(self) -> np.ndarray:
        """int16 HU on the model grid (``keep_model_hu``, or resampled on first use: only the
        fat, density and growth rules read it, so an encoding does not carry a copy of the scan
        otherwise)."""
        if self._hu is None:
            from malenia.preprocessing import to_model_grid

            image = to_model_grid(self.volume, self.spacing_mm)
            self._hu = _as_int16(sitk.GetArrayFromImage(image))
        return self._hu

    @staticmethod
    def _names_lung(description: LesionDescription | None) -> bool:
        """Whether the answer names a lung location."""
        if description is None or not description.location:
            return False
        return organ_of_location(description.location) == "lung"

    def lung_envelope(self) -> np.ndarray | None:
        """[model grid] the lungs from HU grown by the grounding margin; None when this
        encoding has no lungs (a zoomed ROI, an abdomen without lung bases, a crop)."""
        if self._lung_envelope is None and self.lungs is not None and self.lungs.any():
            from malenia.inference.grounding import grow_by_ellipsoid, margin_voxels

            radius = margin_voxels(self.spacing_mm)
            envelope = np.zeros(self.lungs.shape, bool)
            box = foreground_box(self.lungs, max(radius))
            envelope[box] = grow_by_ellipsoid(self.lungs[box], radius)
            self._lung_envelope = envelope
        return self._lung_envelope

    def _keep_touching(self, probability, labels, boxes, envelope: np.ndarray):
        """Without the lesions that have no voxel in ``envelope`` (probability set to 0, so a
        re-cut or the browser's slider does not bring them back)."""
        from malenia.inference.grounding import lesions_clear_of

        dropped = lesions_clear_of(labels, len(boxes), envelope)
        return without_lesions(probability, labels, boxes, dropped)

    def _organ_envelope(self, location: str | None) -> np.ndarray | None:
        """[model grid] the region a grounded answer naming ``location`` stays in (None:
        not grounded, or a lung location, which its HU lungs bound instead)."""
        if not (self.keep_answers_in_organ and location):
            return None
        if organ_of_location(location) == "lung":
            return None
        return self.location_region(location)

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

    def input_maps(self, probability: np.ndarray, labels_model: np.ndarray, cover: np.ndarray):
        """``lesion_maps.input_maps`` between this volume's model and input grids: what
        ``to_input_labelmap`` cuts and the browser viewer re-cuts at other thresholds."""
        return input_maps(
            probability, labels_model, cover, self.model_reference, self.input_reference
        )


def _as_int16(hu: np.ndarray) -> np.ndarray:
    """HU clipped to int16, as encodings keep the scan on the model grid."""
    return np.clip(hu, -32768, 32767).astype(np.int16)


def _check_threshold(threshold: float) -> None:
    if not 0.0 < float(threshold) < 1.0:
        raise InvalidRequestError(
            f"The threshold must lie strictly between 0 and 1, not {threshold}."
        )
