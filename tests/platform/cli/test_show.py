"""`cardiossl show` on a real cohort store: figure, npz, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from cardiossl.platform.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from cardiossl.datasets.store import CohortStore
    from cardiossl.datasets.synthetic import synth_subject

    path = tmp_path_factory.mktemp("show") / "store"
    st = CohortStore.create(path, grid_size=96, spacing_mm=2.0)
    st.write_subjects([synth_subject("synth00002", 1, n_frames=2, n_sub=1)])
    return path


def test_show_position_writes_png_and_npz(store, tmp_path):
    out, npz = tmp_path / "fig.png", tmp_path / "t.npz"
    res = runner.invoke(app, ["show", str(store), "--subject", "synth00002", "--pretext", "position",
                              "--params", "box_mm=18", "--out", str(out), "--npz", str(npz)])
    assert res.exit_code == 0, res.output
    assert "with a target" in res.output and out.stat().st_size > 20_000
    z = np.load(npz)
    assert "box_mm\":18.0" in str(z["config"])
    n = len(z["view"])
    assert n >= 8 and set(z["view"].tolist()) == {"sa"}
    assert (z["frame"] == 0).all()  # end-diastole by default
    # The 2ch and 4ch traces cross inside the image on every SA slice of the stored grid.
    c = z["cross_point"]
    assert np.isfinite(c).all() and (c >= 0).all() and (c <= 95).all()
    assert z["target"].shape == (n, 96, 96) and z["target"].max() == 9


def test_show_other_frame_and_pretext(store, tmp_path):
    res = runner.invoke(app, ["show", str(store), "--subject", "synth00002", "--pretext", "context",
                              "--frame", "1", "--out", str(tmp_path / "c.png"), "--npz", str(tmp_path / "c.npz")])
    assert res.exit_code == 0, res.output
    z = np.load(tmp_path / "c.npz")
    assert (z["frame"] == 1).all() and "2ch" in z["view"].tolist()  # context accepts LA views too


@pytest.mark.parametrize(
    "args, message",
    [(["--subject", "nobody", "--pretext", "position"], "synth00002"),
     (["--subject", "synth00002", "--pretext", "positon"], "did you mean 'position'"),
     (["--subject", "synth00002", "--pretext", "position", "--params", "box_mm=-1"], "box_mm"),
     (["--subject", "synth00002", "--pretext", "position", "--params", "box_mm"], "key=value")],
)
def test_show_errors_name_the_problem(store, tmp_path, args, message):
    res = runner.invoke(app, ["show", str(store), *args, "--out", str(tmp_path / "x.png")])
    assert res.exit_code != 0
    text = " ".join(res.output.replace("│", " ").split())  # the error box wraps long lines
    assert message in text
    assert not (tmp_path / "x.png").exists()


def test_mnms2_like_subject_with_only_a_4ch_view_gets_targets_on_every_sa_slice(tmp_path):
    """SA + 4ch only (all of M&Ms-2): boxes from the virtual-plane fallback, lines from the one trace."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "datasets" / "readers"))
    from nifti_cohorts import long_axis_plane, short_axis, write_mnms2_subject

    from cardiossl.datasets.ingest import ingest

    sa = short_axis(origin=(-20.0, 15.0, 60.0), row_spacing=1.25, col_spacing=1.6, step=10.0)
    la = long_axis_plane(sa, angle=-20.0, origin=tuple(sa.world(11, 13, 0)))
    write_mnms2_subject(tmp_path / "mnms2", 1, sa, la, shape=(40, 44, 6), la_shape=(48, 40))
    ingest(tmp_path / "mnms2", tmp_path / "store", layout="mnms2", workers=1, grid_size=64, spacing_mm=1.5,
           progress=False)
    for target in ("boxes", "lines"):
        npz = tmp_path / f"{target}.npz"
        res = runner.invoke(app, ["show", str(tmp_path / "store"), "--subject", "001", "--pretext", "position",
                                  "--params", f"target={target}", "--out", str(tmp_path / f"{target}.png"),
                                  "--npz", str(npz)])
        assert res.exit_code == 0, res.output
        assert "7 slices, 6 with a target" in res.output  # the 6 SA slices; the 4ch slice gets none
        z = np.load(npz)
        if target == "boxes":
            assert np.isfinite(z["virtual_points"]).all() and z["target"].max() == 9
        else:
            assert z["target"].shape[1] == 3 and not z["target"][:, :2].any() and z["target"][:, 2].max() > 0.9
