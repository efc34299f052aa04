"""Is a measure believable? Two ranges per clinical measure, and a flag when a value leaves one.

* ``reference``: the range of healthy adults, from the UK Biobank reference ranges of Petersen et
  al., "Reference ranges for cardiac structure and function using cardiovascular magnetic resonance
  (CMR) in Caucasians from the UK Biobank population cohort", JCMR 19:18 (2017), Table 2 (1.5 T
  bSSFP, papillary muscles in the LV volume, ages 45-74): mean +- 1.96 SD, men and women pooled
  (the women's lower limit, the men's upper limit), since a scan does not carry its sex here. The
  SCMR's 2020 review of normal values (Kawel-Boehm et al., JCMR 22:87, 2020) collects ranges of the
  same order from other cohorts. A value outside is ``outside_reference``: possible disease (ACDC's
  dilated hearts are far outside), or a segmentation error; look at the QC figure.
* ``plausible``: physiological limits of adult hearts, several times wider. A value outside
  (an LV of 1.9 litres, a 2.7 kg myocardium, an ejection fraction of 3 %) is ``implausible``:
  almost certainly a segmentation error, whatever the patient has. The expert labels of the 20
  ACDC cases in ``../shared/data/real/acdc-dev`` (dilated, hypertrophic, infarcted, abnormal RV
  and normal hearts) all measure inside these limits (``tests/platform/fewshot/test_plausibility.py``).
"""

from __future__ import annotations

import math

SOURCES = {
    "reference": "Petersen SE et al., J Cardiovasc Magn Reson 2017;19:18 (UK Biobank, healthy adults 45-74, "
                 "mean +- 1.96 SD, sexes pooled); cf. Kawel-Boehm N et al., J Cardiovasc Magn Reson 2020;22:87",
    "plausible": "physiological limits of adult hearts; the ACDC expert labels (Bernard et al., IEEE TMI 2018) "
                 "of dilated, hypertrophic, infarcted, abnormal-RV and normal hearts fall inside",
}

# measure: (reference low, reference high, plausible low, plausible high, unit)
RANGES: dict[str, tuple[float, float, float, float, str]] = {
    "lv_edv_ml": (83.0, 229.0, 20.0, 500.0, "ml"),
    "lv_esv_ml": (27.0, 100.0, 5.0, 450.0, "ml"),
    "lv_sv_ml": (47.0, 136.0, 5.0, 250.0, "ml"),
    "lv_ef_pct": (48.0, 71.0, 5.0, 90.0, "%"),
    "lv_mass_g": (48.0, 142.0, 30.0, 400.0, "g"),
    "rv_edv_ml": (83.0, 253.0, 20.0, 500.0, "ml"),
    "rv_esv_ml": (24.0, 118.0, 5.0, 450.0, "ml"),
    "rv_sv_ml": (47.0, 150.0, 5.0, 250.0, "ml"),
    "rv_ef_pct": (44.0, 73.0, 5.0, 90.0, "%"),
}


def check(measures: dict) -> dict:
    """``{"ranges": {measure: {...}}, "flags": [{measure, value, flag, range}], "plausible": bool}``.

    Every measure in ``RANGES`` that ``measures`` holds is checked; a missing or non-finite value
    (no ventricle found) is ``implausible`` too."""
    ranges, flags = {}, []
    for key, (ref_lo, ref_hi, pl_lo, pl_hi, unit) in RANGES.items():
        if key not in measures:
            continue
        value = measures[key]
        ranges[key] = {"reference": [ref_lo, ref_hi], "plausible": [pl_lo, pl_hi], "unit": unit}
        if value is None or not math.isfinite(float(value)) or not pl_lo <= float(value) <= pl_hi:
            flags.append({"measure": key, "value": value, "flag": "implausible", "range": [pl_lo, pl_hi],
                          "unit": unit})
        elif not ref_lo <= float(value) <= ref_hi:
            flags.append({"measure": key, "value": value, "flag": "outside_reference", "range": [ref_lo, ref_hi],
                          "unit": unit})
    return {"ranges": ranges, "flags": flags, "sources": SOURCES,
            "plausible": not any(f["flag"] == "implausible" for f in flags)}


def describe(flag: dict) -> str:
    """``lv_edv_ml 1913.2 ml is implausible (expected 20-500 ml)``."""
    v = flag["value"]
    value = f"{float(v):.1f}" if v is not None and math.isfinite(float(v)) else "missing"
    lo, hi = flag["range"]
    word = "implausible" if flag["flag"] == "implausible" else "outside the healthy reference range"
    return f"{flag['measure']} {value} {flag['unit']} is {word} ({lo:g}-{hi:g} {flag['unit']})"
