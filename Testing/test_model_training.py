"""MaleniaNet and its training pipeline on CPU."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from malenia.attributes.schema import LesionDescription
from malenia.model import MaleniaConfig, MaleniaNet, count_parameters
from malenia.train import TrainConfig, compute_loss, learning_rate, train
from malenia.training.prompts import (
    Vocabulary,
    contrast_prompts,
    drop_attributes,
    fits,
    prompt_target,
)

torch.set_num_threads(2)


def small_config(**changes) -> MaleniaConfig:
    config = MaleniaConfig.tiny()
    config.patch_size, config.spacing_mm = (32, 32, 32), (3.0, 3.0, 3.0)
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def test_tiny_output_shapes_and_size():
    model = MaleniaNet(MaleniaConfig.tiny())
    assert count_parameters(model) <= 10_000_000
    vocabulary = [torch.randn(n, 384) for n in (23, 2, 4, 2, 2, 2, 2, 12)]
    out = model(torch.randn(2, 1, 32, 32, 32), torch.randn(2, 8, 384), vocabulary)
    n = model.config.num_tokens
    assert [m.shape for m in out["block_masks"]] == [(2, n, 32, 32, 32)] * 3
    assert [o.shape for o in out["block_objectness"]] == [(2, n)] * 3
    assert [t.shape for t in out["block_attribute_logits"][2]] == [
        (2, n, v.shape[0]) for v in vocabulary
    ]
    assert {k: v.shape for k, v in out["prompt_logits"].items()} == {
        k: (2, 32, 32, 32) for k in ("mask", "text", "ensemble")
    }


def test_gradients_reach_every_part():
    model = MaleniaNet(small_config())
    vocab = Vocabulary("cpu")
    import dataclasses

    from malenia.synth import SyntheticLesionDataset

    item = SyntheticLesionDataset(
        ("renal cell carcinoma",),
        seed=1,
        shape=(32, 32, 32),
        spacing=(3.0, 3.0, 3.0),
        max_lesions=1,
    )[0]
    # A lesion with a specific feature, so that every attribute's alignment head is used.
    item["descriptions"] = [
        dataclasses.replace(item["descriptions"][0], specific_features=("calcification",))
    ]
    loss, _ = compute_loss(
        model, [item], vocab, TrainConfig(negative_prompt_prob=0.0), 0, {}, "cpu"
    )
    loss.backward()
    # A bias added to every token's relevance logit cancels in the softmax over tokens:
    # its gradient is zero by construction (CI's BLAS gives exactly 0.0), so it is not asked for.
    shift_invariant = {"relevance.bias"}
    missing = [
        name
        for name, p in model.named_parameters()
        if name not in shift_invariant and (p.grad is None or not torch.any(p.grad != 0))
    ]
    assert not missing, missing
    for part in (
        "enc0",
        "up0",
        "tokens",
        "blocks.0",
        "cmki.2",
        "text_proj",
        "align_heads",
        "text_mask_head",
        "relevance",
        "objectness",
    ):
        assert any(name.startswith(part) for name, _ in model.named_parameters()), part


def _two_category_item():
    """A volume holding a renal cell carcinoma and a renal cyst (same region)."""
    from malenia.synth import SyntheticLesionDataset

    dataset = SyntheticLesionDataset(
        ("renal cell carcinoma", "renal cyst"), seed=5, shape=(32, 32, 32),
        spacing=(3.0, 3.0, 3.0), max_lesions=1, distractor_prob=1.0,
    )  # fmt: skip
    for index in range(20):
        item = dataset[index]
        if len(set(item["categories"])) == 2 and all(
            np.any(item["instance_mask"] == i + 1) for i in range(2)
        ):
            return item
    raise AssertionError("no two-category volume in the first 20 samples")


def test_contrast_prompts_are_the_other_categories_and_an_absent_one():
    import random

    item = _two_category_item()
    first, second = item["categories"]
    lung = LesionDescription(location="right upper lobe", density="isodense")
    pool = {c: [item["descriptions"][0]] for c in ("renal cell carcinoma", "renal cyst")}
    pool["lung cancer"] = [lung]
    descriptions, targets = contrast_prompts(item, first, random.Random(0), pool)
    assert descriptions == [item["descriptions"][1], lung]
    np.testing.assert_array_equal(targets[0] > 0, item["instance_mask"] == 2)
    assert not targets[1].any()  # absent category: empty target


def test_a_shortened_prompt_targets_every_lesion_it_fits():
    """Attribute dropout: "left kidney, hypodense" means every hypodense left-kidney lesion,
    whatever category it was drawn from; a contradicting attribute excludes a lesion."""
    import dataclasses
    import random

    item = _two_category_item()
    first, second = item["descriptions"]
    shared = dataclasses.replace(second, location=first.location, density=first.density)
    item["descriptions"] = [first, shared]
    short = first.only("location", "density")
    assert fits(shared, short) and fits(first, short)
    np.testing.assert_array_equal(prompt_target(item, None, short) > 0, item["instance_mask"] > 0)
    other_density = next(d for d in ("hypodense", "isodense", "hyperdense") if d != first.density)
    contradicted = dataclasses.replace(short, density=other_density)
    assert not prompt_target(item, None, contradicted).any()
    # The category a prompt was drawn from stays its target whatever was left out.
    np.testing.assert_array_equal(
        prompt_target(item, item["categories"][0], contradicted) > 0, item["instance_mask"] == 1
    )
    rng = random.Random(3)
    shortened = [drop_attributes(first, rng, 0.5) for _ in range(200)]
    assert all(s.specified_keys() for s in shortened)
    assert all(fits(first, s) for s in shortened)
    assert sum(s == first for s in shortened) < 50  # it does shorten
    located = sum("location" in s.specified_keys() for s in shortened) / len(shortened)
    assert located > 0.7  # location is left out at a third of the rate
    assert drop_attributes(first, rng, 0.0) == first


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    config = TrainConfig(
        lr=1e-3, warmup_steps=10, steps=110, lr_schedule="cosine", min_lr_ratio=0.1
    )
    assert learning_rate(config, 0) == pytest.approx(1e-4)
    assert learning_rate(config, 10) == pytest.approx(1e-3)
    assert learning_rate(config, 60) == pytest.approx(0.55e-3)
    assert learning_rate(config, 110) == pytest.approx(1e-4)
    assert learning_rate(TrainConfig(lr=1e-3, warmup_steps=10), 90) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="lr_schedule"):
        learning_rate(TrainConfig(lr_schedule="step", warmup_steps=0), 5)


def test_contrast_loss_trains_the_prompt_path():
    item = _two_category_item()
    model = MaleniaNet(small_config())
    vocab = Vocabulary("cpu")
    pool = {c: [d] for c, d in zip(item["categories"], item["descriptions"], strict=True)}
    config = TrainConfig(negative_prompt_prob=0.0, contrast_prompt_weight=1.0)
    loss, parts = compute_loss(model, [item], vocab, config, 0, pool, "cpu")
    assert parts["contrast"] > 0
    loss.backward()
    assert torch.any(model.prompt_direct.weight.grad != 0)


@pytest.mark.slow
def test_contrast_prompts_teach_the_model_to_read_the_description():
    """Same image, two descriptions: after training each prompt finds its own lesion."""
    torch.manual_seed(0)
    item = _two_category_item()
    model = MaleniaNet(small_config())
    vocab = Vocabulary("cpu")
    pool = {c: [d] for c, d in zip(item["categories"], item["descriptions"], strict=True)}
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    config = TrainConfig(negative_prompt_prob=0.0, contrast_prompt_weight=1.0)
    for step in range(300):  # reads both prompts apart by step ~150 on a 2-core CPU
        loss, _ = compute_loss(model, [item], vocab, config, step, pool, "cpu")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 24 and all(_finds_own_lesion_only(model, item, vocab)):
            break
    assert all(_finds_own_lesion_only(model, item, vocab)), step


@torch.no_grad()
def _finds_own_lesion_only(model, item, vocab) -> list[bool]:
    """Per description: Dice > 0.6 with its own lesion, < 20 % of the other lesion marked."""
    model.eval()
    verdicts = []
    for index, description in enumerate(item["descriptions"]):
        out = model(torch.from_numpy(item["image"][None]), vocab.table.embed(description)[None])
        pred = out["prompt_logits"]["ensemble"][0].numpy() > 0
        own, other = item["instance_mask"] == index + 1, item["instance_mask"] == 2 - index
        dice = 2 * (pred & own).sum() / (pred.sum() + own.sum())
        verdicts.append(bool(dice > 0.6 and (pred & other).sum() < 0.2 * other.sum()))
    model.train()
    return verdicts


@pytest.mark.slow
def test_tiny_overfits_two_synthetic_volumes():
    from malenia.synth import SyntheticLesionDataset

    torch.manual_seed(0)
    dataset = SyntheticLesionDataset(
        ("renal cell carcinoma", "liver cancer"),
        seed=3,
        shape=(32, 32, 32),
        spacing=(3.0, 3.0, 3.0),
        max_lesions=1,
    )
    items = [dataset[0], dataset[1]]
    model = MaleniaNet(small_config())
    vocab = Vocabulary("cpu")
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    config = TrainConfig(negative_prompt_prob=0.0)
    best = 0.0
    for step in range(OVERFIT_STEPS):
        loss, _ = compute_loss(model, [items[step % 2]], vocab, config, step, {}, "cpu")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 19:
            best = max(best, _prompted_dice(model, items, vocab))
            if best >= 0.8:
                break
    assert best >= 0.8, best


OVERFIT_STEPS = 400


@torch.no_grad()
def _prompted_dice(model, items, vocab) -> float:
    model.eval()
    scores = []
    for item in items:
        out = model(
            torch.from_numpy(item["image"][None]), vocab.table.embed(item["descriptions"][0])[None]
        )
        pred, truth = out["prompt_logits"]["ensemble"][0].numpy() > 0, item["instance_mask"] > 0
        scores.append(2 * (pred & truth).sum() / max(pred.sum() + truth.sum(), 1))
    model.train()
    return float(min(scores))


def _config(out, steps, **changes) -> TrainConfig:
    return TrainConfig(
        out=str(out), model=small_config().to_dict(), steps=steps, checkpoint_every=1, validate_every=0,
        num_workers=0, warmup_steps=1, data={"type": "synthetic", "max_lesions": 1}, **changes,
    )  # fmt: skip


def test_checkpoint_resume_continues_with_the_same_loss(tmp_path):
    straight = train(_config(tmp_path / "a", 3))
    train(_config(tmp_path / "b", 2))
    resumed = train(_config(tmp_path / "b", 3))
    assert resumed["step"] == 3
    assert resumed["last"]["total"] == pytest.approx(straight["last"]["total"], rel=1e-4, abs=1e-4)
    card = json.loads((tmp_path / "b" / "last.json").read_text(encoding="utf-8"))
    assert card["training"]["steps"] == 3 and len(card["sha256"]) == 64
    assert not list((tmp_path / "b").glob("*.pt*")) and not list((tmp_path / "b").glob("*.pkl"))


def _ddp_worker(rank: int, world: int, out: str, port: int) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    from safetensors.torch import save_file

    history = train(_config(out, 2), device="cpu")
    save_file(
        {k: v.contiguous() for k, v in history["model"].state_dict().items()},
        os.path.join(out, f"rank{rank}.safetensors"),
    )
    torch.distributed.destroy_process_group()


def test_two_process_ddp_keeps_ranks_identical(tmp_path):
    import socket

    from safetensors.torch import load_file

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path), port), nprocs=2, join=True)
    a, b = (
        load_file(str(tmp_path / "rank0.safetensors")),
        load_file(str(tmp_path / "rank1.safetensors")),
    )
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    initial = MaleniaNet(small_config()).state_dict()
    assert any(not torch.equal(a[k], initial[k]) for k in a if k.endswith("weight"))  # it trained


def _write_nifti(path, array, spacing=(1.5, 1.5, 2.5)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def test_msd_and_kits_layouts_are_read_and_joined_with_records(tmp_path):
    from malenia.data import RealLesionDataset, discover_cases

    ct = np.full((24, 48, 48), -1000, np.int16)
    ct[:, 6:42, 6:42] = 60
    label = np.zeros_like(ct, dtype=np.uint8)
    label[:, 10:38, 10:38] = 1
    label[8:14, 20:28, 20:28] = 2
    task = tmp_path / "msd" / "Task03_Liver"
    _write_nifti(task / "imagesTr" / "liver_0.nii.gz", ct)
    _write_nifti(task / "labelsTr" / "liver_0.nii.gz", label)
    _write_nifti(task / "imagesTr" / "liver_999.nii.gz", ct)  # no Malenia record: skipped
    _write_nifti(task / "labelsTr" / "liver_999.nii.gz", label)
    (task / "dataset.json").write_text(json.dumps({"training": [
        {"image": "./imagesTr/liver_0.nii.gz", "label": "./labelsTr/liver_0.nii.gz"},
        {"image": "./imagesTr/liver_999.nii.gz", "label": "./labelsTr/liver_999.nii.gz"},
    ]}))  # fmt: skip
    cases = discover_cases(tmp_path / "msd", "msd")
    assert [c.case_id for c in cases] == ["liver_0"] and cases[0].record.category == "liver cancer"
    item = RealLesionDataset(tmp_path / "msd", "msd", patch=(32, 32, 32), spacing=(2.0, 2.0, 2.0))[
        0
    ]
    assert item["image"].shape == (1, 32, 32, 32) and item["instance_mask"].any()
    assert item["categories"] == ["liver cancer"]

    kits = tmp_path / "kits" / "case_00000"
    _write_nifti(kits / "imaging.nii.gz", ct)
    kits_label = np.where(label == 2, 2, 0).astype(np.uint8)
    _write_nifti(kits / "segmentation.nii.gz", kits_label)
    cases = discover_cases(tmp_path / "kits", "kits23")
    assert [c.case_id for c in cases] == ["case_00000"]
    item = RealLesionDataset(
        tmp_path / "kits", "kits23", patch=(32, 32, 32), spacing=(2.0, 2.0, 2.0)
    )[0]
    assert item["instance_mask"].any() and item["categories"] == [cases[0].record.category]


def test_the_description_changes_the_prompted_mask_through_the_direct_path():
    """The direct prompt path starts at zero (a trained model keeps its function) and, once
    trained, makes different descriptions give different masks on the same image."""
    torch.manual_seed(0)
    model = MaleniaNet(small_config()).eval()
    image = torch.randn(1, 1, 32, 32, 32)
    first, second = torch.randn(1, 8, 384), torch.randn(1, 8, 384)
    with torch.no_grad():
        assert model.prompt_direct(first.flatten(1)).abs().max() == 0
        torch.nn.init.normal_(model.prompt_direct.weight, std=0.05)
        a = model(image, first)["prompt_logits"]["ensemble"]
        b = model(image, second)["prompt_logits"]["ensemble"]
    assert (a - b).abs().mean() > 0.01


def test_older_weights_without_the_direct_path_still_load(tmp_path):
    from malenia.errors import WeightsError
    from malenia.weights import load_weights, save_weights, sha256_of

    torch.manual_seed(0)
    path = save_weights(MaleniaNet(small_config()), tmp_path / "w.safetensors", {"name": "old"})
    from safetensors.torch import load_file, save_file

    def rewrite(state):
        save_file(state, str(path))
        card_file = path.with_suffix(".json")
        card = json.loads(card_file.read_text(encoding="utf-8"))
        card["sha256"] = sha256_of(path)
        card_file.write_text(json.dumps(card))

    state = load_file(str(path))
    rewrite({k: v for k, v in state.items() if not k.startswith("prompt_direct.")})
    model, _ = load_weights(path)
    assert model.prompt_direct.weight.abs().max() == 0
    rewrite({k: v for k, v in state.items() if k != "objectness.bias"})
    with pytest.raises(WeightsError, match="objectness.bias"):
        load_weights(path)


def test_training_can_start_from_published_weights(tmp_path):
    from malenia.weights import load_weights

    first = train(_config(tmp_path / "a", 2))
    config = _config(tmp_path / "b", 1)
    config.init_from = str(tmp_path / "a" / "last.safetensors")
    start, _ = load_weights(tmp_path / "a" / "last.safetensors")
    second = train(config)
    card = json.loads((tmp_path / "b" / "last.json").read_text(encoding="utf-8"))
    assert card["training"]["initialised_from"]["steps"] == 2
    moved = [
        (second["model"].state_dict()[k] - v).abs().max() for k, v in start.state_dict().items()
    ]
    assert first["step"] == 2 and max(moved) < 0.05  # one small step away, not a fresh model


def test_a_soft_tissue_view_starts_as_the_older_model_and_then_learns(tmp_path):
    """Training from weights without the soft-tissue view: same function at the start (the
    stem's last layer is zero), the view is the input in W400/L40, and after a step the stem
    has weight, so a 10 HU difference can reach the features."""
    from malenia.weights import load_weights

    train(_config(tmp_path / "a", 1))
    older, _ = load_weights(tmp_path / "a" / "last.safetensors")
    with_view = MaleniaNet(small_config(soft_tissue_window=(-160.0, 240.0))).eval()
    with_view.load_state_dict(older.state_dict(), strict=False)
    image = torch.rand(1, 1, 32, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(older.encode_image(image).f4, with_view.encode_image(image).f4)
    hu = torch.tensor([-1000.0, -160.0, 83.0, 92.0, 240.0, 1000.0])
    view = with_view.soft_tissue_view(hu / 1000.0)  # normalize_ct of these HU
    assert view.tolist() == pytest.approx([-1.0, -1.0, 0.215, 0.26, 1.0, 1.0], abs=1e-4)

    config = _config(tmp_path / "b", 1, init_from=str(tmp_path / "a" / "last.safetensors"))
    config.model = small_config(soft_tissue_window=(-160.0, 240.0)).to_dict()
    trained = train(config)["model"]
    assert trained.soft_tissue[-1].weight.abs().max() > 0
    reloaded, card = load_weights(tmp_path / "b" / "last.safetensors")
    assert card["config"]["soft_tissue_window"] == [-160.0, 240.0]
    assert reloaded.soft_tissue is not None


def test_publish_weights_makes_a_checkpoint_the_verified_bundled_pair(tmp_path):
    """scripts/publish_weights.py: card keeps the training record and gains the evaluation;
    re-publishing only the card keeps the weights' bytes (and so the model id)."""
    import subprocess
    import sys
    from pathlib import Path

    from malenia.weights import load_weights, sha256_of

    train(_config(tmp_path / "run", 1))
    metrics = tmp_path / "metrics.json"
    metrics.write_text(
        json.dumps({"groups": {"seen": {"dice_true": 0.5}}, "settings": {"model": "x", "n": 1}})
    )
    calibration = tmp_path / "calibration.json"
    calibration.write_text(
        json.dumps({"threshold": 0.2, "validation_dice": 0.7, "dice_at_0.5": 0.6,
                    "validation_set": {"seed": 1}, "mean_dice_by_threshold": {}})
    )  # fmt: skip
    script = Path(__file__).resolve().parents[1] / "scripts" / "publish_weights.py"
    target = tmp_path / "bundle" / "malenia-tiny.safetensors"
    run = [sys.executable, str(script)]
    subprocess.run(
        [*run, str(tmp_path / "run" / "last.safetensors"), "--out", str(target),
         "--hardware", "test CPU"],
        check=True, capture_output=True,
    )  # fmt: skip
    _, card = load_weights(target)
    assert card["name"] == "malenia-tiny" and card["training"]["steps"] == 1
    assert card["training"]["hardware"] == "test CPU" and "evaluation" not in card
    digest = sha256_of(target)
    subprocess.run(
        [*run, str(target), "--out", str(target), "--eval", str(metrics),
         "--calibration", str(calibration)],
        check=True, capture_output=True,
    )  # fmt: skip
    _, card = load_weights(target)
    assert sha256_of(target) == digest == card["sha256"]
    assert card["evaluation"]["synthetic_held_out"]["groups"]["seen"]["dice_true"] == 0.5
    assert card["training"]["hardware"] == "test CPU"  # kept from the first publish
    assert card["postprocess"]["threshold"] == 0.2  # the engine's default threshold
    from malenia.inference import Engine

    assert Engine.load(target, device="cpu").default_threshold == 0.2


# --------------------------------------------------------------------------- anatomy grounding


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

    train(_config(tmp_path / "lesions", 1))
    start, _ = load_weights(tmp_path / "lesions" / "last.safetensors")
    assert start.location_head is None
    config = _config(tmp_path / "anatomy", 3, task="anatomy", batch_size=1, lr=1e-2)
    config.init_from = str(tmp_path / "lesions" / "last.safetensors")
    history = train(config)
    model = history["model"]
    assert model.location_head is not None
    for key, value in start.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    loaded, card = load_weights(tmp_path / "anatomy" / "last.safetensors")
    assert card["config"]["location_head"] is True and loaded.location_head is not None
    resumed = train(_config(tmp_path / "anatomy", 4, task="anatomy", batch_size=1, lr=1e-2))
    assert resumed["step"] == 4


def test_frozen_prefixes_keep_the_encoder_and_location_head_as_they_started(tmp_path):
    """``frozen``: the named parameters stay bit-identical while the lesion decoder trains,
    so a location head fitted on the frozen features stays valid; a typo is refused."""
    from malenia.weights import load_weights

    with_head = small_config(location_head=True).to_dict()
    first = _config(tmp_path / "start", 1)
    first.model = with_head
    train(first)
    start, _ = load_weights(tmp_path / "start" / "last.safetensors")
    frozen = ("enc0.", "enc1.", "enc2.", "enc3.", "up2.", "location_")
    config = _config(tmp_path / "decoder", 2, frozen=frozen, lr=1e-2)
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


def test_every_shipped_training_config_loads_and_builds_its_model():
    """configs/*.json are what the docs tell people to run: each is a valid TrainConfig whose
    model builds, whose data type exists and whose mixture names only known kinds."""
    from pathlib import Path

    from malenia.data.real_mix import RealMixDataset

    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.json"))
    assert len(configs) >= 10
    for path in configs:
        config = TrainConfig.load(path)
        model_config = (
            MaleniaConfig.from_dict(config.model)
            if isinstance(config.model, dict)
            else getattr(MaleniaConfig, config.model)()
        )
        assert count_parameters(MaleniaNet(model_config)) > 1e6, path.name
        types = ("synthetic", "real_anatomy") if config.task == "anatomy" else (
            "synthetic", "real_mix", "msd", "kits23")  # fmt: skip
        assert config.data.get("type", "synthetic") in types, path.name
        if config.data.get("type") == "real_mix":
            kinds = set(RealMixDataset.KINDS)
            assert set(config.data["mix"]) <= kinds, (path.name, set(config.data["mix"]) - kinds)
        assert config.category_names(), path.name
    with pytest.raises(ValueError, match="unknown kinds \\['phantoms'\\]"):
        RealMixDataset(("liver cancer",), mix={"phantoms": 1.0})  # a typo is not a mixture
