"""`cardiossl synth`: the same cohort whatever the format or worker count; reruns resume."""

from __future__ import annotations

import numpy as np
import pytest
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
    assert store.fingerprint["subjects"] == 2  # stored, as ingest stores it
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


def _one_subject_as_nifti(tmp_path, version: int):
    """Subject 0 of seed 2 written by ``synth --version`` as NIfTI and read back: (record, its meta)."""
    out = tmp_path / f"v{version}"
    result = _run("--subjects", "1", "--seed", "2", "--frames", "2", "--version", str(version), "--format", "nifti",
                  "--out", str(out))
    assert result.exit_code == 0, result.output
    assert f"version {version}" in result.output
    back = NiftiExportReader().read(NiftiExportReader().discover(out)[0])
    return back, {k: v for k, v in back.meta.items() if k not in ("sa_order", "sa_normal_base_to_apex")}


def test_version_flag_selects_the_population_and_bad_values_are_refused(tmp_path):
    _, read_back = _one_subject_as_nifti(tmp_path, 1)
    assert read_back == synth_subject("synth00000", 2, n_frames=2, version=1).meta
    bad = _run("--subjects", "1", "--version", "9", "--out", str(tmp_path / "x"))
    assert bad.exit_code == 2 and "unknown synthetic cohort version 9" in bad.output
    groups = _run("--subjects", "1", "--version", "1", "--groups", "normal=1", "--out", str(tmp_path / "y"))
    assert groups.exit_code == 2 and "version 1 has one population" in groups.output
    malformed = _run("--subjects", "1", "--groups", "normal", "--out", str(tmp_path / "z"))
    assert malformed.exit_code == 2 and "NAME=WEIGHT" in malformed.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_random_contrast_flag_reaches_the_subjects_and_bad_values_are_refused(tmp_path):
    out = tmp_path / "rc"
    result = _run("--subjects", "2", "--seed", "3", "--frames", "2", "--random-contrast", "1", "--format", "nifti",
                  "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "random contrast 1" in result.output
    reader = NiftiExportReader()
    for src in reader.discover(out):
        rec = reader.read(src)
        want = synth_subject(src.subject_id, 3, n_frames=2, random_contrast=1.0)
        assert rec.meta["appearance"]["contrast_mode"] == "randomised"
        assert rec.meta["appearance"] == want.meta["appearance"]
    bad = _run("--subjects", "1", "--random-contrast", "1.5", "--out", str(tmp_path / "x"))
    assert bad.exit_code == 2 and "[0, 1]" in bad.output
    v1 = _run("--subjects", "1", "--version", "1", "--random-contrast", "0.5", "--out", str(tmp_path / "y"))
    assert v1.exit_code == 2 and "random contrast needs version 2" in v1.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.ray
def test_ray_tasks_write_whole_parts_and_resume(tmp_path, ray_cluster):
    import json
    import os

    from cardiossl.datasets.store import CohortStore

    out = tmp_path / "store"
    args = ["--seed", "3", "--frames", "2", "--grid-size", "64", "--spacing-mm", "3", "--out", str(out)]
    first = _run("--subjects", "3", *args, "--ray-address", ray_cluster.gcs_address)
    assert first.exit_code == 0, first.output
    assert "Ray tasks" in first.output
    store = CohortStore(out)
    assert store.subject_ids() and sorted(store.subject_ids()) == ["synth00000", "synth00001", "synth00002"]
    writers = {json.loads((out / "parts" / p / "zarr.json").read_text())["attributes"]["cardiossl_part"]
               ["written_by"]["pid"] for p in store.part_ids()}
    assert os.getpid() not in writers  # the parts were written by Ray workers
    expected = synth_subject("synth00002", 3, n_frames=2)
    assert store.subject_meta("synth00002") == expected.meta
    again = _run("--subjects", "4", *args, "--ray-address", ray_cluster.gcs_address)
    assert again.exit_code == 0, again.output
    assert "wrote 1 subjects (3 already present)" in again.output


@pytest.mark.parametrize("version,new_key", [(3, "acceleration"), (4, "flow")])
def test_later_version_subjects_are_written_as_synth_subject_makes_them(tmp_path, version, new_key):
    back, read_back = _one_subject_as_nifti(tmp_path, version)
    want = synth_subject("synth00000", 2, n_frames=2, version=version)
    assert read_back == want.meta and read_back["synth_version"] == version and new_key in read_back["appearance"]
    got = {(s.view, s.slice_index, s.frame): s for s in back.slices}
    for s in want.slices:
        np.testing.assert_array_equal(got[(s.view, s.slice_index, s.frame)].image, s.image)
