"""`malenia calibrate --organ-lesions / --lung-keep / --organ-fat / --organ-density /
--organ-growth`: the
run-time rules of a set of weights, each chosen on real *training* scans (lesions drawn into
their organs, LIDC training nodules pasted into their lungs; never a validation case), among the
settings that do not cost a phantom validation set (seen categories, ``calibrate``'s own seed,
``PHANTOM_CHECK_N`` per category) more than what is left of one ``TOLERANCE`` shared by all the
rules, against the rule switched off: rules that help real anatomy must not, together, unlearn
what the phantoms measure. (Checked one by one on 20 per category, stage 27c's rules cost that
set 0.006 and the phantom test set 0.009; docs/EVALUATION.md, "Stage 27c".) The phantom check
reads seen categories only, none in a hollow organ: the synthetic benchmark is what showed
that an early fat rule cost the colon cancers (docs/EVALUATION.md, "Stage 27k measured").

Each answers cases through the engine as a user's query is answered (``EncodedVolume.segment``
at the calibration's threshold), the rule set on the encoded volume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager
from itertools import chain

import numpy as np

from malenia.evaluation.calibrate import PHANTOM_CHECK_N, THRESHOLDS, TOLERANCE
from malenia.evaluation.metrics import dice

# The settings tried; the first of each turns its rule off.
LUNG_KEEP_SHARES: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0)
ORGAN_GROWTH_MM: tuple[float, ...] = (0.0, 10.0, 20.0, 30.0)
ORGAN_DENSITY_CONTRAST_HU: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0)  # off is tried too


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


def _phantom_allowed(
    engine, settings, apply, threshold, n_per_category, budget, log=None, tag=""
) -> tuple[list, dict]:
    """(settings allowed, phantom mean Dice per setting): those within ``budget`` (what the
    rules chosen before left of ``TOLERANCE``) of the first setting (the rule off, or the
    identity) on the phantom validation set."""
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
    allowed = [s for s in settings if mean[s] >= mean[settings[0]] - budget]
    return allowed, mean


def _phantom_cost(phantom: dict, chosen, off) -> float:
    """What the chosen setting costs the phantom check against ``off``, the rule off."""
    return round(max(0.0, phantom[off] - phantom[chosen]), 4)


def _smallest_change(mean_dice: dict[float, float], allowed) -> float:
    """The smallest allowed setting within TOLERANCE of the best allowed one."""
    top = max(mean_dice[s] for s in allowed)
    return min(s for s in allowed if mean_dice[s] >= top - TOLERANCE)


def _rounded(mean_dice: dict[float, float]) -> dict[str, float]:
    return {str(s): round(v, 4) for s, v in mean_dice.items()}


def _of_mode(scores: dict, mode, off=None) -> dict[str, float]:
    """Of settings (value, mode): the values of one mode (and ``off``, the rule off), sorted."""
    return _rounded({v: d for (v, m), d in sorted(scores.items()) if m == mode or (v, m) == off})


def _setting_chosen(
    prefix: str, unit: str, mean_dice, allowed, phantom, off, case_set: dict
) -> dict:  # fmt: skip
    """The calibration's part for one rule: the setting ``_smallest_change`` picks (None for
    ``off``, the rule off), its Dice and phantom cost, every setting's Dice on the cases and
    the phantoms."""
    setting = _smallest_change(mean_dice, allowed)
    return {
        f"{prefix}_{unit}": setting or None,
        f"{prefix}_dice": round(mean_dice[setting], 4),
        f"{prefix}_phantom_cost": _phantom_cost(phantom, setting, off),
        f"{prefix}_mean_dice_by_{unit}": _rounded(mean_dice),
        f"{prefix}_phantom_dice_by_{unit}": _rounded(phantom),
        f"{prefix}_set": case_set,
    }


def _use_cut(encoded, cut, faint_only: bool) -> None:
    """Answer with the calibration's lesion-map cut (setting it forgets grounded answers, so
    only when it differs)."""
    if (encoded.organ_lesion_threshold, encoded.organ_lesion_faint_only) != (cut, faint_only):
        encoded.set_organ_lesion_threshold(cut, faint_only)


def _answered_as(calibration: dict) -> tuple[float, float | None, bool]:
    """(answer threshold, lesion-map cut, faint lesions only) of an earlier calibration: how
    the rules calibrated after it answer their cases."""
    cut = calibration.get("organ_lesion_threshold")
    return calibration["threshold"], cut, bool(calibration.get("organ_lesion_faint_only"))


def _drawn_query(threshold: float, cut: float | None, faint_only: bool) -> str:
    """How the drawn lesions were asked for, as a calibration records it."""
    lesions = "faint lesions of the lesion map" if faint_only else "lesion map"
    return f"each category's preset, grounded, cut at {threshold} ({lesions} at {cut})"


def _phantom_check_note(n: int, budget: float) -> str:
    return f"{n} per seen category of the validation set, within {budget:.4f} of the rule off"


def _drawn_cases(n_lesions: int):
    from malenia.data.drawn_lesions import drawn_organ_lesions

    return ((n, v, c, t, c) for n, v, c, t in drawn_organ_lesions(n_lesions))


def _real_liver_tumours():
    """The real tumours of the HCC training scans, each asked for with the "liver cancer"
    preset, as one group."""
    from malenia.data.real_ct import hcc_training_tumours

    for case, volume, tumour in hcc_training_tumours():
        yield case, volume, "liver cancer", tumour, "real liver cancer"


DRAWN_SOURCE = (
    "lesions drawn into the liver, kidneys and pancreas of the real training scans "
    "(malenia.data.drawn_lesions, seed 11) as training draws them; no validation case"
)


def calibrate_organ_lesions(
    engine, n_lesions: int, answer_threshold: float, thresholds=THRESHOLDS, log=None,
    phantom_n: int = PHANTOM_CHECK_N, budget: float = TOLERANCE,
) -> dict:  # fmt: skip
    """Where grounded answers cut the prompt-free lesion map (``grounding.aligned_lesion_map``),
    for every lesion or, below the answer's threshold, for faint ones only: macro mean Dice per
    cut of each category's preset, answered at ``answer_threshold`` (this calibration's own),
    over ``n_lesions`` lesions drawn into the training organs. Among the cuts within TOLERANCE of
    the best allowed one, the nearest ``answer_threshold`` (the identity), faint lesions only
    before every lesion: the smallest change that does as well (sure lesions keep their edge)."""
    settings = [(answer_threshold, False)]
    settings += [(t, False) for t in thresholds if t != answer_threshold]
    settings += [(t, True) for t in thresholds if t < answer_threshold]

    def cut(encoded, setting):
        encoded.set_organ_lesion_threshold(*setting)

    with _answer_threshold(engine, answer_threshold):
        mean_dice = _rule_mean_dice(
            engine, _drawn_cases(n_lesions), settings, cut, answer_threshold, log, "organ"
        )
        allowed, phantom = _phantom_allowed(
            engine, settings, cut, answer_threshold, phantom_n, budget, log, "organ"
        )
    top = max(mean_dice[s] for s in allowed)
    near = [s for s in allowed if mean_dice[s] >= top - TOLERANCE]
    best = min(near, key=lambda s: (abs(s[0] - answer_threshold), not s[1], s[0]))

    return {
        "organ_lesion_threshold": best[0],
        "organ_lesion_faint_only": best[1],
        "organ_lesion_dice": round(mean_dice[best], 4),
        "organ_lesion_best_dice": round(top, 4),
        "organ_lesion_dice_at_answer_threshold": round(mean_dice[settings[0]], 4),
        "organ_lesion_phantom_cost": _phantom_cost(phantom, best, settings[0]),
        "organ_lesion_mean_dice_by_threshold": _of_mode(mean_dice, False),
        "organ_lesion_faint_only_mean_dice_by_threshold": _of_mode(mean_dice, True),
        "organ_lesion_phantom_dice_by_threshold": _of_mode(phantom, False),
        "organ_lesion_faint_only_phantom_dice_by_threshold": _of_mode(phantom, True),
        "organ_lesion_set": {
            "source": DRAWN_SOURCE,
            "n": n_lesions,
            "query": "each category's preset, grounded, cut at this calibration's threshold",
            "phantom_check": _phantom_check_note(phantom_n, budget),
        },
    }


def calibrate_lung_keep(
    engine, n_masses: int, lung_threshold: float, log=None,
    phantom_n: int = PHANTOM_CHECK_N, budget: float = TOLERANCE,
) -> dict:  # fmt: skip
    """Which lesions a whole-scan lung answer keeps (``lesion_rules.keep_largest``): mean
    Dice of the "lung cancer" preset at ``lung_threshold`` per share of the largest lesion,
    sized by volume or by probability mass (mass only where it beats volume by more than
    TOLERANCE at the chosen share), over LIDC training nodules enlarged and pasted into the
    training scans' lungs (those of ``malenia calibrate --lung``)."""
    from malenia.data.nodule_paste import pasted_lung_masses
    from malenia.inference.lesion_rules import KEEP_MEASURES

    settings = [(0.0, "volume")] + [(s, m) for m in KEEP_MEASURES for s in LUNG_KEEP_SHARES[1:]]

    def keep(encoded, setting):
        encoded.rules.lung_keep_share, encoded.rules.lung_keep_by = setting[0] or None, setting[1]

    cases = ((n, v, "lung cancer", m, "lung") for n, v, m in pasted_lung_masses(n_masses))
    mean_dice = _rule_mean_dice(engine, cases, settings, keep, lung_threshold, log, "lung keep")
    allowed, phantom = _phantom_allowed(
        engine, settings, keep, lung_threshold, phantom_n, budget, log, "lung keep"
    )
    by_volume = {s: v for (s, m), v in mean_dice.items() if m == "volume"}
    chosen = (_smallest_change(by_volume, [s for s, m in allowed if m == "volume"]), "volume")
    by_mass = (chosen[0], "mass")
    if by_mass in allowed and mean_dice[by_mass] > mean_dice[chosen] + TOLERANCE:
        chosen = by_mass
    source = (
        "LIDC training nodules enlarged to 20-55 mm and pasted into the lungs of the real "
        "training scans (malenia.data.nodule_paste, seed 7); no validation case"
    )

    return {
        "lung_keep_share": chosen[0] or None,
        "lung_keep_by": chosen[1] if chosen[0] else None,
        "lung_keep_dice": round(mean_dice[chosen], 4),
        "lung_keep_phantom_cost": _phantom_cost(phantom, chosen, settings[0]),
        "lung_keep_mean_dice_by_share": _of_mode(mean_dice, "volume"),
        "lung_keep_mass_mean_dice_by_share": _of_mode(mean_dice, "mass", settings[0]),
        "lung_keep_phantom_dice_by_share": _of_mode(phantom, "volume"),
        "lung_keep_mass_phantom_dice_by_share": _of_mode(phantom, "mass", settings[0]),
        "lung_keep_set": {
            "source": source, "n": n_masses, "query": f"lung cancer, cut at {lung_threshold}",
            "phantom_check": _phantom_check_note(phantom_n, budget),
        },
    }  # fmt: skip


def calibrate_organ_growth(
    engine, n_lesions: int, calibration: dict, log=None,
    phantom_n: int = PHANTOM_CHECK_N, budget: float = TOLERANCE,
) -> dict:  # fmt: skip
    """How far grounded answers in abdominal organs grow to their lesions' density edge
    (``lesion_rules.grow_to_density``): macro mean Dice over categories of each preset per
    reach, over lesions drawn into the training organs, answered as ``calibration`` says
    (its threshold and lesion-map cut)."""
    threshold, cut, faint_only = _answered_as(calibration)

    def grow(encoded, reach_mm):
        _use_cut(encoded, cut, faint_only)
        encoded.rules.organ_growth_mm = reach_mm or None

    with _answer_threshold(engine, threshold):
        mean_dice = _rule_mean_dice(
            engine, _drawn_cases(n_lesions), ORGAN_GROWTH_MM, grow, threshold, log, "growth"
        )
        allowed, phantom = _phantom_allowed(
            engine, ORGAN_GROWTH_MM, grow, threshold, phantom_n, budget, log, "growth"
        )
    query = _drawn_query(threshold, cut, faint_only)
    return _setting_chosen(
        "organ_growth", "mm", mean_dice, allowed, phantom, ORGAN_GROWTH_MM[0],
        {"source": DRAWN_SOURCE, "n": n_lesions, "query": query,
         "phantom_check": _phantom_check_note(phantom_n, budget)},
    )  # fmt: skip


def calibrate_organ_fat(
    engine, n_lesions: int, calibration: dict, log=None,
    phantom_n: int = PHANTOM_CHECK_N, budget: float = TOLERANCE,
) -> dict:  # fmt: skip
    """Whether answers naming a solid organ drop lesions of fat density
    (``lesion_rules.drop_fat`` at ``FAT_HU``): macro mean Dice over categories of each preset
    with the rule off and on, over lesions drawn into the training organs, answered as
    ``calibration`` says (its threshold and lesion-map cut). Fat is no answer to a description
    without fat, so the rule needs no gain to be switched on, only no loss: on where the
    phantom check allows it and the drawn lesions do at least as well."""
    from malenia.inference.lesion_rules import FAT_HU

    threshold, cut, faint_only = _answered_as(calibration)
    settings = (None, FAT_HU)

    def fat_rule(encoded, below_hu):
        _use_cut(encoded, cut, faint_only)
        encoded.rules.organ_fat_hu = below_hu

    with _answer_threshold(engine, threshold):
        mean_dice = _rule_mean_dice(
            engine, _drawn_cases(n_lesions), settings, fat_rule, threshold, log, "fat"
        )
        allowed, phantom = _phantom_allowed(
            engine, settings, fat_rule, threshold, phantom_n, budget, log, "fat"
        )
    on = FAT_HU in allowed and mean_dice[FAT_HU] >= mean_dice[None]
    chosen = FAT_HU if on else None
    return {
        "organ_fat_hu": chosen,
        "organ_fat_dice": round(mean_dice[chosen], 4),
        "organ_fat_phantom_cost": _phantom_cost(phantom, chosen, None),
        "organ_fat_mean_dice": {"off": round(mean_dice[None], 4), "on": round(mean_dice[FAT_HU], 4)},
        "organ_fat_phantom_dice": {"off": round(phantom[None], 4), "on": round(phantom[FAT_HU], 4)},
        "organ_fat_set": {
            "source": DRAWN_SOURCE, "n": n_lesions,
            "query": _drawn_query(threshold, cut, faint_only),
            "phantom_check": _phantom_check_note(phantom_n, budget),
        },
    }  # fmt: skip


def calibrate_organ_density(
    engine, n_lesions: int, calibration: dict, log=None,
    phantom_n: int = PHANTOM_CHECK_N, budget: float = TOLERANCE,
) -> dict:  # fmt: skip
    """How much a liver answer's voxels must differ from the liver (``lesion_rules.
    keep_density``), on the side its description says or on either side: macro mean Dice over
    groups (each drawn category, and the real tumours of the HCC training scans) per setting,
    answered as ``calibration`` says. Among the settings the phantom check allows, within
    TOLERANCE of the best: the rule off first, then the lowest contrast, either side before
    the described one (each drops fewer voxels)."""
    from malenia.data.real_ct import HCC_TRAIN
    from malenia.inference.lesion_rules import DENSITY_SIDES

    threshold, cut, faint_only = _answered_as(calibration)
    settings = [None] + [
        (contrast, sides)
        for contrast in ORGAN_DENSITY_CONTRAST_HU
        for sides in reversed(DENSITY_SIDES)
    ]

    def density_rule(encoded, setting):
        _use_cut(encoded, cut, faint_only)
        encoded.rules.organ_fat_hu = calibration.get("organ_fat_hu")
        encoded.rules.organ_density_contrast_hu, encoded.rules.organ_density_sides = setting or (
            None, "described"
        )  # fmt: skip

    cases = chain(_drawn_cases(n_lesions), _real_liver_tumours())  # one volume at a time
    with _answer_threshold(engine, threshold):
        mean_dice = _rule_mean_dice(
            engine, cases, settings, density_rule, threshold, log, "density"
        )
        allowed, phantom = _phantom_allowed(
            engine, settings, density_rule, threshold, phantom_n, budget, log, "density"
        )
    top = max(mean_dice[s] for s in allowed)
    chosen = next(s for s in settings if s in allowed and mean_dice[s] >= top - TOLERANCE)

    def named(by_setting: dict) -> dict[str, float]:
        return {_density_name(s): round(v, 4) for s, v in by_setting.items()}

    return {
        "organ_density_contrast_hu": chosen[0] if chosen else None,
        "organ_density_sides": chosen[1] if chosen else None,
        "organ_density_dice": round(mean_dice[chosen], 4),
        "organ_density_phantom_cost": _phantom_cost(phantom, chosen, None),
        "organ_density_mean_dice": named(mean_dice),
        "organ_density_phantom_dice": named(phantom),
        "organ_density_set": {
            "source": DRAWN_SOURCE + "; the real tumours of the HCC training scans "
            f"({', '.join(HCC_TRAIN)}) as one more group",
            "n": n_lesions,
            "query": _drawn_query(threshold, cut, faint_only) + ", the fat rule as calibrated",
            "phantom_check": _phantom_check_note(phantom_n, budget),
        },
    }  # fmt: skip


def _density_name(setting) -> str:
    """A setting of ``calibrate_organ_density`` by name: off, or "<contrast> HU <sides>"."""
    return "off" if setting is None else f"{setting[0]:g} HU {setting[1]}"
