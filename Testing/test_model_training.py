"""MaleniaNet and its training pipeline on CPU."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from malenia.attributes.schema import LesionDescription
from malenia.model import MaleniaConfig, MaleniaNet, count_parameters
from malenia.train import TrainConfig, compute_loss, freeze_parameters, learning_rate, train
from malenia.training.prompts import (
    Vocabulary,
    contrast_prompts,
    drop_attributes,
    fits,
    prompt_target,
)
from training_helpers import small_config, training_config

torch.set_num_threads(2)


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


def test_empty_target_dice_can_be_left_out_of_the_mask_loss():
    """A faint answer where nothing is to be found costs nearly the whole soft Dice term;
    with ``dice_on_empty=False`` an empty target costs its BCE only, a lesion's target both."""
    from malenia.losses import mask_loss

    faint = torch.full((1, 8, 8, 8), -3.0)
    faint[0, :2, :2, :2] = 0.0  # eight voxels at p 0.5
    empty = torch.zeros_like(faint)
    lesion = torch.zeros_like(faint)
    lesion[0, :2, :2, :2] = 1.0
    bce = torch.nn.functional.binary_cross_entropy_with_logits(faint, empty)
    assert float(mask_loss(faint, empty)) > float(bce) + 0.4
    assert torch.isclose(mask_loss(faint, empty, dice_on_empty=False), bce)
    assert torch.isclose(mask_loss(faint, lesion, dice_on_empty=False), mask_loss(faint, lesion))
    both = torch.cat([empty, lesion])
    two = torch.cat([faint, faint])
    assert float(mask_loss(two, both, dice_on_empty=False)) < float(mask_loss(two, both))
    config = TrainConfig(negative_prompt_prob=0.0, empty_target_dice=False)
    item = _two_category_item()
    pool = {c: [d] for c, d in zip(item["categories"], item["descriptions"], strict=True)}
    loss, _ = compute_loss(MaleniaNet(small_config()), [item], Vocabulary("cpu"), config, 0, pool,
                           "cpu")  # fmt: skip
    assert torch.isfinite(loss)


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


def test_checkpoint_resume_continues_with_the_same_loss(tmp_path):
    straight = train(training_config(tmp_path / "a", 3))
    train(training_config(tmp_path / "b", 2))
    resumed = train(training_config(tmp_path / "b", 3))
    assert resumed["step"] == 3
    assert resumed["last"]["total"] == pytest.approx(straight["last"]["total"], rel=1e-4, abs=1e-4)
    card = json.loads((tmp_path / "b" / "last.json").read_text(encoding="utf-8"))
    assert card["training"]["steps"] == 3 and len(card["sha256"]) == 64
    assert not list((tmp_path / "b").glob("*.pt*")) and not list((tmp_path / "b").glob("*.pkl"))


def test_bfloat16_precision_trains_on_a_cpu_and_keeps_float32_weights(tmp_path):
    """precision "bfloat16" autocasts the forward pass on a CPU too (about twice the steps per
    hour where the CPU has AMX: benchmarks/bench_training_step.py); "auto" keeps a CPU in
    float32. The saved weights stay float32, and the loss is the float32 one up to rounding."""
    from malenia.training.config import autocast

    x, w = torch.randn(1, 1, 4, 4, 4), torch.randn(2, 1, 3, 3, 3)
    for precision, expected in (("auto", torch.float32), ("bfloat16", torch.bfloat16)):
        with autocast(TrainConfig(precision=precision), "cpu"):
            assert torch.nn.functional.conv3d(x, w).dtype == expected
    exact = train(training_config(tmp_path / "a", 1, precision="float32"))
    fast = train(training_config(tmp_path / "b", 1, precision="bfloat16"))
    assert fast["last"]["total"] != exact["last"]["total"]  # the bfloat16 path did run
    assert fast["last"]["total"] == pytest.approx(exact["last"]["total"], rel=0.05)
    saved = fast["model"].state_dict().values()
    assert all(v.dtype == torch.float32 for v in saved if v.is_floating_point())
    with pytest.raises(ValueError, match=re.escape("auto | float32 | bfloat16")):
        TrainConfig(precision="fp8")


@pytest.mark.slow
def test_distillation_keeps_the_phantom_answers_near_a_frozen_teacher(tmp_path):
    """distill_from / distill_weight (learning without forgetting): on phantom windows the
    prompted mask also learns the teacher's probabilities, so a run that starts from the
    teacher drifts less from it there than the same run without; the teacher stays frozen."""
    import csv

    from malenia.training.lesions import distillation_loss
    from malenia.weights import load_weights

    logits = torch.randn(2, 4, 4, 4, requires_grad=True)
    distillation_loss(logits, logits.detach()).backward()
    assert logits.grad.abs().max() < 1e-7  # nothing to learn where student and teacher agree

    train(training_config(tmp_path / "teacher", 1))
    teacher_path = tmp_path / "teacher" / "last.safetensors"
    teacher, _ = load_weights(teacher_path)
    start = dict(init_from=str(teacher_path), lr=3e-3)
    free = train(training_config(tmp_path / "free", 4, **start))
    kept = train(training_config(tmp_path / "kept", 4, distill_from=str(teacher_path),
                                 distill_weight=20.0, **start))  # fmt: skip
    log = (tmp_path / "kept" / "log.csv").read_text(encoding="utf-8").splitlines()
    rows = list(csv.DictReader(log))
    assert all(float(row["distill"]) > 0 for row in rows)

    from malenia.synth import SyntheticLesionDataset
    from malenia.training.prompts import Vocabulary

    config = small_config()
    item = SyntheticLesionDataset(("renal cell carcinoma",), seed=5, length=1, shape=config.patch_size,
                                  spacing=config.spacing_mm, max_lesions=1)[0]  # fmt: skip
    vocabulary = Vocabulary(torch.device("cpu"))
    image = torch.from_numpy(item["image"][None])
    prompt = vocabulary.table.embed(item["descriptions"][0])[None]

    def probability(model) -> torch.Tensor:
        with torch.no_grad():
            return torch.sigmoid(model.eval()(image, prompt)["prompt_logits"]["ensemble"])

    reference = probability(teacher)
    drift = {name: float((probability(run["model"]) - reference).abs().mean())
             for name, run in (("free", free), ("kept", kept))}  # fmt: skip
    assert drift["kept"] < 0.7 * drift["free"], drift
    with pytest.raises(ValueError, match="needs distill_from"):
        TrainConfig(distill_weight=1.0)
    other = training_config(tmp_path / "y", 1, distill_from=str(teacher_path), distill_weight=1.0)
    other.model = small_config(token_dim=64).to_dict()
    with pytest.raises(ValueError, match="different model"):
        train(other)
    with pytest.raises(ValueError, match="does not exist"):
        train(training_config(tmp_path / "x", 1, distill_from=str(tmp_path / "none.safetensors"),
                              distill_weight=1.0))  # fmt: skip


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

    history = train(training_config(out, 2), device="cpu")
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

    first = train(training_config(tmp_path / "a", 2))
    config = training_config(tmp_path / "b", 1)
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

    train(training_config(tmp_path / "a", 1))
    older, _ = load_weights(tmp_path / "a" / "last.safetensors")
    with_view = MaleniaNet(small_config(soft_tissue_window=(-160.0, 240.0))).eval()
    with_view.load_state_dict(older.state_dict(), strict=False)
    image = torch.rand(1, 1, 32, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(older.encode_image(image).f4, with_view.encode_image(image).f4)
    hu = torch.tensor([-1000.0, -160.0, 83.0, 92.0, 240.0, 1000.0])
    view = with_view.soft_tissue_view(hu / 1000.0)  # normalize_ct of these HU
    assert view.tolist() == pytest.approx([-1.0, -1.0, 0.215, 0.26, 1.0, 1.0], abs=1e-4)

    config = training_config(tmp_path / "b", 1, init_from=str(tmp_path / "a" / "last.safetensors"))
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

    train(training_config(tmp_path / "run", 1))
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


def test_every_shipped_training_config_loads_and_builds_its_model():
    """configs/*.json are what the docs tell people to run: each is a valid TrainConfig whose
    model builds, whose data type exists and whose mixture names only known kinds."""
    from pathlib import Path

    from malenia.data.real_mix import RealMixDataset
    from malenia.training.loop import model_config_of

    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.json"))
    assert len(configs) >= 10
    for path in configs:
        config = TrainConfig.load(path)
        model = MaleniaNet(model_config_of(config))
        assert count_parameters(model) > 1e6, path.name
        freeze_parameters(model, config.frozen)  # every frozen prefix names some layer
        types = ("synthetic", "real_anatomy") if config.task == "anatomy" else (
            "synthetic", "real_mix", "msd", "kits23")  # fmt: skip
        assert config.data.get("type", "synthetic") in types, path.name
        if config.data.get("type") == "real_mix":
            kinds = set(RealMixDataset.KINDS)
            assert set(config.data["mix"]) <= kinds, (path.name, set(config.data["mix"]) - kinds)
        assert config.category_names(), path.name
    with pytest.raises(ValueError, match="unknown kinds \\['phantoms'\\]"):
        RealMixDataset(("liver cancer",), mix={"phantoms": 1.0})  # a typo is not a mixture
