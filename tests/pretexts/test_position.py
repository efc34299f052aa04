"""Anatomical position targets: analytic planes, synthetic hearts, and a real exam's headers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cardiossl.datasets.geometry import Plane, trace_in_slice
from cardiossl.pretexts import PretextConfigError
from cardiossl.pretexts.base import sample_meta
from cardiossl.pretexts.position import ANTERIOR, LATERAL, PositionPretext, trace

REAL = Path(__file__).parents[2] / ".." / "shared" / "data" / "real"


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def random_rotation(rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


class Scene:
    """An SA slice and LA planes built by hand: the LA traces are known 3-D lines through X."""

    def __init__(self, rng, spacing=(1.7, 1.2), shape=(70, 90), tilt=0.35):
        rot = random_rotation(rng)
        self.row, self.col = rot[0], rot[1]
        self.spacing = np.asarray(spacing, dtype=np.float64)
        self.shape = shape
        self.origin = rng.uniform(-100, 100, size=3)
        self.sa = Plane(self.origin, self.row, self.col, tuple(spacing))
        self.normal = self.sa.normal
        # The crossing point X at a known fractional pixel.
        self.rc = np.array([31.37, 47.81])
        self.X = self.sa.pixel_to_world(*self.rc)
        # Trace directions in the SA plane (world), chosen so the orientation rule's sign is clear.
        lat_in = unit(LATERAL - (LATERAL @ self.normal) * self.normal)
        ant_in = unit(ANTERIOR - (ANTERIOR @ self.normal) * self.normal)
        self.w = {
            "4ch": unit(lat_in + 0.2 * np.cross(self.normal, lat_in)),
            "2ch": unit(ant_in - 0.15 * np.cross(self.normal, ant_in)),
            "3ch": unit(lat_in - ant_in),
        }
        self.la = np.full((3, 11), np.nan)
        for k, view in enumerate(("2ch", "3ch", "4ch")):
            w = self.w[view]
            # An oblique LA plane containing the line X + t w, tilted away from the SA normal.
            other = unit(self.normal + tilt * np.cross(self.normal, w))
            col = unit(other - (other @ w) * w)
            self.la[k] = Plane(self.X - 40 * col + 13 * w, w, col, (1.4, 1.4)).to_vector()

    def sample(self, image=None):
        img = np.zeros((1,) + self.shape, np.float32) if image is None else image
        return dict(image=img, plane=self.sa.to_vector(), la_planes=self.la.copy(), view="sa",
                    stack_position=0.4, subject_id="hand", slice_index=0)

    def px_dir(self, w):
        """Pixel-unit direction of a world direction lying in the SA plane."""
        d = np.array([w @ self.col / self.spacing[0], w @ self.row / self.spacing[1]])
        return d / np.linalg.norm(d)

    def world(self):
        rr, cc = np.mgrid[0 : self.shape[0], 0 : self.shape[1]]
        return self.sa.pixel_to_world(rr, cc)


ANY_ANGLE = 5.0  # the random hand-built scenes are no standard plan: their traces may cross at 6 degrees


@pytest.fixture(params=[0, 1, 2, 3])
def scene(request):
    return Scene(np.random.default_rng(request.param))


def test_traces_match_the_hand_built_lines(scene):
    for k, view in enumerate(("2ch", "3ch", "4ch")):
        p, d_mm, w = trace(scene.sa.to_vector(), scene.la[k])
        # The point lies on the 3-D line X + t w, the direction is w (up to sign).
        world = scene.sa.pixel_to_world(*p)
        off = world - scene.X
        assert np.linalg.norm(off - (off @ scene.w[view]) * scene.w[view]) < 1e-6
        assert abs(abs(w @ scene.w[view]) - 1) < 1e-9
        # Non-square pixels: the pixel direction differs from the mm direction, as computed by hand.
        d_px = d_mm / scene.spacing
        d_px /= np.linalg.norm(d_px)
        assert abs(abs(d_px @ scene.px_dir(scene.w[view])) - 1) < 1e-9
        # Same line as geometry.trace_in_slice.
        p2, d2 = trace_in_slice(scene.sa, Plane.from_vector(scene.la[k]))
        assert abs(abs(d2 @ d_px) - 1) < 1e-9
        delta = p2 - p
        assert abs(delta[0] * d_px[1] - delta[1] * d_px[0]) < 1e-6


def test_boxes_equal_a_slow_reference(scene):
    """Every pixel's label from world geometry: mm offsets along the slice's row/col axes."""
    pre = PositionPretext({"distance_mm": 23.0, "box_mm": 17.3, "min_cross_deg": ANY_ANGLE})
    out = pre.make_target(scene.sample(), np.random.default_rng(0))
    u, v = scene.w["4ch"], scene.w["2ch"]  # already on the anatomical side by construction
    assert u @ LATERAL > 0 and v @ ANTERIOR > 0
    world = scene.world()
    ref = np.zeros(scene.shape, np.uint8)
    for k in (0, 2, 6, 8, 1, 3, 5, 7, 4):  # corners, edges, centre last
        i, j = k % 3 - 1, k // 3 - 1
        centre = scene.X + 23.0 * (i * u + j * v)
        rel = world - centre
        inside = (np.abs(rel @ scene.row) <= 17.3 / 2) & (np.abs(rel @ scene.col) <= 17.3 / 2)
        ref[inside] = k + 1
    assert out["target"].dtype == np.uint8
    np.testing.assert_array_equal(out["target"], ref)
    ann = pre.annotations(out)
    np.testing.assert_allclose(ann["cross_point"], scene.rc, atol=1e-6)
    # Box 6 (lateral) sits d mm from the centre along u, converted with each axis' own spacing.
    expect6 = scene.rc + 23.0 * np.array([u @ scene.col, u @ scene.row]) / scene.spacing
    np.testing.assert_allclose(ann["box_centres"][5], expect6, atol=1e-6)


def test_box_labels_follow_the_anatomical_rule_not_the_plane_sign(scene):
    """Flipping the LA planes' orientation (row/col signs) must not change any label."""
    pre = PositionPretext({"min_cross_deg": ANY_ANGLE})
    a = pre.make_target(scene.sample(), np.random.default_rng(0))["target"]
    flipped = scene.sample()
    la = flipped["la_planes"]
    la[:, 3:9] *= -1
    b = PositionPretext({"min_cross_deg": ANY_ANGLE}).make_target(flipped, np.random.default_rng(0))["target"]
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == set(range(10))


def test_axis_aligned_case_with_known_pixels():
    """Axial slice, pixel (r, c) = world (c * 1.0, r * 2.0, 0): every number checkable by hand."""
    sa = Plane(np.zeros(3), [1, 0, 0], [0, 1, 0], (2.0, 1.0))
    p0 = np.array([40.0, 60.0, 0.0])
    u, v = unit([1, 1, 0]), unit([1, -1, 0])  # lateral (left+posterior), anterior side
    la = np.full((3, 11), np.nan)
    la[2] = Plane(p0, u, [0, 0, 1], (1.0, 1.0)).to_vector()  # 4ch
    la[0] = Plane(p0 + 7 * v, v, [0, 0, -1], (1.0, 1.0)).to_vector()  # 2ch
    sample = dict(image=np.zeros((1, 64, 100), np.float32), plane=sa.to_vector(), la_planes=la, view="sa")
    pre = PositionPretext({"distance_mm": 30.0, "box_mm": 21.0})  # borders between pixel centres
    assert pre.accepts(sample_meta(sample))
    out = pre.make_target(sample, np.random.default_rng(0))
    ann = pre.annotations(out)
    np.testing.assert_allclose(ann["cross_point"], [30.0, 40.0], atol=1e-9)
    s = 30.0 / math.sqrt(2.0)
    # Box 6 = centre + d u: world (40 + s, 60 + s) -> pixel (row (60 + s) / 2, col 40 + s).
    np.testing.assert_allclose(ann["box_centres"][5], [(60 + s) / 2, 40 + s], atol=1e-9)
    # Box 8 = centre + d v: world (40 + s, 60 - s).
    np.testing.assert_allclose(ann["box_centres"][7], [(60 - s) / 2, 40 + s], atol=1e-9)
    t = out["target"]
    # Centre box: 21 mm square = rows 24.75..35.25 (2 mm rows), cols 29.5..50.5 (1 mm cols).
    rows, cols = np.nonzero(t == 5)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (25, 35, 30, 50)
    # Non-square pixels: boxes are square in mm (21 mm = ~10.5 rows of 2 mm, ~21 columns of 1 mm).
    for k in range(1, 10):
        r, c = np.nonzero(t == k)
        if c.min() > 0 and c.max() < t.shape[1] - 1 and r.min() > 0 and r.max() < t.shape[0] - 1:
            n_rows, n_cols = r.max() - r.min() + 1, c.max() - c.min() + 1
            assert abs(n_rows * 2.0 - 21.0) <= 2.0 and abs(n_cols * 1.0 - 21.0) <= 1.0, k
    assert (t[:, 0] == 1).any()  # box 1 (2 d / sqrt 2 left of the centre) is clipped at the border
    # Trace end points in the npz annotations: the 4ch line r = (c - 40) / 2 + 30 at the borders.
    seg = ann["trace_points"][2]
    for r, c in seg:
        assert abs(r - ((c - 40.0) / 2.0 + 30.0)) < 1e-9
    assert np.isnan(ann["trace_points"][1]).all()  # no 3ch plane


def test_lines_equal_a_slow_reference(scene):
    pre = PositionPretext({"target": "lines", "sigma_mm": 3.3})
    out = pre.make_target(scene.sample(), np.random.default_rng(0))
    world = scene.world()
    assert out["target"].shape == (3,) + scene.shape and out["target"].dtype == np.float32
    for k, view in enumerate(("2ch", "3ch", "4ch")):
        rel = world - scene.X
        w = scene.w[view]
        dist = np.linalg.norm(rel - (rel @ w)[..., None] * w, axis=-1)
        ref = np.exp(-(dist**2) / (2 * 3.3**2))
        np.testing.assert_allclose(out["target"][k], ref, atol=2e-5)


def test_lines_view_subset_and_order(scene):
    pre = PositionPretext({"target": "lines", "views": ["4ch", "2ch"]})
    out = pre.make_target(scene.sample(), np.random.default_rng(0))
    full = PositionPretext({"target": "lines"}).make_target(scene.sample(), np.random.default_rng(0))
    np.testing.assert_allclose(out["target"], full["target"][[2, 0]])


def test_lines_invariant_under_a_rigid_motion_of_the_whole_exam(scene):
    rot = random_rotation(np.random.default_rng(9))
    shift = np.array([12.0, -30.0, 5.0])

    def move(v):
        v = v.copy()
        v[0:3] = rot @ v[0:3] + shift
        v[3:6] = rot @ v[3:6]
        v[6:9] = rot @ v[6:9]
        return v

    s0 = scene.sample()
    s1 = dict(s0, plane=move(s0["plane"]), la_planes=np.stack([move(r) for r in s0["la_planes"]]))
    pre = PositionPretext({"target": "lines"})
    a = pre.make_target(s0, np.random.default_rng(0))["target"]
    b = pre.make_target(s1, np.random.default_rng(0))["target"]
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_reasons_name_why_a_slice_gets_no_target(scene):
    s = scene.sample()

    def keep(*views):
        la = np.full((3, 11), np.nan)
        for k, v in enumerate(("2ch", "3ch", "4ch")):
            if v in views:
                la[k] = s["la_planes"][k]
        return dict(s, la_planes=la)

    boxes = PositionPretext({"min_cross_deg": ANY_ANGLE, "single_view": False})
    lines, loc = PositionPretext({"target": "lines"}), PositionPretext({"target": "slice_location"})
    lines_24 = PositionPretext({"target": "lines", "views": ["2ch", "4ch"]})
    assert boxes.reason(s) is None and lines.reason(s) is None and loc.reason(s) is None
    assert boxes.accepts(s) and lines.accepts(s) and loc.accepts(s)
    assert boxes.reason(keep()) == lines.reason(keep()) == "no LA view"
    assert boxes.reason(keep("3ch")) == "only a 3ch trace (fixes no box axis)"
    assert lines.reason(keep("3ch")) is None  # one view is enough for lines
    assert lines_24.reason(keep("3ch")) == "no LA view"  # ... of the views it draws
    assert boxes.reason(keep("4ch")) == "single LA view (single_view fallback off)"
    assert PositionPretext().reason(keep("4ch")) == "single LA view without an image centre to anchor the fallback"
    assert boxes.reason(dict(s, view="4ch")) == "not an SA slice"
    assert loc.reason(dict(s, stack_position=float("nan"))) == "no stack position"
    parallel = dict(s, la_planes=s["la_planes"].copy())  # LA planes within 10 degrees of the slice
    for k in range(3):
        parallel["la_planes"][k] = scene.sa.to_vector() + np.r_[scene.normal * (5 + k), np.zeros(8)]
    assert boxes.reason(parallel) == lines.reason(parallel) == "traces parallel"
    assert boxes.reason(dict(s, plane=np.full(11, np.nan))) == "malformed plane"
    with pytest.raises(ValueError, match=r"single LA view.*filter=pretext.accepts"):
        boxes.make_target(keep("4ch"), np.random.default_rng(0))


def test_lines_with_missing_views_mask_their_channels(scene):
    s = scene.sample()
    s["la_planes"][1] = np.nan  # no 3ch
    lines = PositionPretext({"target": "lines"})
    out = lines.make_target(s, np.random.default_rng(0))
    assert out["target_views"].tolist() == [1.0, 0.0, 1.0] and out["target_views"].dtype == np.float32
    assert not out["target"][1].any() and out["target"][0].max() > 0.9 and out["target"][2].max() > 0.9
    full = lines.make_target(scene.sample(), np.random.default_rng(0))
    np.testing.assert_array_equal(out["target"][[0, 2]], full["target"][[0, 2]])
    assert set(lines.target_spec(scene.shape)) == {"input", "target", "target_views"}
    assert lines.batch_keys == ("target_views",)
    # the loss ignores the absent channel: any output there costs nothing
    batch = {k: torch.as_tensor(np.stack([out[k]])) for k in ("target", "target_views")}
    pred = torch.as_tensor(np.stack([out["target"]])).clone()
    assert lines.loss(pred, batch)["loss"].item() == 0.0
    pred[0, 1] = 5.0
    assert lines.loss(pred, batch)["loss"].item() == 0.0
    pred[0, 0] += 0.5
    assert lines.loss(pred, batch)["loss"].item() == pytest.approx(0.25 / 2, rel=1e-5)  # mean over 2 channels


def test_slice_location_target_and_head():
    pre = PositionPretext({"target": "slice_location"})
    s = dict(image=np.zeros((1, 16, 16), np.float32), stack_position=0.625, view="sa")
    out = pre.make_target(s, np.random.default_rng(0))
    assert out["target"].tolist() == [0.625] and out["target"].dtype == np.float32
    assert not pre.uses_decoder
    from cardiossl.backbones import build_backbone

    net = build_backbone("unet_tiny")
    y = pre.forward(net, pre.build_head(net), torch.zeros(2, 1, 16, 16))
    assert y.shape == (2, 1)
    batch = {"target": torch.tensor([[0.5], [1.0]])}
    pred = torch.tensor([[0.75], [0.5]])
    assert pre.metrics(pred, batch)["mae"] == pytest.approx(0.375)
    assert pre.loss(pred, batch)["loss"].item() == pytest.approx((0.25**2 + 0.5**2) / 2)


def test_boxes_loss_and_metrics_against_reference():
    pre = PositionPretext()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 10, 6, 5, generator=g)
    target = torch.randint(0, 10, (2, 6, 5), generator=g).to(torch.uint8)
    loss = pre.loss(logits, {"target": target})["loss"]
    # Slow reference: mean over pixels of -log softmax at the true class.
    tot, n = 0.0, 0
    for b in range(2):
        for r in range(6):
            for c in range(5):
                z = logits[b, :, r, c].double()
                tot += float(torch.logsumexp(z, 0) - z[int(target[b, r, c])])
                n += 1
    assert loss.item() == pytest.approx(tot / n, rel=1e-5)
    m = pre.metrics(logits, {"target": target})
    pred = logits.argmax(1)
    ious = []
    for k in range(1, 10):
        inter = int(((pred == k) & (target == k)).sum())
        union = int(((pred == k) | (target == k)).sum())
        if union:
            ious.append(inter / union)
    assert m["mean_iou"] == pytest.approx(np.mean(ious))
    assert m["pixel_accuracy"] == pytest.approx(float((pred == target).float().mean()))


@pytest.mark.parametrize(
    "cfg, field",
    [({"box_mm": 0}, "box_mm"), ({"distance_mm": -3}, "distance_mm"), ({"target": "box"}, "target"),
     ({"sigma_mm": 0}, "sigma_mm"), ({"views": ["2ch", "2ch"]}, "views"), ({"boxmm": 3}, "boxmm")],
)
def test_config_errors_name_the_field(cfg, field):
    with pytest.raises(PretextConfigError, match=f"position.*{field}"):
        PositionPretext(cfg)


# --- synthetic hearts ----------------------------------------------------------------------------
def synthetic_samples(subject_id, seed=3):
    from cardiossl.datasets.synthetic import synth_heart, synth_subject

    rec = synth_subject(subject_id, seed, n_frames=2, n_sub=1)
    la = np.full((3, 11), np.nan)
    for s in rec.slices:
        if s.view in ("2ch", "3ch", "4ch") and s.frame == 0:
            la[("2ch", "3ch", "4ch").index(s.view)] = s.plane.to_vector()
    samples = [
        dict(image=s.image[None].astype(np.float32), label=s.label, plane=s.plane.to_vector(), la_planes=la,
             view="sa", stack_position=s.stack_position, slice_index=s.slice_index, subject_id=subject_id)
        for s in rec.slices
        if s.view == "sa" and s.frame == 0
    ]
    heart = synth_heart(seed, int(subject_id[-5:]))
    return samples, heart


def test_synthetic_box_centre_in_lv_cavity_and_labels_anatomical():
    from scipy.ndimage import binary_dilation

    pytest.importorskip("cardiossl.datasets.synthetic")
    pre = PositionPretext()
    hits = total = 0
    for n in range(6):
        samples, heart = synthetic_samples(f"synth{n:05d}")
        for s in samples:
            assert pre.accepts(sample_meta(s)), f"{s['subject_id']} slice {s['slice_index']} refused"
            geo = pre.geometry(s)
            # The rule puts box 6 on the lateral wall (away from the RV, towards -s) and box 8 anterior.
            u_world = geo.u[0] * Plane.from_vector(s["plane"]).col_dir + geo.u[1] * Plane.from_vector(s["plane"]).row_dir
            v_world = geo.v[0] * Plane.from_vector(s["plane"]).col_dir + geo.v[1] * Plane.from_vector(s["plane"]).row_dir
            assert u_world @ heart.s < -0.5, "u must point away from the RV (septum -> lateral)"
            assert v_world @ heart.a > 0.5, "v must point anterior"
            if not (0.2 <= s["stack_position"] <= 0.7) or not (s["label"] == 1).any():
                continue
            total += 1
            r, c = np.round(geo.center).astype(int)
            near = binary_dilation(s["label"] == 1, iterations=2)
            if 0 <= r < near.shape[0] and 0 <= c < near.shape[1] and near[r, c]:
                hits += 1
    assert total >= 15
    assert hits / total >= 0.9, f"box centre in/next to the LV cavity in {hits}/{total} mid-ventricular slices"


def test_synthetic_septal_boxes_face_the_rv():
    pytest.importorskip("cardiossl.datasets.synthetic")
    pre = PositionPretext()
    checked = 0
    for n in range(3):
        samples, _ = synthetic_samples(f"synth{n:05d}", seed=5)
        for s in samples:
            if not (0.2 <= s["stack_position"] <= 0.7) or not (s["label"] == 3).any():
                continue
            t = pre.make_target(s, np.random.default_rng(0))["target"]
            rv = s["label"] == 3
            # More RV cavity under the septal column (1, 4, 7) than the lateral one (3, 6, 9).
            septal = np.isin(t, [1, 4, 7]) & rv
            lateral = np.isin(t, [3, 6, 9]) & rv
            assert septal.sum() > lateral.sum()
            checked += 1
    assert checked >= 5


# --- a real exam: bivme-patient1 DICOM headers ---------------------------------------------------
@pytest.mark.real
def test_real_bivme_traces_cross_inside_every_sa_slice():
    folder = REAL / "bivme-patient1"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    pydicom = pytest.importorskip("pydicom")

    def header(series):
        files = sorted((folder / series).glob("*.dcm"))
        assert files, f"no DICOM files in {series}"
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        plane = Plane.from_dicom(ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing)
        return plane, (int(ds.Rows), int(ds.Columns))

    la = np.full((3, 11), np.nan)
    la[0] = header("Se8")[0].to_vector()  # 2ch
    la[2] = header("Se6")[0].to_vector()  # 4ch
    boxes = PositionPretext()
    lines = PositionPretext({"target": "lines", "views": ["2ch", "4ch"]})
    centres = []
    for series in ("Se1", "Se2", "Se3", "Se4", "Se5", "Se11"):
        plane, shape = header(series)
        s = dict(image=np.zeros((1,) + shape, np.float32), plane=plane.to_vector(), la_planes=la, view="sa")
        assert boxes.accepts(s) and lines.accepts(s), series
        c = boxes.geometry(s).center
        assert 0 <= c[0] < shape[0] and 0 <= c[1] < shape[1], f"{series}: 2ch/4ch crossing {c} outside {shape}"
        t = boxes.make_target(s, np.random.default_rng(0))["target"]
        assert (t == 5).any(), f"{series}: centre box not in the image"
        h = lines.make_target(s, np.random.default_rng(0))["target"]
        assert h.max() > 0.9 and h[:, int(round(c[0])), int(round(c[1]))].min() > 0.5
        centres.append(plane.pixel_to_world(*c))
    # The crossings follow one line through the stack (the LV long axis): small residual off a line fit.
    pts = np.array(centres)
    centred = pts - pts.mean(0)
    _, sv, _ = np.linalg.svd(centred)
    assert sv[1] / sv[0] < 0.15


def _with_views(sample, *views):
    la = np.full((3, 11), np.nan)
    for k, v in enumerate(("2ch", "3ch", "4ch")):
        if v in views:
            la[k] = sample["la_planes"][k]
    return dict(sample, la_planes=la)


def _crossing(sample, a, b):
    """World point where the slice and LA views a and b meet, solved from the planes by hand."""
    idx = {"2ch": 0, "3ch": 1, "4ch": 2}
    planes = [Plane.from_vector(sample["plane"])] + [Plane.from_vector(sample["la_planes"][idx[v]]) for v in (a, b)]
    m = np.stack([p.normal for p in planes])
    return np.linalg.solve(m, [p.normal @ p.origin for p in planes])


def test_any_two_views_crossing_at_a_usable_angle_make_the_box_frame():
    from cardiossl.pretexts.testing import example_subject

    sa = [s for s in example_subject() if s["view"] == "sa"]
    for s in sa:
        for views, frame in ((("3ch", "4ch"), "3ch x 4ch"), (("2ch", "3ch"), "2ch x 3ch")):
            sample = _with_views(s, *views)
            pre = PositionPretext()
            geo = pre.geometry(sample)
            assert geo.frame == frame and pre.reason(sample) is None
            world = Plane.from_vector(s["plane"]).pixel_to_world(*geo.center)
            np.testing.assert_allclose(world, _crossing(s, *views), atol=1e-6)
            # u and v stay anatomical and perpendicular when one of them is not a trace
            sa_plane = Plane.from_vector(s["plane"])
            u_w = geo.u[0] * sa_plane.col_dir + geo.u[1] * sa_plane.row_dir
            v_w = geo.v[0] * sa_plane.col_dir + geo.v[1] * sa_plane.row_dir
            assert u_w @ LATERAL > 0 and v_w @ ANTERIOR > 0 and abs(u_w @ v_w) < 1e-9
    # two traces closer than min_cross_deg fix no point: the single-view fallback takes over
    narrow = PositionPretext({"min_cross_deg": 89.0})
    assert narrow.geometry(_with_views(sa[2], "3ch", "4ch")).frame == "virtual plane (4ch)"


def test_single_view_fallback_lands_on_the_trace_below_the_image_centre():
    from cardiossl.platform.training.augment import perturbed_plane
    from cardiossl.pretexts.testing import example_subject

    pre = PositionPretext()
    for s in (s for s in example_subject(la_views=("4ch",)) if s["view"] == "sa"):
        geo = pre.geometry(s)
        assert geo.frame == "virtual plane (4ch)" and pre.reason(s) is None
        plane = Plane.from_vector(s["plane"])
        world = plane.pixel_to_world(*geo.center)
        four = Plane.from_vector(s["la_planes"][2])
        assert abs((world - four.origin) @ four.normal) < 1e-6  # on the 4ch plane (and in the slice)
        trace_dir = np.cross(plane.normal, four.normal)
        assert abs((s["image_centre"] - world) @ trace_dir) < 1e-6  # the foot of the perpendicular
        out = pre.make_target(dict(s), np.random.default_rng(0))
        assert set(np.unique(out["target"])) == set(range(10))
        ann = pre.annotations(out)
        assert np.isfinite(ann["virtual_points"]).all()
        # an augmentation moves and turns the sample's plane, not the anatomy: same world centre
        moved = perturbed_plane(plane, (64, 64), (48, 48), angle_rad=0.4, scale=1.1, shift_mm=(6.0, -9.0))
        geo2 = pre.geometry(dict(s, plane=moved.to_vector()))
        np.testing.assert_allclose(moved.pixel_to_world(*geo2.center), world, atol=1e-6)
    two = [s for s in example_subject(la_views=("2ch",)) if s["view"] == "sa"][0]
    assert pre.geometry(two).frame == "virtual plane (2ch)"


def test_a_box_centre_outside_the_stored_image_is_refused_by_name():
    from cardiossl.pretexts.testing import example_subject

    s = next(s for s in example_subject() if s["view"] == "sa")
    sa = Plane.from_vector(s["plane"])
    two = Plane.from_vector(s["la_planes"][0])
    away = np.cross(sa.normal, np.cross(sa.normal, two.normal))  # in the slice, across the 2ch trace
    away /= np.linalg.norm(away)
    plane = s["plane"].copy()
    plane[:3] += 150.0 * away  # the image window moves 150 mm away from the crossing
    far = dict(s, plane=plane, image_centre=s["image_centre"] + 150.0 * away)
    assert PositionPretext().reason(far) == "crossing outside the image"
    assert PositionPretext({"target": "lines", "views": ["2ch"]}).reason(far) == "traces outside the image"
    assert PositionPretext().reason(s) is None and PositionPretext({"target": "lines"}).reason(s) is None


def test_plane_correction_moves_the_traces_and_the_threshold_skips_subjects():
    from cardiossl.pretexts.testing import example_subject

    s = next(s for s in example_subject() if s["view"] == "sa")
    plane = Plane.from_vector(s["plane"])
    shift = 4.0 * plane.row_dir - 3.0 * plane.col_dir  # in-plane, world mm
    base = PositionPretext()
    corrected = PositionPretext({"plane_correction": "qc"})
    meta = dict(s, qc_correction=shift, qc_subject_shift_mm=5.0)
    c0, c1 = base.geometry(meta).center, corrected.geometry(meta).center
    # moving the plane by +shift moves every world point by -shift in its pixel coordinates
    np.testing.assert_allclose((c0 - c1) * np.array(plane.spacing), [-3.0, 4.0], atol=1e-9)
    assert corrected.reason(dict(s)) == "no QC estimate (run cardiossl cohort qc)"
    assert corrected.reason(dict(s, qc_correction=np.full(3, np.nan), qc_subject_shift_mm=np.nan)).startswith("no QC")
    strict = PositionPretext({"max_qc_shift_mm": 4.5})
    assert strict.reason(meta) == "QC shift above max_qc_shift_mm"
    assert strict.reason(dict(meta, qc_subject_shift_mm=4.0)) is None
