"""The plausible ranges hold the hearts they must: the expert labels of real dilated, hypertrophic,
infarcted, abnormal-RV and normal hearts (ACDC) measure inside them."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cardiossl.platform.fewshot import plausibility
from cardiossl.platform.fewshot.predict import measures, read_sa_input

ACDC = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "real" / "acdc-dev"
ACDC_TO_OURS = np.array([0, 3, 2, 1], np.uint8)


@pytest.mark.real
def test_acdc_expert_labels_measure_plausible():
    if not ACDC.is_dir():
        pytest.skip("real cases ../shared/data/real/acdc-dev absent")
    groups = {}
    for case in sorted(ACDC.glob("patient*")):
        inp = read_sa_input(case)  # ED and ES from Info.cfg, as separate frame files
        assert inp.kind == "acdc" and [pf.phase for pf in inp.phase_files] == ["ed", "es"]
        gt = [ACDC_TO_OURS[np.asarray(nib.load(pf.path.replace(".nii.gz", "_gt.nii.gz")).dataobj).astype(int)]
              for pf in inp.phase_files]
        m = measures(inp, np.stack([np.transpose(g, (2, 1, 0)) for g in gt]), 0, 1)
        check = plausibility.check(m)
        assert check["plausible"], (case.name, [plausibility.describe(f) for f in check["flags"]])
        groups.setdefault(inp.meta["group"], []).append(m)
    # the reference range tells disease from health: dilated hearts are outside it, normal ones mostly in
    lo, hi = plausibility.RANGES["lv_edv_ml"][:2]
    assert all(m["lv_edv_ml"] > hi for m in groups["DCM"])
    assert all(m["lv_ef_pct"] < plausibility.RANGES["lv_ef_pct"][0] for m in groups["DCM"])
    assert sum(lo <= m["lv_edv_ml"] <= hi for m in groups["NOR"]) >= 3
