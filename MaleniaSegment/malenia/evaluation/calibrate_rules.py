"""`malenia calibrate --organ-lesions / --lung-keep / --organ-growth`: the run-time rules of a
set of weights, each chosen on real *training* scans (lesions drawn into their organs, LIDC
training nodules pasted into their lungs; never a validation case), among the settings that do
not cost the phantom validation set of ``calibrate`` (seen categories, its own seed) more than
``TOLERANCE`` against the rule switched off: a rule that helps real anatomy must not unlearn
what the phantoms measure.

Each answers cases through the engine as a user's query is answered (``EncodedVolume.segment``
at the calibration's threshold), the rule set on the encoded volume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager

import numpy as np

from malenia.evaluation.calibrate import THRESHOLDS, TOLERANCE, _choose
from malenia.evaluation.metrics import dice

# The settings tried; the first of each turns its rule off.
LUNG_KEEP_SHARES: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0)
ORGAN_GROWTH_MM: tuple[float, ...] = (0.0, 10.0, 20.0, 30.0)
PHANTOM_N_PER_CATEGORY = 20  # ``calibrate``'s validation set


@contextmanager
def _answer_threshold(engine, threshold: float):
    """The engine's card says ``threshold`` while calibrating: a grounded answer aligns its
    lesion-map cut onto the threshold the card gives (``EncodedVolume.threshold_for``)."""
    postprocess = dict(engine.card.get("postprocess") or {})
    engine.card["postprocess"] = postprocess | {"threshold": threshold}
    try:
        yield
    finally:
        engine.card["postprocess"] = postprocess


def _rule_mean_dice(
    engine, cases: Iterable, settings, apply: Callable, threshold: float, log=None, tag=""
) -> dict[float, float]:
    """Macro mean Dice over groups, per setting, of ``cases`` (name, volume, query, truth,
    group): each encoded once and answered at ``threshold`` under every setting
    (``apply(encoded, setting)``)."""
    scores: dict[str, dict[float, list[float]]] = {}
    for number, (name, volume, query, truth, group) in enumerate(cases, 1):
        encoded = engine.encode(volume)
        per_setting = scores.setdefault(group, {s: [] for s in settings})
        for setting in settings:
            apply(encoded, setting)
            per_setting[setting].append(dice(encoded.segment(query, threshold).labelmap > 0, truth))
        engine._cache.clear()
        if log:
            log(f"[{tag} {number}] {name}")
    return {s: float(np.mean([np.mean(per[s]) for per in scores.values()])) for s in settings}


def _phantom_allowed(engine, settings, apply, threshold, n_per_category, log=None, tag=""):
    """(settings allowed, phantom mean Dice per setting): those within ``TOLERANCE`` of the
    first setting (the rule off, or the identity) on ``calibrate``'s phantom validation set."""
    from malenia.evaluation.run import _volume
    from malenia.evaluation.testset import held_out_cases
    from malenia.synth.split import SEEN_CATEGORIES, VALIDATION_SET_SEED

    cases = (
        (case.name, _volume(case), case.prompt, case.truth, case.category)
        for case in held_out_cases(
            list(SEEN_CATEGORIES), n_per_category, (64, 64, 64), (2.0, 2.0, 2.0),
            seed=VALIDATION_SET_SEED, distractor_categories=tuple(SEEN_CATEGORIES),
        )
    )  # fmt: skip
    mean = _rule_mean_dice(engine, cases, settings, apply, threshold, log, f"{tag} phantoms")
    allowed = [s for s in settings if mean[s] >= mean[settings[0]] - TOLERANCE]
    return allowed, mean


def _smallest_change(mean_dice: dict[float, float], allowed) -> float:
    """The smallest allowed setting within TOLERANCE of the best allowed one."""
    top = max(mean_dice[s] for s in allowed)
    return min(s for s in allowed if mean_dice[s] >= top - TOLERANCE)


def _rounded(mean_dice: dict[float, float]) -> dict[str, float]:
    return {str(s): round(v, 4) for s, v in mean_dice.items()}


def _setting_chosen(prefix: str, unit: str, mean_dice, allowed, phantom, case_set: dict) -> dict:
    """The calibration's part for one rule: the setting ``_smallest_change`` picks (None for
    the first, the rule off), its Dice, every setting's Dice on the cases and the phantoms."""
    setting = _smallest_change(mean_dice, allowed)
    return {
        f"{prefix}_{unit}": setting or None,
        f"{prefix}_dice": round(mean_dice[setting], 4),
        f"{prefix}_mean_dice_by_{unit}": _rounded(mean_dice),
        f"{prefix}_phantom_dice_by_{unit}": _rounded(phantom),
        f"{prefix}_set": case_set,
    }


def _drawn_cases(n_lesions: int):
    from malenia.data.drawn_lesions import drawn_organ_lesions

    return ((n, v, c, t, c) for n, v, c, t in drawn_organ_lesions(n_lesions))


DRAWN_SOURCE = (
    "lesions drawn into the liver, kidneys and pancreas of the real training scans "
    "(malenia.data.drawn_lesions, seed 11) as training draws them; no validation case"
)


def calibrate_organ_lesions(
    engine, n_lesions: int, answer_threshold: float, thresholds=THRESHOLDS, log=None,
    phantom_n: int = PHANTOM_N_PER_CATEGORY,
) -> dict:  # fmt: skip
    """Where grounded answers cut the prompt-free lesion map (``grounding.aligned_lesion_map``):
    macro mean Dice per cut of each category's preset, answered at ``answer_threshold`` (this
    calibration's own), over ``n_lesions`` lesions drawn into the training organs. Ties go to
    the cut nearest ``answer_threshold``, the identity: the smallest change that does as well."""
    settings = (answer_threshold, *[t for t in thresholds if t != answer_threshold])

    def cut(encoded, threshold):
        encoded.set_organ_lesion_threshold(threshold)

    with _answer_threshold(engine, answer_threshold):
        mean_dice = _rule_mean_dice(
            engine, _drawn_cases(n_lesions), settings, cut, answer_threshold, log, "organ"
        )
        allowed, phantom = _phantom_allowed(
            engine, settings, cut, answer_threshold, phantom_n, log, "organ"
        )
    best, top = _choose({t: mean_dice[t] for t in allowed}, centre=answer_threshold)
    return {
        "organ_lesion_threshold": best,
        "organ_lesion_dice": round(mean_dice[best], 4),
        "organ_lesion_best_dice": round(top, 4),
        "organ_lesion_dice_at_answer_threshold": round(mean_dice[answer_threshold], 4),
        "organ_lesion_mean_dice_by_threshold": _rounded(dict(sorted(mean_dice.items()))),
        "organ_lesion_phantom_dice_by_threshold": _rounded(dict(sorted(phantom.items()))),
        "organ_lesion_set": {
            "source": DRAWN_SOURCE,
            "n": n_lesions,
            "query": "each category's preset, grounded, cut at this calibration's threshold",
            "phantom_check": f"{phantom_n} per seen category of the validation set",
        },
    }


def calibrate_lung_keep(
    engine, n_masses: int, lung_threshold: float, log=None,
    phantom_n: int = PHANTOM_N_PER_CATEGORY,
) -> dict:  # fmt: skip
    """Which lesions a whole-scan lung answer keeps (``lesion_rules.keep_largest``): mean
    Dice of the "lung cancer" preset at ``lung_threshold`` per share of the largest lesion's
    volume, over LIDC training nodules enlarged and pasted into the training scans' lungs
    (those of ``malenia calibrate --lung``)."""
    from malenia.data.nodule_paste import pasted_lung_masses

    def keep(encoded, share):
        encoded.lung_keep_share = share or None

    cases = ((n, v, "lung cancer", m, "lung") for n, v, m in pasted_lung_masses(n_masses))
    mean_dice = _rule_mean_dice(
        engine, cases, LUNG_KEEP_SHARES, keep, lung_threshold, log, "lung keep"
    )
    allowed, phantom = _phantom_allowed(
        engine, LUNG_KEEP_SHARES, keep, lung_threshold, phantom_n, log, "lung keep"
    )
    source = (
        "LIDC training nodules enlarged to 20-55 mm and pasted into the lungs of the real "
        "training scans (malenia.data.nodule_paste, seed 7); no validation case"
    )
    return _setting_chosen(
        "lung_keep", "share", mean_dice, allowed, phantom,
        {"source": source, "n": n_masses, "query": f"lung cancer, cut at {lung_threshold}",
         "phantom_check": f"{phantom_n} per seen category of the validation set"},
    )  # fmt: skip


def calibrate_organ_growth(
    engine, n_lesions: int, calibration: dict, log=None,
    phantom_n: int = PHANTOM_N_PER_CATEGORY,
) -> dict:  # fmt: skip
    """How far grounded answers in abdominal organs grow to their lesions' density edge
    (``lesion_rules.grow_to_density``): macro mean Dice over categories of each preset per
    reach, over lesions drawn into the training organs, answered as ``calibration`` says
    (its threshold and lesion-map cut)."""
    threshold, cut = calibration["threshold"], calibration.get("organ_lesion_threshold")

    def grow(encoded, reach_mm):
        if encoded.organ_lesion_threshold != cut:  # a new cut forgets grounded answers
            encoded.set_organ_lesion_threshold(cut)
        encoded.organ_growth_mm = reach_mm or None

    with _answer_threshold(engine, threshold):
        mean_dice = _rule_mean_dice(
            engine, _drawn_cases(n_lesions), ORGAN_GROWTH_MM, grow, threshold, log, "growth"
        )
        allowed, phantom = _phantom_allowed(
            engine, ORGAN_GROWTH_MM, grow, threshold, phantom_n, log, "growth"
        )
    query = f"each category's preset, grounded, cut at {threshold} (lesion map at {cut})"
    return _setting_chosen(
        "organ_growth", "mm", mean_dice, allowed, phantom,
        {"source": DRAWN_SOURCE, "n": n_lesions, "query": query,
         "phantom_check": f"{phantom_n} per seen category of the validation set"},
    )  # fmt: skip
