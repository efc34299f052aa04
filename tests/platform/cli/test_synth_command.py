"""`cardiossl synth`: the same cohort whatever the format or worker count; reruns resume."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from cardiossl.datasets.readers.nifti_export import NiftiExportReader
from cardiossl.datasets.synthetic import synth_subject
from cardiossl.platform.cli import app

runner = CliRunner()


def _run(*args):
    result = runner.invoke(app, ["synth", *args, "--quiet"])
    return result


def test_nifti_cohort_matches_synth_subject_with_any_worker_count(tmp_path):
    args = ["--subjects", "2", "--seed", "4", "--frames", "2", "--format", "nifti"]
    serial = _run(*args, "--out", str(tmp_path / "a"))
    assert serial.exit_code == 0, serial.output
    parallel = _run(*args, "--workers", "2", "--out", str(tmp_path / "b"))
    assert parallel.exit_code == 0, parallel.output
    reader = NiftiExportReader()
    expected = synth_subject("synth00001", 4, n_frames=2)
    for root in (tmp_path / "a", tmp_path / "b"):
        sources = reader.discover(root)
        assert [s.subject_id for s in sources] == ["synth00000", "synth00001"]
        back = reader.read(sources[1])
        assert {k: v for k, v in back.meta.items() if k not in ("sa_order", "sa_normal_base_to_apex")} == expected.meta
        got = {(s.view, s.slice_index, s.frame): s for s in back.slices}
        for s in expected.slices:
            np.testing.assert_array_equal(got[(s.view, s.slice_index, s.frame)].image, s.image)


def test_zarr_cohort_and_resume(tmp_path):
    from cardiossl.datasets.store import CohortStore

    out = tmp_path / "store"
    first = _run("--subjects", "2", "--seed", "1", "--frames", "2", "--out", str(out), "--grid-size", "96")
    assert first.exit_code == 0, first.output
    store = CohortStore(out)
    assert store.subject_ids() == ["synth00000", "synth00001"] and store.grid_size == 96
    truth = synth_subject("synth00001", 1, n_frames=2).meta["volumes_ml"]
    assert store.subject_meta("synth00001")["volumes_ml"] == truth
    again = _run("--subjects", "3", "--seed", "1", "--frames", "2", "--out", str(out), "--grid-size", "96")
    assert again.exit_code == 0, again.output
    assert "wrote 1 subjects (2 already present)" in again.output
    assert CohortStore(out).subject_ids() == ["synth00000", "synth00001", "synth00002"]
    # a different grid is refused, and the store is left as it was
    other = _run("--subjects", "1", "--out", str(out), "--grid-size", "64")
    assert other.exit_code == 2
    assert CohortStore(out).subject_ids() == ["synth00000", "synth00001", "synth00002"]


def test_bad_format(tmp_path):
    result = _run("--subjects", "1", "--out", str(tmp_path / "x"), "--format", "hdf5")
    assert result.exit_code == 2
    assert "--format must be zarr or nifti" in result.output
