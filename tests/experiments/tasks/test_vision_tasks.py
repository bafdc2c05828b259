"""Vision experiments (smooth_mlp, small_weights, multitask, negative_case) and their helpers.

The loaders are monkeypatched with small synthetic datasets in the real shapes (uint8
``[N, 28, 28]`` images whose class is drawn as a bright band, int64 labels), so these tests
need no downloaded data and run in seconds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import torch

from torchbloop.experiments.data import vision_batches as vision_data
from torchbloop.experiments.models.vision import (
    MLP,
    ConvNet,
    classification_metrics,
    forward_in_chunks,
)
from torchbloop.experiments.sweep.registry import RunSpec, get
from torchbloop.experiments.sweep.results import LOSS_KEYS, complete_record, validate_record
from torchbloop.experiments.tasks import multitask, negative_case, small_weights, smooth_mlp
from torchbloop.experiments.tasks.smooth_mlp import SpectralNormEstimator, exact_log_norm_product

N_FASHION = {"train": 600, "test": 200}
N_MNIST = 500  # 50 per class, sorted by class like the real file


def _images(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """Noise plus a bright horizontal band whose position encodes the label (learnable)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 60, (len(labels), 28, 28), generator=g, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        images[i, 2 * c + 4 : 2 * c + 7, :] = 250
    return images


def _fake_fashion(split: str = "train", root: object = None) -> tuple[torch.Tensor, torch.Tensor]:
    n = N_FASHION[split]
    labels = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(len(split)))
    return _images(labels, seed=n), labels


def _fake_mnist(root: object = None) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(10).repeat_interleave(N_MNIST // 10)
    images = _images(labels, seed=7).transpose(1, 2).contiguous()  # vertical bands
    return images, labels


@pytest.fixture(autouse=True)
def fake_data(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # one intra-op thread, as in the runner's workers: on a busy 2-core machine more threads
    # make these tiny models many times slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(vision_data, "load_fashion_mnist", _fake_fashion)
    monkeypatch.setattr(vision_data, "load_mnist5k", _fake_mnist)
    vision_data.fashion_split.cache_clear()
    vision_data.mnist5k_split.cache_clear()
    yield
    vision_data.fashion_split.cache_clear()
    vision_data.mnist5k_split.cache_clear()
    torch.set_num_threads(threads)


# --- spectral norms -------------------------------------------------------------------------


def test_exact_log_norm_product_matches_singular_values() -> None:
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(7, 5, generator=g), torch.randn(3, 7, generator=g)]
    expected = sum(math.log(torch.linalg.svdvals(w)[0].item()) for w in weights)
    assert exact_log_norm_product(weights).item() == pytest.approx(expected, rel=1e-5)


def test_power_iteration_converges_monotonically_from_below() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(40, 30, generator=g, dtype=torch.float64)
    exact = torch.linalg.matrix_norm(w, ord=2).item()
    est = SpectralNormEstimator([w], torch.Generator().manual_seed(2))
    history = []
    for _ in range(300):
        est.iterate()
        history.append(est.norms()[0].item())
    assert all(h <= exact * (1 + 1e-12) for h in history)
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(history))
    assert history[0] < exact * 0.999  # it really had to converge
    assert history[-1] == pytest.approx(exact, rel=1e-6)


def test_power_iteration_gradient_matches_exact_norm_gradient() -> None:
    g = torch.Generator().manual_seed(3)
    w = torch.randn(20, 12, generator=g, dtype=torch.float64, requires_grad=True)
    est = SpectralNormEstimator([w], torch.Generator().manual_seed(4), warm_start=500)
    (grad_est,) = torch.autograd.grad(est.log_norm_product(), w)
    (grad_exact,) = torch.autograd.grad(exact_log_norm_product([w]), w)
    torch.testing.assert_close(grad_est, grad_exact, rtol=1e-5, atol=1e-8)


def test_power_iteration_vectors_persist_and_track_changing_weights() -> None:
    w = torch.diag(torch.tensor([5.0, 1.0, 0.5]))
    est = SpectralNormEstimator([w], torch.Generator().manual_seed(0), warm_start=50)
    assert est.norms()[0].item() == pytest.approx(5.0, rel=1e-5)
    with torch.no_grad():
        w.mul_(2.0)  # the estimator reads the same tensor, so it sees the new weights
    assert est.log_norm_product().item() == pytest.approx(math.log(10.0), rel=1e-5)
    assert not est.u[0].requires_grad and not est.v[0].requires_grad


# --- data helpers ---------------------------------------------------------------------------


def test_overlay_is_pixelwise_average_and_checks_shapes() -> None:
    a, b = torch.rand(3, 1, 28, 28), torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(vision_data.overlay(a, b), (a + b) / 2)
    with pytest.raises(ValueError, match="Invalid overlay"):
        vision_data.overlay(a, b[:2])


def test_mnist_split_is_stratified_and_disjoint() -> None:
    train, test = vision_data.mnist5k_split("train"), vision_data.mnist5k_split("test")
    assert len(train) == 400 and len(test) == 100
    assert torch.bincount(train.labels).tolist() == [40] * 10
    assert torch.bincount(test.labels).tolist() == [10] * 10
    assert not torch.equal(train.labels[:10], train.labels.sort().values[:10])  # shuffled
    flat_train, flat_test = train.images.flatten(1), test.images.flatten(1)
    assert not (flat_train[:, None, :] == flat_test[None, :, :]).all(-1).any()
    with pytest.raises(ValueError, match="Invalid split"):
        vision_data.mnist5k_split("valid")  # type: ignore[arg-type]


def test_multitask_split_pairs_each_digit_with_a_distinct_garment_of_the_same_split() -> None:
    for split in ("train", "test"):
        data = vision_data.multitask_split(split, seed=0)  # type: ignore[arg-type]
        digits = vision_data.mnist5k_split(split)  # type: ignore[arg-type]
        garments = vision_data.fashion_split(split)  # type: ignore[arg-type]
        assert len(data) == len(digits)
        torch.testing.assert_close(data.digits, digits.labels)
        # recover each garment: 2 * overlay - digit must be a row of the garment split
        recovered = (2 * data.images - digits.images).flatten(1)
        dist = torch.cdist(
            recovered, garments.images.flatten(1), compute_mode="donot_use_mm_for_euclid_dist"
        )
        rows = dist.argmin(1)
        assert dist.min(1).values.max() < 1e-4
        assert len(rows.unique()) == len(rows)
        torch.testing.assert_close(data.labels, garments.labels[rows])
    same = vision_data.multitask_split("train", seed=0)
    torch.testing.assert_close(same.images, vision_data.multitask_split("train", seed=0).images)
    assert not torch.equal(same.images, vision_data.multitask_split("train", seed=1).images)


def test_batches_visit_every_row_once_per_epoch() -> None:
    data = vision_data.ImageSet(torch.zeros(10, 1, 28, 28), torch.arange(10))
    batches = vision_data.Batches(data, 5, torch.Generator().manual_seed(0))
    for _ in range(3):
        epoch = torch.cat([next(batches).labels for _ in range(2)])
        assert sorted(epoch.tolist()) == list(range(10))
    with pytest.raises(ValueError, match="Invalid batch_size"):
        vision_data.Batches(data, 11, torch.Generator())


def test_to_float_images_rejects_other_dtypes() -> None:
    images = vision_data.to_float_images(torch.full((2, 28, 28), 51, dtype=torch.uint8))
    assert images.shape == (2, 1, 28, 28) and images.dtype == torch.float32
    torch.testing.assert_close(images, torch.full_like(images, 0.2))
    with pytest.raises(ValueError, match="Invalid images"):
        vision_data.to_float_images(torch.zeros(2, 28, 28))


def test_coarse_labels_are_a_function_of_the_fine_label() -> None:
    data = negative_case.coarse_set("train")
    for c in range(10):
        assert data.digits[data.labels == c].unique().tolist() == [vision_data.FASHION_COARSE[c]]
    assert sorted(set(vision_data.FASHION_COARSE)) == [0, 1, 2]


# --- models ---------------------------------------------------------------------------------


def test_models_shapes_and_chunked_forward() -> None:
    x = torch.randn(9, 1, 28, 28)
    mlp = MLP()
    assert [tuple(w.shape) for w in mlp.weight_matrices()] == [(256, 784), (128, 256), (10, 128)]
    (chunked,) = forward_in_chunks(mlp, x, chunk=4)
    torch.testing.assert_close(chunked, mlp(x))
    net = ConvNet(heads=(10, 3))
    a, b = forward_in_chunks(net, x, chunk=2)
    assert a.shape == (9, 10) and b.shape == (9, 3)
    torch.testing.assert_close(a, net(x)[0])
    with pytest.raises(ValueError, match="Invalid heads"):
        ConvNet(heads=())
    with pytest.raises(ValueError, match="Invalid sizes"):
        MLP(sizes=(784,))
    loss, acc = classification_metrics(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0]))
    assert acc == 0.5 and loss == pytest.approx(
        (math.log1p(math.exp(-2)) + math.log1p(math.exp(2))) / 2
    )


# --- whole runs (smoke budget, synthetic data) ------------------------------------------------


def _run(module: ModuleType, name: str, method: str, lam: float, steps: int) -> dict[str, Any]:
    exp = get(name)
    spec = RunSpec(name, method, lam, exp.rho, 0, "smoke")
    result = module.run(spec, steps=steps)
    record = complete_record(spec, result, 0.0)
    validate_record(record, require_losses=True)
    return record


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (smooth_mlp, "smooth_mlp"),
        (small_weights, "small_weights"),
        (multitask, "multitask"),
        (negative_case, "negative_case"),
    ],
)
def test_runs_record_losses_and_accuracies_and_learn(module: ModuleType, name: str) -> None:
    record = _run(module, name, "bloop", 0.1, steps=40)
    traj = record["trajectory"]
    assert traj["step"][0] == 0 and traj["step"][-1] == 40 and len(traj["step"]) >= 3
    for key in (*LOSS_KEYS, "train_acc", "eval_acc"):
        assert all(math.isfinite(v) for v in traj[key]), key
    assert "diverged_at_step" not in record["extra"]
    assert traj["train_main"][-1] < traj["train_main"][0]  # the bands are learnable
    assert record["config"]["steps"] == 40


def test_smooth_mlp_aux_is_exact_at_eval_and_lam_shrinks_it() -> None:
    plain = _run(smooth_mlp, "smooth_mlp", "mixed", 0.0, steps=30)
    strong = _run(smooth_mlp, "smooth_mlp", "bloop", 1.0, steps=30)
    for r in (plain, strong):
        f = r["final"]
        assert f["train_aux"] == f["eval_aux"]
        assert f["aux_power_iteration"] <= f["train_aux"] + 1e-5  # the estimate is a lower bound
        assert f["aux_power_iteration"] == pytest.approx(f["train_aux"], abs=0.2)  # lags a little
    assert strong["final"]["train_aux"] < plain["final"]["train_aux"] - 0.05


def test_small_weights_aux_is_half_squared_norm_and_lam_shrinks_it() -> None:
    plain = _run(small_weights, "small_weights", "mixed", 0.0, steps=20)
    strong = _run(small_weights, "small_weights", "mixed", 1.0, steps=20)
    assert strong["final"]["train_aux"] < plain["final"]["train_aux"]
    net = ConvNet()
    expected = sum(float((p.detach() ** 2).sum()) for p in net.parameters()) / 2
    assert small_weights.half_squared_norm(list(net.parameters())).item() == pytest.approx(
        expected, rel=1e-5
    )


def test_multitask_lr_is_rescaled_by_lam_and_rho_is_the_papers() -> None:
    assert get("multitask").rho == 0.001
    record = _run(multitask, "multitask", "mixed", 9.0, steps=10)
    assert record["config"]["lr"] == pytest.approx(0.01)
    assert {"train_aux_acc", "eval_aux_acc"} <= set(record["final"])


def test_registered_grids_include_zero_and_are_log_spaced() -> None:
    for name in ("smooth_mlp", "small_weights", "multitask", "negative_case"):
        exp = get(name)
        for budget in ("smoke", "default", "paper"):
            lams = exp.lams_for(budget)
            assert lams[0] == 0.0 and len(lams) >= 3
            ratios = [b / a for a, b in itertools.pairwise(lams[1:])]
            assert all(r > 1 for r in ratios)
        assert exp.datasets
