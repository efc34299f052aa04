"""Version 3 of the synthetic cohort: version 2's subjects, imaged as unevenly as clinical scans are.

Version 2 is too easy for few-shot segmentation: a U-Net from scratch on 5 labelled subjects reaches
about 0.90 mean Dice on it, where real cohorts give 0.70-0.81 (Bai et al., MICCAI 2019: 0.811 on UK
Biobank; BENCHMARKS.md: about 0.70 on ACDC). Subject ``index`` of version 3 draws every stream of
version-2 subject ``index`` (group, heart shape, torso, site, plan, breath-holds, texture, noise), so
the two cohorts pair subject for subject; version 3 changes only the models below, each drawn from
its own distribution:

* **epicardial fat**: scale 0.5-9 mm instead of 1-5 mm (epicardial fat thickness on CMR and echo
  ranges from under 1 mm to over 10 mm; Iacobellis & Willens, JASE 2009), and irregular: thickness
  modulated by harmonics 3-6 about the ventricles and a wave along the long axis (stream ``fat``),
  from none in some sectors to 1.6 times the regular thickness, so no smooth bright ring outlines
  every heart;
* **cavity contents**: a deeper, denser trabecular band (2-5 mm, x1.6 in DCM; version 2: 1.5-3 mm)
  and papillary muscles of 3.5-7 mm radius (version 2: 3-5.5 mm). Trabeculation varies widely in
  healthy hearts (the fractal dimension of UK Biobank trabeculae; Meyer et al., Nature 2020) and
  more in dilated ones; the protocols label it LV cavity, so the endocardial border is drawn
  inside what looks like myocardium, a known source of disagreement between readers;
* **contrast**: blood-to-myocardium ratios of 2.5-8 (myocardium 0.12-0.40 of blood; version 2:
  about 3-5.5), fat 0.55-1.15 of blood, wider by vendor (bSSFP contrast depends on flip angle, TR and field;
  Scheffler & Lehnhardt, Eur Radiol 2003);
* **trabeculae on screen**: strands 1.0-1.5 times the myocardium's signal (version 2: 1.1-1.8), as
  dense trabeculation looks when its strands fill the pixel;
* **SNR**: parallel imaging at factor R = 1, 2, 3 or 4 (shares 0.2, 0.35, 0.3, 0.15; g-factor
  1.0-1.5) divides the site's SNR by g sqrt(R) (Pruessmann et al., MRM 1999; clinical cine is
  usually accelerated, Kramer et al., JCMR 2020): blood SNR about 8-90 (stream ``acceleration``);
* **receive-coil shading** without a full prescan normalisation: a floor of 0.02-0.25 (version 2:
  0.1-0.4) and surface elements up to 2.5 times as strong;
* **bSSFP bands**: a poorer shim (offset sigma 30 Hz at 1.5 T, doubled at 3 T; version 2: 15 Hz)
  and deeper bands (up to 0.95), so dark bands cross the heart more often (Bieri & Scheffler, JMRI
  2013);
* **flow ghosts** in 85 % of subjects (version 2: 70 %) at up to 0.2 of the blood signal, and
  acquisition blur of 0.4-1.6 pixels (version 2: 0.3-0.9).

The strengths were set step by step with ``bench/synth_difficulty.sh`` (BENCHMARKS.md has each
step's few-shot Dice from scratch and the ``unet_bai`` measurement of the result).

Geometry, anatomy, disease groups and the labels' protocol are version 2's. ``meta`` adds
``epicardial_fat`` (the scale and the irregularity draws) and ``appearance.acceleration``.
"""

from __future__ import annotations

from . import v2
from .appearance import VENDORS

VERSION = 3

HEART_OPTIONS = {"fat_mm": (0.5, 9.0), "irregular_fat": True, "trab_mm": (2.0, 5.0), "trab_level": (0.4, 0.9),
                 "pap_mm": (3.5, 7.0)}
LOOK_OPTIONS = {
    "vendors": {
        name: {**v, "myo": (max(0.12, v["myo"][0] - 0.06), min(0.40, v["myo"][1] + 0.06)),
               "fat": (max(0.55, v["fat"][0] - 0.15), min(1.15, v["fat"][1] + 0.1))}
        for name, v in VENDORS.items()
    },
    "coil_floor": (0.02, 0.25),
    "coil_gain": (0.5, 2.5),
    "f0_sigma_hz": 30.0,
    "band_depth": (0.5, 0.95),
    "ghost_p": 0.85,
    "ghost_amp": (0.02, 0.2),
    "blur_px": (0.4, 1.6),
    "trab_gain": (1.0, 1.5),
    "acceleration": {"R": (1, 2, 3, 4), "p": (0.2, 0.35, 0.3, 0.15), "g": (1.0, 1.5)},
}


_VERSION = v2.LaterVersion(VERSION, HEART_OPTIONS, LOOK_OPTIONS)
synth_heart = _VERSION.synth_heart
synth_subject = _VERSION.synth_subject
