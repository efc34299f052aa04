"""The version flag: every version reachable, recorded in meta, unknown ones refused with the choices."""

from __future__ import annotations

import pytest

from cardiossl.datasets.synthetic import DEFAULT_VERSION, VERSIONS, check_version, synth_heart, synth_subject


def test_unknown_versions_are_refused_naming_the_choices():
    for bad in (0, 99, "two", None, True):
        with pytest.raises(ValueError, match="unknown synthetic cohort version"):
            check_version(bad)
        with pytest.raises(ValueError, match=r"choose one of \[1"):
            synth_subject("synth00000", 0, n_frames=2, version=bad)
    with pytest.raises(ValueError, match="unknown synthetic cohort version"):
        synth_heart(0, 0, version=7)


def test_every_version_records_itself_and_the_default_is_version_2():
    """Later versions are opt-in until one meets the difficulty target and the benches are re-measured on it."""
    assert VERSIONS == (1, 2, 3, 4) and DEFAULT_VERSION == 2
    for v in VERSIONS:
        rec = synth_subject("synth00001", 2, n_frames=2, n_sub=1, version=v)
        assert rec.meta["synth_version"] == v
    assert synth_subject("synth00001", 2, n_frames=2, n_sub=1).meta["synth_version"] == DEFAULT_VERSION


def test_version_1_takes_no_group_proportions():
    with pytest.raises(ValueError, match="version 1 has one population"):
        synth_subject("synth00001", 2, n_frames=2, version=1, population={"normal": 1.0})
