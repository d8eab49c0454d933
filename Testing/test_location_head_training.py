"""The location head's training: organ targets, anatomy windows, the anatomy task, frozen
layers, and moving a head between models that share its features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from malenia.attributes.schema import LesionDescription
from malenia.model import MaleniaNet
from malenia.train import TrainConfig, compute_loss, train
from malenia.training.prompts import Vocabulary
from training_helpers import small_config, training_config

torch.set_num_threads(2)


def test_organ_targets_include_the_lumen_of_that_organ_only():
    from malenia.synth.anatomy import LABELS, organ_mask
    from malenia.synth.phantom import LOCATION_CENTRES, make_phantom

    phantom = make_phantom(
        4,
        (64, 64, 64),
        (2.0, 2.0, 2.0),
        "abdomen",
        "portal_venous",
        LOCATION_CENTRES["sigmoid colon"],
    )
    labels = phantom.labels
    sigmoid = organ_mask(labels, "sigmoid colon")
    assert (labels == LABELS["sigmoid colon"]).sum() > 0
    assert sigmoid[labels == LABELS["colon lumen"]].any()  # "in the sigmoid colon" fills its lumen
    assert not sigmoid[labels == LABELS["urinary bladder"]].any()
    np.testing.assert_array_equal(organ_mask(labels, "spleen"), labels == LABELS["spleen"])


def test_anatomy_windows_put_training_lesions_in_other_organs_and_keep_their_organ_labels():
    """The location head must learn that a spleen with a mass in it is still spleen: the
    anatomy windows carry training-category lesions moved into any organ in view, while
    the organ label map (its only target) stays the phantom's."""
    from malenia.attributes.presets import SEEN_CATEGORIES
    from malenia.synth.anatomy import LOCATION_LABEL
    from malenia.synth.dataset import relocated_lesions
    from malenia.synth.lesions import render_lesions
    from malenia.synth.phantom import LOCATION_CENTRES, make_phantom

    spacing = (2.0, 2.0, 2.0)
    phantom = make_phantom(
        7, (64, 64, 64), spacing, "abdomen", "portal_venous", LOCATION_CENTRES["spleen"]
    )
    labels_before = phantom.labels.copy()
    in_view = {n for n, i in LOCATION_LABEL.items() if (phantom.labels == i).any()}
    hosts, categories = [], set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        records = relocated_lesions(rng, tuple(SEEN_CATEGORIES), phantom.labels, "spleen")
        ct, instances, rendered = render_lesions(phantom.ct, phantom.labels, records, rng, spacing)
        hosts += [r.description.location for r in rendered]
        categories |= {r.category for r in rendered}
        assert {r.description.location for r in records} <= in_view
        assert ct.shape == phantom.ct.shape and (instances > 0).any() == bool(rendered)
        for record in rendered:  # centred in the organ the record was moved to
            centre = tuple(record.rendered["centre_voxel"])
            assert phantom.labels[centre] == LOCATION_LABEL[record.description.location]
    np.testing.assert_array_equal(phantom.labels, labels_before)
    assert categories <= set(SEEN_CATEGORIES)
    assert hosts.count("spleen") >= len(hosts) / 3  # mostly the organ the window is about
    assert len(set(hosts)) >= 3  # and other organs in view too


def test_anatomy_targets_ask_for_organs_in_view_and_sometimes_one_that_is_not():
    import random

    from malenia.synth.anatomy import LOCATION_LABEL
    from malenia.training.anatomy import anatomy_targets

    labels = np.zeros((8, 8, 8), np.uint8)
    labels[:4] = LOCATION_LABEL["spleen"]
    labels[4:, :4] = LOCATION_LABEL["left kidney"]
    seen_absent = False
    for seed in range(20):
        names, targets = anatomy_targets(labels, random.Random(seed), 3, 0.5)
        assert {"spleen", "left kidney"} <= set(names)
        for name, target in zip(names, targets, strict=True):
            if name in ("spleen", "left kidney"):
                np.testing.assert_array_equal(target > 0, labels == LOCATION_LABEL[name])
            else:
                seen_absent = True
                assert target.sum() == 0  # an organ out of view: the answer is empty
    assert seen_absent


def test_anatomy_task_trains_the_location_head_only(tmp_path):
    """Starting from lesion weights without a location head, the anatomy task adds one and
    trains it; every lesion-model tensor stays bit-identical (seen results cannot move)."""
    from malenia.weights import load_weights

    train(training_config(tmp_path / "lesions", 1))
    start, _ = load_weights(tmp_path / "lesions" / "last.safetensors")
    assert start.location_head is None
    config = training_config(tmp_path / "anatomy", 3, task="anatomy", batch_size=1, lr=1e-2)
    config.init_from = str(tmp_path / "lesions" / "last.safetensors")
    history = train(config)
    model = history["model"]
    assert model.location_head is not None
    for key, value in start.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    loaded, card = load_weights(tmp_path / "anatomy" / "last.safetensors")
    assert card["config"]["location_head"] is True and loaded.location_head is not None
    resumed = train(training_config(tmp_path / "anatomy", 4, task="anatomy", batch_size=1, lr=1e-2))
    assert resumed["step"] == 4


def test_frozen_prefixes_keep_the_encoder_and_location_head_as_they_started(tmp_path):
    """``frozen``: the named parameters stay bit-identical while the lesion decoder trains,
    so a location head fitted on the frozen features stays valid; a typo is refused."""
    from malenia.weights import load_weights

    with_head = small_config(location_head=True).to_dict()
    first = training_config(tmp_path / "start", 1)
    first.model = with_head
    train(first)
    start, _ = load_weights(tmp_path / "start" / "last.safetensors")
    frozen = ("enc0.", "enc1.", "enc2.", "enc3.", "up2.", "location_")
    config = training_config(tmp_path / "decoder", 2, frozen=frozen, lr=1e-2)
    config.model = with_head
    config.init_from = str(tmp_path / "start" / "last.safetensors")
    model = train(config)["model"]
    after, before = model.state_dict(), start.state_dict()
    for key in before:
        if key.startswith(frozen):
            assert torch.equal(after[key], before[key]), key
    assert not torch.equal(after["up0.conv_block.conv1.conv.weight"],
                           before["up0.conv_block.conv1.conv.weight"])  # fmt: skip
    config.out, config.frozen = str(tmp_path / "typo"), ("encoder.",)
    with pytest.raises(ValueError, match="match no parameter"):
        train(config)


def test_a_location_head_moves_only_to_a_model_with_the_same_encoder(tmp_path):
    """scripts/copy_location_head.py: the head of a model with the same F2 layers is copied
    over (the lesion decoder kept); a model whose encoder moved is refused."""
    import subprocess
    import sys
    from pathlib import Path

    from malenia.weights import load_weights, save_weights

    torch.manual_seed(0)
    head_model = MaleniaNet(small_config(location_head=True))
    save_weights(head_model, tmp_path / "head.safetensors")
    lesion_model = MaleniaNet(small_config(location_head=True))
    lesion_state = lesion_model.state_dict()
    for key, value in head_model.state_dict().items():  # same encoder, other decoder and head
        if key.startswith(("enc", "soft_tissue.", "up2.")):
            lesion_state[key].copy_(value)
    lesion_model.load_state_dict(lesion_state)
    save_weights(lesion_model, tmp_path / "lesion.safetensors")
    script = Path(__file__).resolve().parents[1] / "scripts" / "copy_location_head.py"
    run = [sys.executable, str(script), str(tmp_path / "lesion.safetensors"),
           "--head", str(tmp_path / "head.safetensors")]  # fmt: skip
    subprocess.run([*run, "--out", str(tmp_path / "merged.safetensors")], check=True)
    merged, card = load_weights(tmp_path / "merged.safetensors")
    for key, value in merged.state_dict().items():
        donor = head_model if key.startswith("location_") else lesion_model
        assert torch.equal(value, donor.state_dict()[key]), key
    assert card["location_head_from"]["weights"] == "head.safetensors"

    with torch.no_grad():
        lesion_model.enc1.conv1.conv.weight.add_(0.01)
    save_weights(lesion_model, tmp_path / "lesion.safetensors")
    refused = subprocess.run([*run, "--out", str(tmp_path / "bad.safetensors")],
                             capture_output=True, text=True)  # fmt: skip
    assert refused.returncode != 0 and "different F2" in refused.stderr
    assert not (tmp_path / "bad.safetensors").exists()
    subprocess.run([*run, "--out", str(tmp_path / "start.safetensors"), "--as-start"], check=True)
    start, card = load_weights(tmp_path / "start.safetensors")
    assert "fitted_on_other_features" in card["location_head_from"]
    assert torch.equal(start.location_head[0].weight, head_model.location_head[0].weight)


def test_weight_average_interpolates_two_checkpoints_of_one_model(tmp_path):
    """scripts/average_weights.py: alpha 0 gives the start, 1 the tuned model, 0.5 their
    mean, tensor by tensor (the location head too); a model of another shape is refused."""
    import subprocess
    import sys
    from pathlib import Path

    from malenia.weights import load_weights, save_weights

    torch.manual_seed(0)
    start, tuned = (MaleniaNet(small_config(location_head=True)) for _ in range(2))
    save_weights(start, tmp_path / "start.safetensors")
    save_weights(tuned, tmp_path / "tuned.safetensors")
    script = Path(__file__).resolve().parents[1] / "scripts" / "average_weights.py"
    for alpha in (0.0, 0.5, 1.0):
        out = tmp_path / f"soup{alpha}.safetensors"
        subprocess.run([sys.executable, str(script), str(tmp_path / "start.safetensors"),
                        str(tmp_path / "tuned.safetensors"), "--alpha", str(alpha),
                        "--out", str(out)], check=True)  # fmt: skip
        soup, card = load_weights(out)
        assert card["averaged_with"]["alpha"] == alpha
        for key, value in soup.state_dict().items():
            a, b = start.state_dict()[key], tuned.state_dict()[key]
            expected = a * (1 - alpha) + b * alpha if value.is_floating_point() else b
            assert torch.allclose(value, expected, atol=1e-6), (alpha, key)
    other = MaleniaNet(small_config(location_head=True, token_dim=48))
    save_weights(other, tmp_path / "other.safetensors")
    refused = subprocess.run([sys.executable, str(script), str(tmp_path / "start.safetensors"),
                              str(tmp_path / "other.safetensors"), "--out",
                              str(tmp_path / "bad.safetensors")], capture_output=True, text=True)  # fmt: skip
    assert refused.returncode != 0 and "different models" in refused.stderr
    assert not (tmp_path / "bad.safetensors").exists()


def test_weight_average_of_three_siblings_is_their_uniform_mean(tmp_path):
    """scripts/average_weights.py with three files (seeds of one recipe): each tensor is the
    mean of the three, the card names the other two; --alpha is refused for more than two."""
    import subprocess
    import sys
    from pathlib import Path

    from malenia.weights import load_weights, save_weights

    torch.manual_seed(1)
    siblings = [MaleniaNet(small_config(location_head=True)) for _ in range(3)]
    paths = [tmp_path / f"seed{i}.safetensors" for i in range(3)]
    for model, path in zip(siblings, paths, strict=True):
        save_weights(model, path)
    script = Path(__file__).resolve().parents[1] / "scripts" / "average_weights.py"
    out = tmp_path / "soup.safetensors"
    subprocess.run([sys.executable, str(script), *map(str, paths), "--out", str(out)], check=True)
    soup, card = load_weights(out)
    assert [o["share"] for o in card["averaged_with"]["others"]] == [1 / 3, 1 / 3]
    for key, value in soup.state_dict().items():
        if value.is_floating_point():
            expected = sum(m.state_dict()[key] for m in siblings) / 3
            assert torch.allclose(value, expected, atol=1e-6), key
    refused = subprocess.run([sys.executable, str(script), *map(str, paths), "--alpha", "0.5",
                              "--out", str(tmp_path / "bad.safetensors")],
                             capture_output=True, text=True)  # fmt: skip
    assert refused.returncode != 0 and "uniformly" in refused.stderr
    assert not (tmp_path / "bad.safetensors").exists()


def test_lesion_task_trains_the_location_head_on_items_with_organ_labels():
    """anatomy_weight > 0: items carrying organ labels also teach the location head, asked
    only for their known locations; a lesion-free item is always given a negative prompt."""
    from malenia.synth import SyntheticLesionDataset
    from malenia.synth.split import SEEN_CATEGORIES

    model = MaleniaNet(small_config(location_head=True))
    vocab = Vocabulary("cpu")
    dataset = SyntheticLesionDataset(
        SEEN_CATEGORIES, seed=4, shape=(32, 32, 32), spacing=(3.0,) * 3
    )
    item = dataset[0]
    assert "labels" in item and "origin_mm" in item
    pool = {c: [LesionDescription(location="left kidney")] for c in SEEN_CATEGORIES}
    config = TrainConfig(anatomy_weight=0.5, negative_prompt_prob=0.0)
    loss, parts = compute_loss(model, [item], vocab, config, 0, pool, "cpu")
    assert parts["anatomy"] > 0
    loss.backward()
    assert torch.any(model.location_head[-1].weight.grad != 0)
    unknown = {**item, "known_locations": ()}  # nothing known: nothing asked
    _, parts = compute_loss(model, [unknown], vocab, config, 0, pool, "cpu")
    assert "anatomy" not in parts
    empty = {**item, "instance_mask": np.zeros_like(item["instance_mask"]), "descriptions": [],
             "categories": [], "reports": []}  # fmt: skip
    loss, parts = compute_loss(model, [empty], vocab, TrainConfig(), 0, pool, "cpu")
    assert np.isfinite(parts["prompt"])
