"""predict on every layout ingest reads: ED/ES from info.json, Info.cfg or separate files, folders of
cases, post-processing, plausibility flags, provenance, QC pictures and the MLflow pyfunc model."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from cardiossl.datasets.readers.nifti_export import write_export_subject
from cardiossl.datasets.resample import resample_slice
from cardiossl.datasets.synthetic import synth_subject
from cardiossl.platform.fewshot import plausibility
from cardiossl.platform.fewshot.predict import (
    PredictError,
    find_cases,
    largest_components,
    measures,
    predict,
    predict_all,
    read_sa_input,
    segment_input,
)

from conftest import VENV_BIN, free_port, stop_group

IMAGE_SIZE, SPACING = 96, 2.0
SPEC = {"image_size": IMAGE_SIZE, "spacing_mm": SPACING}


@pytest.fixture(scope="module")
def subject():
    return synth_subject("synth00007", 0, n_frames=3, n_sub=1)


@pytest.fixture(scope="module")
def layouts(subject, tmp_path_factory):
    """The same heart written as a cardiossl NIfTI export, and as UK Biobank (ukbb_cardiac), ACDC,
    M&Ms-2 and plain NIfTI cases."""
    root = tmp_path_factory.mktemp("layouts")
    export = write_export_subject(subject, root / "export")
    sa = nib.load(str(export / "sa.nii.gz"))
    data, es = np.asarray(sa.dataobj), subject.meta["es_frame"]

    def frame(t, path):
        nib.save(nib.Nifti1Image(data[..., t], sa.affine, sa.header), str(path))

    ukbb = root / "ukbb" / "1000001"  # the cine, and ED/ES cut out of it, as ukbb_cardiac leaves them
    ukbb.mkdir(parents=True)
    nib.save(nib.Nifti1Image(data, sa.affine, sa.header), str(ukbb / "sa.nii.gz"))
    frame(0, ukbb / "sa_ED.nii.gz")
    frame(es, ukbb / "sa_ES.nii.gz")

    acdc = root / "acdc" / "patient101"
    acdc.mkdir(parents=True)
    (acdc / "Info.cfg").write_text(f"ED: 1\nES: {es + 1}\nGroup: NOR\n")
    frame(0, acdc / "patient101_frame01.nii.gz")
    frame(es, acdc / f"patient101_frame{es + 1:02d}.nii.gz")
    mnms = root / "mnms2" / "201"
    mnms.mkdir(parents=True)
    frame(0, mnms / "201_SA_ED.nii.gz")
    frame(es, mnms / "201_SA_ES.nii.gz")
    plain = root / "plain.nii.gz"
    nib.save(nib.Nifti1Image(data, sa.affine, sa.header), str(plain))
    return {"cardiossl-nifti": export, "ukbb": ukbb, "acdc": acdc, "mnms2": mnms, "nifti": plain, "root": root}


def oracle(record, frame_map=None):
    """A segmenter that returns the true labels on the grid it is asked about (``frame_map``: input
    frame -> record frame, for inputs made of separate ED/ES files)."""
    sa = [s for s in record.slices if s.view == "sa" and s.label is not None]
    by = {(s.slice_index, s.frame): s for s in sa}
    ks = sorted({s.slice_index for s in sa})

    def segment(images, grid_planes, t):
        t = frame_map[t] if frame_map else t
        if (ks[0], t) not in by:  # an unlabelled cine frame
            return np.zeros((len(ks), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        return np.stack([resample_slice(np.zeros_like(by[(k, t)].label, np.float32), by[(k, t)].plane,
                                        IMAGE_SIZE, SPACING, by[(k, t)].label)[1] for k in ks])

    return segment


class AllLV(nn.Module):
    """A broken 'segmenter': LV cavity everywhere (what a collapsed model does)."""

    def forward(self, x):
        out = torch.zeros(x.shape[0], 4, *x.shape[2:])
        out[:, 1] = 1.0
        return out


@pytest.mark.parametrize("kind", ["cardiossl-nifti", "ukbb", "acdc", "mnms2"])
def test_each_layout_gives_ed_es_and_true_measures(subject, layouts, kind):
    inp = read_sa_input(layouts[kind])
    es = subject.meta["es_frame"]
    assert inp.kind == kind and inp.ed_frame == 0
    separate = kind in ("acdc", "mnms2")
    assert inp.n_frames == (2 if separate else 3) and inp.es_frame == (1 if separate else es)
    labels = segment_input(inp, oracle(subject, {0: 0, 1: es} if separate else None), image_size=IMAGE_SIZE,
                           spacing_mm=SPACING)
    m = measures(inp, labels, inp.ed_frame, inp.es_frame)
    true = subject.meta["volumes_ml"]
    assert m["lv_edv_ml"] == pytest.approx(true["ed"]["lv_cavity"], rel=0.15)
    assert m["lv_esv_ml"] == pytest.approx(true["es"]["lv_cavity"], rel=0.2)
    assert m["lv_mass_g"] == pytest.approx(1.05 * true["ed"]["lv_myocardium"], rel=0.15)
    assert plausibility.check(m)["plausible"]


def test_predict_writes_labels_measures_flags_and_qc_on_every_layout(layouts, tmp_path):
    for kind in ("cardiossl-nifti", "ukbb", "acdc", "mnms2", "nifti"):
        out = tmp_path / kind
        res = predict("all-lv", layouts[kind], out, model=AllLV(), spec=SPEC)
        saved = json.loads((out / "measures.json").read_text())
        for key in ("lv_edv_ml", "lv_esv_ml", "lv_ef_pct", "rv_edv_ml", "lv_mass_g", "flags", "ranges", "segmenter"):
            assert key in saved, (kind, key)
        assert res["plausible"] is False and saved["plausible"] is False
        flagged = {f["measure"]: f["flag"] for f in saved["flags"]}
        assert flagged["lv_ef_pct"] == "implausible"  # ESV == EDV: an ejection fraction of 0
        assert "Petersen" in saved["range_sources"]["reference"]
        assert (out / "qc.png").stat().st_size > 5000
        if kind in ("acdc", "mnms2"):  # one label file per phase file, each with its source's affine
            assert set(saved["labels"]) == {"ed", "es"}
            src = nib.load(str(next(layouts[kind].glob("*ED.nii.gz" if kind == "mnms2" else "*frame01.nii.gz"))))
            lab = nib.load(saved["labels"]["ed"])
            assert lab.shape == src.shape and np.allclose(lab.affine, src.affine)
        else:
            src = layouts[kind] if kind == "nifti" else layouts[kind] / "sa.nii.gz"
            assert nib.load(saved["labels"]).shape == nib.load(str(src)).shape


def test_a_folder_of_cases_is_segmented_case_by_case(layouts, tmp_path):
    root = layouts["root"] / "acdc"
    second = root / "patient102"
    second.mkdir(exist_ok=True)
    for f in layouts["acdc"].iterdir():
        (second / f.name.replace("patient101", "patient102")).write_bytes(f.read_bytes())
    assert [c[0] for c in find_cases(root)] == ["patient101", "patient102"]
    import cardiossl.platform.fewshot.predict as P

    original = P.load_with_provenance
    P.load_with_provenance = lambda ref, uri=None: (AllLV(), SPEC, {"ref": ref})
    try:
        results = predict_all("all-lv", root, tmp_path / "out")
    finally:
        P.load_with_provenance = original
    assert [r["case"] for r in results] == ["patient101", "patient102"]
    assert all((tmp_path / "out" / c / "measures.json").is_file() for c in ("patient101", "patient102"))


def test_a_folder_that_is_no_case_says_what_is_expected(tmp_path):
    (tmp_path / "patient009").mkdir()
    (tmp_path / "patient009" / "notes.txt").write_text("x")
    with pytest.raises(PredictError, match="found no case; expected a NIfTI file.*ACDC patient folder"):
        find_cases(tmp_path / "patient009")


def test_largest_component_removes_islands_per_structure():
    labels = np.zeros((1, 5, 20, 20), np.uint8)
    labels[0, 1:4, 5:12, 5:12] = 1  # the ventricle
    labels[0, 0, 16:18, 16:18] = 1  # an island above the base
    labels[0, 2, 0:2, 0:2] = 3
    out, removed = largest_components(labels)
    assert removed[1] == 4 and removed[3] == 0
    assert out[0, 0].sum() == 0 and (out[0, 1:4] == labels[0, 1:4]).all()


def test_flags_separate_disease_from_error():
    check = plausibility.check({"lv_edv_ml": 1913.0, "lv_mass_g": 120.0, "lv_ef_pct": 25.0, "rv_ef_pct": float("nan")})
    flags = {f["measure"]: f["flag"] for f in check["flags"]}
    assert flags == {"lv_edv_ml": "implausible", "lv_ef_pct": "outside_reference", "rv_ef_pct": "implausible"}
    assert "lv_edv_ml 1913.0 ml is implausible (20-500 ml)" == plausibility.describe(check["flags"][0])


# -- the registered segmenter: provenance, default tracking store, pyfunc --------------------
@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A small segmenter registered as seg-test@champion in CARDIOSSL_HOME's MLflow store."""
    from cardiossl.backbones import build_backbone
    from cardiossl.platform import tracking

    home = tmp_path_factory.mktemp("home")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    bb = {"name": "unet", "params": {"depth": 3, "width": 4}}
    torch.manual_seed(0)
    model = tracking.build_segmenter(build_backbone(bb["name"], **bb["params"]))
    run_id = tracking.create_run(uri, "predict-test", "seg")
    spec = {"backbone": bb, "n_classes": 4, **SPEC,
            "training": {"cohort_kind": "synthetic", "val_dice": 0.42, "init": "scratch"}}
    folder = tracking.save_segmenter(model, spec, home / "seg")
    tracking.MlflowTracker(run_id, uri).log_artifacts(str(folder), "segmenter")
    version = tracking.register_segmenter(uri, run_id, "segmenter", "seg-test", "champion")
    tracking.finish_run(uri, run_id)
    return {"home": home, "uri": uri, "version": version, "model": model}


def test_predict_cli_uses_the_home_store_and_records_provenance(registered, layouts, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cardiossl.platform.cli import app

    monkeypatch.setenv("CARDIOSSL_HOME", str(registered["home"]))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["predict", "--model", "models:/seg-test@champion", str(layouts["acdc"]),
                                   "--out", str(tmp_path / "pred")])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "mlflow.db").exists()  # no stray store in the current directory
    saved = json.loads((tmp_path / "pred" / "measures.json").read_text())
    seg = saved["segmenter"]
    assert seg["resolved"] == "models:/seg-test/1" and seg["version"] == "1" and seg["name"] == "seg-test"
    assert seg["training"]["cohort_kind"] == "synthetic" and seg["training"]["val_dice"] == 0.42
    assert (tmp_path / "pred" / "qc.png").is_file()


def test_the_registered_segmenter_is_an_mlflow_pyfunc_model(registered):
    import mlflow.pyfunc

    from cardiossl.platform.tracking import mlflow_client

    client = mlflow_client(registered["uri"])
    assert "segmenters" in client.get_registered_model("seg-test").description
    mlflow.set_tracking_uri(registered["uri"])
    try:
        pm = mlflow.pyfunc.load_model("models:/seg-test@champion")
    finally:
        mlflow.set_tracking_uri(None)
    inputs = pm.metadata.get_input_schema().inputs[0]
    assert inputs.shape == (-1, IMAGE_SIZE, IMAGE_SIZE) and str(inputs.type) == "float32"
    x = np.random.default_rng(0).normal(300, 50, (3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    labels = pm.predict(x)
    assert labels.shape == (3, IMAGE_SIZE, IMAGE_SIZE) and set(np.unique(labels)) <= {0, 1, 2, 3}
    from cardiossl.datasets.store import intensity_stats

    st = intensity_stats(list(x))
    z = (np.clip(x, st["p0_5"], st["p99_5"]) - st["mean"]) / st["std"]
    with torch.no_grad():  # the same weights as the module that was saved
        want = registered["model"].eval()(torch.from_numpy(z[:, None])).argmax(1).numpy()
    assert np.array_equal(labels, want)


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_labels(registered, tmp_path):
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered["uri"], "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([str(VENV_BIN / "mlflow"), "models", "serve", "-m", "models:/seg-test@champion",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                            env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                    break
            except OSError:
                time.sleep(2)
        body = json.dumps({"inputs": np.full((2, IMAGE_SIZE, IMAGE_SIZE), 100.0).tolist()}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            out = np.asarray(json.loads(r.read())["predictions"])
        assert out.shape == (2, IMAGE_SIZE, IMAGE_SIZE) and set(np.unique(out)) <= {0, 1, 2, 3}
    finally:
        stop_group(proc)
        log.close()


def test_predict_segments_with_the_tta_the_segmenter_was_evaluated_with(layouts, tmp_path):
    class Counting(AllLV):
        calls = 0

        def forward(self, x):
            Counting.calls += 1
            return super().forward(x)

    plain = predict("m", layouts["nifti"], tmp_path / "plain", model=Counting(), spec=SPEC, qc=False)
    once = Counting.calls
    tta = predict("m", layouts["nifti"], tmp_path / "tta", model=Counting(), qc=False,
                  spec={**SPEC, "inference": {"tta": "rot90", "largest_component": True}})
    assert plain["postprocess"]["tta"] == "none" and tta["postprocess"]["tta"] == "rot90"
    assert once > 0 and Counting.calls - once == 4 * once  # four turns per batch
