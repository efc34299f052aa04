"""The few-shot study on real ACDC cases (../shared/data/real/acdc-dev, official layout), CI-sized:
the real-layout path end to end, cross-cohort (position pretraining on a synthetic store, which
never sees an ACDC test subject; fine-tuning and test on ACDC, scored on the source NIfTI pixels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cardiossl.platform.config import load_job_dict

REPO = Path(__file__).resolve().parents[3]
ACDC = REPO.parent / "shared" / "data" / "real" / "acdc-dev"


@pytest.mark.real
@pytest.mark.ray
def test_cross_cohort_study_on_acdc_dev(ray_cluster, tiny_store, tmp_path):
    if not ACDC.is_dir():
        pytest.skip(f"{ACDC} not present")
    import ray
    from conftest import tiny_pretrain_overrides

    from cardiossl.datasets.ingest import ingest
    from cardiossl.platform.fewshot.study import run_study

    store = tmp_path / "acdc.zarr"
    report = ingest(ACDC, store, layout="acdc", grid_size=48, spacing_mm=5.0, workers=1, progress=False)
    assert len(report.ingested) == 20, report
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    job = load_job_dict({
        "kind": "benchmark", "name": "acdc-ci",
        "cohort": {"store": str(store), "split": {"test": 4, "val": 2, "seed": 0}},
        "pretrain_store": str(tiny_store),
        "mlflow": {"tracking_uri": uri, "experiment": "acdc-ci"},
        "checkpoint": {"storage_path": str(tmp_path / "ray_results")},
        "grid": {"inits": ["scratch", "position"], "modes": ["all"], "n_train": [2], "seeds": [0, 1]},
        "pretrain": {"position": {"job": str(REPO / "jobs" / "pretrain_position.yaml"),
                                  "set": tiny_pretrain_overrides(tiny_store, tmp_path)}},
        "finetune": {"backbone": {"name": "unet", "params": {"depth": 3, "width": 4}}, "steps": 3, "batch_size": 4,
                     "image_size": 16, "validation": {"every_steps": 1}, "augment": {"enabled": False}},
        "ray": {"address": ray_cluster.gcs_address, "cpus_per_trial": 1},
        "stats": {"n_boot": 200},
        "champion": {"enabled": False},
        "output_dir": str(tmp_path / "report"),
    })
    try:
        out = run_study(job, job_dir=REPO / "jobs")
    finally:
        ray.shutdown()
    assert not out["failures"] and len(out["trials"]) == 4
    assert all(s.startswith("patient") for s in out["split"]["test"] + out["split"]["val"])
    for t in out["trials"]:
        m = t["metrics"]
        assert m["test_on_source"] == 1.0  # every test subject scored on its source NIfTI pixels
        assert np.isfinite(m["test_dice_mean"]) and np.isfinite(m["test_lv_edv_ml_mae"])
        assert 0.0 < m["test_lost_frac_lv_myocardium"] < 1.0  # 16 px at 5 mm see 80 mm: the report counts what that cuts
        rows = t["per_subject"]
        assert {r["reference"] for r in rows} == {"source"} and all(np.isfinite(r["lv_ef_pct_ref"]) for r in rows)
    # pretraining read the synthetic store only: none of its subjects is an ACDC subject
    rec = out["pretrained"]["position"]
    from mlflow import MlflowClient

    client = MlflowClient(uri, registry_uri=uri)
    mv = client.get_model_version("cardiossl-position-encoder", rec.rsplit("/", 1)[1])
    run = client.get_run(mv.run_id)
    assert run.data.params["cohort.store"] == str(tiny_store)
    for name in ("results.md", "clinical.md", "regions.md", "validation_curves.png", "bland_altman_N2.png"):
        assert (tmp_path / "report" / name).is_file()
