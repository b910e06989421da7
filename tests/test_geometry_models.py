"""Pure pieces: flips, the masked loss, LR schedules at their boundaries, every registered model."""
import numpy as np
import pytest
import torch

from fkd.competition import COMP
from fkd.competition.keypoints import FLIP_PERM, flip_keypoints, flip_keypoints_torch
from fkd.learn.augment import Augmenter
from fkd.learn.losses import masked_loss
from fkd.learn.models import HEADS, MODELS, create_model
from fkd.learn.schedules import SCHEDULERS


def kp_of(**named):
    k = np.full(30, np.nan, np.float32)
    for name, (x, y) in named.items():
        j = COMP.keypoints.index(name)
        k[2 * j:2 * j + 2] = x, y
    return k


def test_flip_twice_is_identity():
    k = np.random.default_rng(0).uniform(0, 96, (5, 30)).astype(np.float32)
    for c in (95.0, 96.0, 95.5):
        assert np.allclose(flip_keypoints(flip_keypoints(k, c), c), k)


def test_flip_swaps_left_and_right():
    k = kp_of(left_eye_center=(66, 38), right_eye_center=(30, 39), nose_tip=(48, 58),
              mouth_left_corner=(63, 76), mouth_right_corner=(33, 77))
    f = flip_keypoints(k, 95.0)
    g = lambda kk, n: tuple(kk[2 * COMP.keypoints.index(n):2 * COMP.keypoints.index(n) + 2])
    assert g(f, "left_eye_center") == (95 - 30, 39)    # the right eye, mirrored, is now the left eye
    assert g(f, "right_eye_center") == (95 - 66, 38)
    assert g(f, "nose_tip") == (95 - 48, 58)
    assert g(f, "mouth_left_corner") == (95 - 33, 77)
    assert np.isnan(g(f, "left_eyebrow_inner_end")).all()
    assert np.allclose(flip_keypoints_torch(torch.from_numpy(k[None]), 95.0).numpy()[0], f, equal_nan=True)


def test_augmenter_flip_keeps_image_and_labels_consistent():
    img = np.zeros((96, 96), np.uint8)
    img[38, 66] = 255                                    # a bright dot on the left eye (image right)
    k = kp_of(left_eye_center=(66, 38), right_eye_center=(30, 38))
    aug = Augmenter(strength=0.0, flip_p=1.0, flip_const=95.0)
    im2, k2 = aug(img, k, seed=0)
    y, x = np.unravel_index(im2.argmax(), im2.shape)
    j = 2 * COMP.keypoints.index("right_eye_center")
    assert (x, y) == tuple(k2[j:j + 2].astype(int))      # the dot is now where the right eye label says


def test_augmented_points_leaving_the_image_are_masked_not_dropped():
    k = kp_of(left_eye_center=(95.5, 50), right_eye_center=(30, 38))
    aug = Augmenter(strength=3.0, flip_p=0.0, flip_const=95.0)
    seen_masked = False
    for s in range(40):
        _, k2 = aug(np.zeros((96, 96), np.uint8), k, seed=s)
        assert k2.shape == (30,)
        assert np.isnan(k2[4:]).all()                   # missing stays missing
        fin = np.isfinite(k2[:4])
        assert ((k2[:4][fin] >= 0) & (k2[:4][fin] < 96)).all()
        seen_masked |= not fin.all()
    assert seen_masked


def test_augmentation_is_a_function_of_the_sample_seed_alone():
    """What makes an epoch the same whatever the loader's workers: a sample's augmentation depends on its seed,
    not on which samples the augmenter saw before it; and the seeds do draw different transforms."""
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (96, 96), dtype=np.uint8)
    k = kp_of(left_eye_center=(66, 38), right_eye_center=(30, 38), nose_tip=(48, 55))
    aug = Augmenter(strength=1.0, flip_p=0.5, flip_const=97.0)
    first = [aug(face, k, seed=s) for s in range(6)]
    again = [aug(face, k, seed=s) for s in reversed(range(6))][::-1]
    fresh = [Augmenter(strength=1.0, flip_p=0.5, flip_const=97.0)(face, k, seed=s) for s in range(6)]
    for (i1, k1), (i2, k2), (i3, k3) in zip(first, again, fresh):
        assert np.array_equal(i1, i2) and np.array_equal(i1, i3)
        np.testing.assert_array_equal(k1, k2)
        np.testing.assert_array_equal(k1, k3)
    assert len({im.tobytes() for im, _ in first}) == 6
    assert len({tuple(np.round(kk[:2], 3)) for _, kk in first}) == 6


def test_masked_loss_ignores_nan_targets():
    pred = torch.full((2, 30), 50.0)
    target = torch.full((2, 30), float("nan"))
    target[0, :4] = 50.0                                  # perfect where labelled
    assert masked_loss(pred, target).item() == 0.0
    target[1, 0] = 98.0                                   # one labelled error of 48 px = 1 normalised
    for kind in ("mse", "l1", "smoothl1", "wing"):
        assert torch.isfinite(masked_loss(pred, target, kind))
    assert masked_loss(pred, target, "mse").item() == pytest.approx(1 / 5)
    p = pred.clone().requires_grad_()
    masked_loss(p, target).backward()
    assert torch.isfinite(p.grad).all() and p.grad[1, 5] == 0


@pytest.mark.parametrize("name", [n for n, f in SCHEDULERS.items() if f is not None])
def test_schedules_at_their_boundaries(name):
    f = SCHEDULERS[name]
    total = 100
    vals = [f(s, total, 0.1) for s in range(total + 1)]
    assert all(0 < v <= 1.0 + 1e-9 for v in vals)
    if name == "constant":
        return
    assert vals[0] < 0.2 and max(vals) == pytest.approx(1.0, abs=0.02)
    assert vals[-1] < 0.02 and vals[-1] == min(vals[10:])


@pytest.mark.parametrize("name,head", [(n, h) for n in sorted(MODELS)
                                       for h in (["flatten"] if n == "baseline" else sorted(HEADS))])
def test_every_model_builds(name, head):
    torch.manual_seed(0)
    m = create_model(name, head=head, dropout=0.1)
    m.eval()
    x, src = torch.rand(3, 1, 96, 96), torch.tensor([0, 1, 1])
    out = m(x, src, torch.rand(3, 30) * 96)
    assert out["preds"].shape == (3, 30)
    assert torch.isfinite(out["preds"]).all() and torch.isfinite(out["loss"])


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
@pytest.mark.parametrize("head", ["flatten", "simcc"])
def test_a_finer_output_stride_keeps_a_larger_final_map(name, head):
    """output_stride=16 dilates the last stage: the 96 px face ends as a 6x6 map instead of 3x3, and the heads
    size themselves from it."""
    from fkd.config import make_config
    from fkd.learn.models import create_from_config
    cfg = make_config(overrides=[f"model={name}", f"head={head}", "output_stride=16"])
    m = create_from_config(cfg).eval()
    with torch.no_grad():
        assert m.body(torch.zeros(1, 1, 96, 96)).shape[-2:] == (6, 6)
        out = m(torch.rand(2, 1, 96, 96), torch.tensor([0, 1]), torch.rand(2, 30) * 96)
    assert out["preds"].shape == (2, 30) and torch.isfinite(out["loss"])
    assert cfg.fingerprint() != make_config(overrides=[f"model={name}", f"head={head}"]).fingerprint()


def test_output_stride_is_refused_where_the_head_chooses_its_own():
    from fkd.config import make_config
    from fkd.errors import FkdError
    with pytest.raises(FkdError, match="output_stride=16 is for a timm backbone"):
        make_config(overrides=["head=fpn4", "output_stride=16"])
    with pytest.raises(FkdError, match="output_stride"):
        make_config(overrides=["model=baseline", "output_stride=16"])


@pytest.mark.parametrize("split,sigma", [(1, 1.0), (3, 2.5)])
def test_simcc_split_and_sigma_reach_the_head_and_its_convention(split, sigma):
    """--set simcc_split / simcc_sigma build the head they name: split x 96 bins still centred at
    (i + 0.5) / split - 0.5 (mirroring about 95), a Gaussian target of that sigma decodes back to its label, the
    loss is lowest at the label, and the run gets its own fingerprint (the defaults keep the old one)."""
    from fkd.config import make_config
    from fkd.learn.models import create_from_config
    cfg = make_config(overrides=["head=simcc", f"simcc_split={split}", f"simcc_sigma={sigma}"])
    m = create_from_config(cfg)
    head = m.head
    assert (head.bins, head.split, head.sigma) == (96 * split, split, sigma)
    c = head.centres
    assert torch.allclose(c + c.flip(0), torch.full_like(c, 95.0))
    g = torch.exp(-0.5 * ((c - 41.7) / sigma) ** 2)
    assert float((g / g.sum() * c).sum()) == pytest.approx(41.7, abs=1e-3)
    target = torch.full((1, 30), float("nan"))
    target[0, :2] = torch.tensor([41.7, 20.2])
    def peaked_at(x, y):                                                    # log of the target Gaussian at (x, y)
        gx = -0.5 * ((c - x) / sigma) ** 2
        gy = -0.5 * ((c - y) / sigma) ** 2
        return gx.expand(1, 2 * 15, -1).clone(), gy.expand(1, 2 * 15, -1).clone()
    src = torch.tensor([0])
    at = float(head.loss(peaked_at(41.7, 20.2), target, src))
    assert at < 1e-4 < float(head.loss(peaked_at(43.7, 20.2), target, src))
    with torch.no_grad():
        out = m.eval()(torch.rand(2, 1, 96, 96), torch.tensor([0, 1]), torch.rand(2, 30) * 96)
    assert out["preds"].shape == (2, 30) and torch.isfinite(out["loss"])
    base = make_config(overrides=["head=simcc"])
    assert cfg.fingerprint() != base.fingerprint()
    assert make_config(overrides=["head=simcc", "simcc_split=2", "simcc_sigma=1.5"]).fingerprint() == base.fingerprint()


def test_simcc_options_are_refused_for_other_heads_and_out_of_range():
    from fkd.config import make_config
    from fkd.errors import FkdError
    with pytest.raises(FkdError, match="simcc_sigma=2.0 is for the simcc head"):
        make_config(overrides=["head=flatten", "simcc_sigma=2"])
    with pytest.raises(FkdError, match="simcc_split must be in 1..16"):
        make_config(overrides=["head=simcc", "simcc_split=0"])
    with pytest.raises(FkdError, match="simcc_sigma must be > 0"):
        make_config(overrides=["head=simcc", "simcc_sigma=0"])


def test_heatmap_and_simcc_decoders_share_one_convention_and_mirror_about_95():
    """Encoding and decoding agree (cell i of a stride-s map is centred at (i + 0.5) s - 0.5) and a mirrored map
    decodes to the mirrored point about W - 1 = 95: flip TTA un-flips decoded points with the run's fitted
    constant, never by flipping maps."""
    from fkd.learn.losses import HALF
    from fkd.learn.models.heads import SimCCHead, soft_argmax
    torch.manual_seed(0)
    logits = torch.randn(2, 15, 24, 24) * 3
    p = soft_argmax(logits, 4) * HALF + HALF                                 # (2, 15, 2) pixels
    pm = soft_argmax(logits.flip(-1), 4) * HALF + HALF
    assert torch.allclose(pm[..., 0], 95 - p[..., 0], atol=1e-4) and torch.allclose(pm[..., 1], p[..., 1], atol=1e-4)
    one_hot = torch.full((1, 1, 24, 24), -1e4)
    one_hot[0, 0, 5, 7] = 0.0                                              # all mass in row 5, column 7
    assert (soft_argmax(one_hot, 4)[0, 0] * HALF + HALF).tolist() == pytest.approx([7 * 4 + 1.5, 5 * 4 + 1.5])
    head = SimCCHead(8, 9, 1, 0.0, split=2, sigma=1.5)
    c = head.centres
    assert torch.allclose(c + c.flip(0), torch.full_like(c, 95.0))          # bins mirror about 95 too
    # a Gaussian target at x decodes back to x, away from the borders (no bias from the encoding)
    g = torch.exp(-0.5 * ((c - 37.3) / 1.5) ** 2)
    assert float((g / g.sum() * c).sum()) == pytest.approx(37.3, abs=1e-3)


def test_simcc_loss_ignores_unlabelled_keypoints_and_is_lowest_at_the_label():
    from fkd.learn.models.heads import SimCCHead
    head = SimCCHead(8, 9, 2, 0.0, split=2, sigma=1.5)
    target = torch.full((1, 30), float("nan"))
    target[0, :2] = torch.tensor([40.0, 50.0])                              # one labelled keypoint
    def logits_at(x, y):
        lx = torch.full((1, 2 * 15, head.bins), -20.0)
        ly = lx.clone()
        lx[..., int((x + 0.5) * 2)] = 0.0
        ly[..., int((y + 0.5) * 2)] = 0.0
        return lx, ly
    src = torch.tensor([1])
    at, off = head.loss(logits_at(40, 50), target, src), head.loss(logits_at(44, 50), target, src)
    assert at < off
    nothing = head.loss(logits_at(40, 50), torch.full((1, 30), float("nan")), src)
    assert float(nothing) == 0.0


def test_source_picks_its_own_output():
    torch.manual_seed(0)
    m = create_model("resnet18", source_aware=True).eval()
    x = torch.rand(1, 1, 96, 96).repeat(2, 1, 1, 1)
    p = m(x, torch.tensor([0, 1]))["preds"]
    assert not torch.allclose(p[0], p[1])
    m2 = create_model("resnet18", source_aware=False).eval()
    p2 = m2(x, torch.tensor([0, 1]))["preds"]
    assert torch.allclose(p2[0], p2[1])


def test_baseline_is_the_reference_architecture():
    m = create_model("baseline", dropout=0.4, source_aware=False)
    convs = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 64, (3, 3), (1, 1)), (64, 64, (3, 3), (1, 1)), (64, 128, (3, 3), (1, 1)),
        (128, 128, (3, 3), (1, 1)), (128, 256, (3, 3), (1, 1))]
    lins = [x for x in m.modules() if isinstance(x, torch.nn.Linear)]
    assert [(x.in_features, x.out_features) for x in lins] == [(2304, 1024), (1024, 512), (512, 30)]
    assert [d.p for d in m.modules() if isinstance(d, torch.nn.Dropout)] == [0.4, 0.4]


def test_tta_flip_constant_is_fitted_to_the_data_convention():
    from fkd.competition.keypoints import fit_tta_flip_const, tta_average
    rng = np.random.default_rng(0)
    truth = rng.uniform(10, 86, (500, 30))
    truth[:, 4:6] = np.nan                                   # missing labels are ignored
    c_true, c_used, b = 96.7, 96.0, 0.4                      # the data's convention, training's, a model bias
    p = truth + b + rng.normal(0, 1.0, truth.shape)          # plain predictions
    pm = truth + b + rng.normal(0, 1.0, truth.shape)         # predictions of the mirrored faces...
    pm[:, 0::2] = c_true - truth[:, 0::2] + b + rng.normal(0, 1.0, (500, 15))   # ...in the mirrored frame
    pm = pm.reshape(500, 15, 2)[:, FLIP_PERM].reshape(500, 30)   # ...with left and right swapped
    tta = tta_average(p, pm, c_used)                         # un-flipped with the training constant
    c = fit_tta_flip_const(tta, truth, c_used)
    assert c == pytest.approx(c_true, abs=0.1)               # recovered whatever training used
    err = lambda a: np.sqrt(np.nanmean((a - truth)[:, 0::2] ** 2))
    assert err(tta_average(p, pm, c)) < err(tta) - 0.05


def test_baseline_starts_at_the_mean_and_learns_within_a_few_dozen_steps(practice_dir, trains):
    """PyTorch's default init left BaselineNet's features near zero (no BatchNorm in five blocks): on ytf15 it
    sat at the mean keypoints for a whole schedule. He init + a zero last layer must start at the mean and fit
    a fixed batch of practice faces quickly."""
    from fkd.competition.data import load_data
    torch.manual_seed(0)
    d = load_data(practice_dir)
    x = torch.from_numpy(d.images[:64]).float().div(255).unsqueeze(1)
    y = torch.from_numpy(d.keypoints[:64]).float()
    src = torch.from_numpy(np.asarray(d.source[:64])).long()
    m = create_model("baseline", dropout=0.0, source_aware=True, loss="mse")
    mean = torch.from_numpy(np.nanmean(d.keypoints, 0)).float()
    m.init_output(mean[None].repeat(2, 1))
    with torch.no_grad():
        assert torch.allclose(m(x, src)["preds"], mean.expand(64, -1), atol=1e-4)   # starts at the mean
        assert m.body(x).std() > 0.1                                                # the signal survives
    opt = torch.optim.Adam(m.parameters(), lr=3e-4)
    start = m(x, src, y)["loss"].item()
    for _ in range(40):
        loss = m(x, src, y)["loss"]
        opt.zero_grad(), loss.backward(), opt.step()
    assert m(x, src, y)["loss"].item() < 0.5 * start


def test_cutout_hides_pixels_not_labels_and_aug_end_weakens_the_last_quarter():
    from fkd.config import make_config
    cfg = make_config(preset="quick", overrides=["aug=0", "cutout=1.0", "epochs=8", "aug_end=0.25", "flip_p=0"])
    face, kp = np.full((96, 96), 128, np.uint8), np.full(30, 40.0, np.float32)
    img, out = Augmenter.of(cfg)(face, kp, seed=1)
    assert (img != 128).mean() > 0.005                     # some pixels under a hole
    assert np.array_equal(out, kp)                          # the labels stay where they were (no geometry at aug 0)
    assert [Augmenter.of(cfg, e).strength for e in (0, 5, 6, 7)] == [0.0, 0.0, 0.25, 0.25]
    wide = make_config(preset="quick", overrides=["rotate=40", "scale=0.3"])
    affine = Augmenter.of(wide).pipeline.transforms[0]
    assert affine.rotate == (-40.0, 40.0) and affine.scale["x"] == pytest.approx((0.7, 1.3))


def test_tta_views_map_back_and_their_weight_is_fitted_in_closed_form():
    """Shifted, zoomed and turned views: a view's keypoints map back exactly; a stand-in model that finds the
    centroid of the face's brightness (it moves with the face) predicts the same through every view, each one
    alone (a pair of opposite views could hide a wrong mapping in their mean); the views' weight is the
    least-squares one."""
    from fkd.competition.keypoints import unview, view_matrices, view_weight
    from fkd.device import select_device
    from fkd.learn.models import predict_images, predict_views

    mats = view_matrices(1.5, 0.05, 14)
    assert len(mats) == 8 and view_matrices(0, 0) == [] and len(view_matrices(1.5, 0.05)) == 6
    turn = mats[6][:, :2]
    assert np.allclose(turn @ turn.T, np.eye(2), atol=1e-6) and np.degrees(np.arctan2(turn[1, 0], turn[0, 0])) == \
        pytest.approx(14, abs=1e-4) and np.allclose(mats[6] @ (47.5, 47.5, 1), 47.5)   # a turn about the centre
    k = np.random.default_rng(0).uniform(10, 80, (3, 30)).astype(np.float32)
    for m in mats:
        seen = k.reshape(3, 15, 2) @ m[:, :2].T + m[:, 2]         # where the view puts the points
        assert np.allclose(unview(seen.reshape(3, 30), m), k, atol=1e-4)

    class Centroid(torch.nn.Module):
        def forward(self, x, source, target=None, **_):
            w = x[:, 0].float() / x[:, 0].float().sum((1, 2), keepdim=True)
            ys, xs = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
            c = torch.stack([(w * xs).sum((1, 2)), (w * ys).sum((1, 2))], -1)      # (B, 2)
            return {"preds": c.repeat(1, 15)}

    yy, xx = np.mgrid[0:96, 0:96]
    faces = np.stack([(200 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 60)).astype(np.uint8)
                      for cx, cy in ((40, 45), (55, 50))])
    dev, _ = select_device("cpu", "off")
    plain = predict_images(Centroid(), faces, np.zeros(2, np.int64), dev, None, channels_last=False)
    vp, vm = predict_views(Centroid(), faces, np.zeros(2, np.int64), dev, None, mats, channels_last=False)
    assert np.allclose(vp, plain, atol=0.05)                   # every view, mapped back, agrees
    for m in mats:
        one, _ = predict_views(Centroid(), faces, np.zeros(2, np.int64), dev, None, [m], channels_last=False)
        assert np.allclose(one, plain, atol=0.05), m
    assert np.allclose(vm[:, 0], 95 - plain[:, 0], atol=0.05)  # the mirrored ones are not un-flipped yet
    truth = np.zeros((50, 30))
    assert view_weight(truth + 1, truth, truth) == 1.0 and view_weight(truth, truth + 1, truth) == 0.0
    assert view_weight(truth + 1, truth - 1, truth) == pytest.approx(0.5)
