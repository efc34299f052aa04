"""Version 2 of the synthetic cohort: a population, scanned at a site by a fallible radiographer.

A subject is drawn component by component, each from its own random stream (``streams``): its
group and phenotype (``population``), heart (``heart``) and torso (``torso``), the site and the exam
plan with its perturbations (``acquisition``), and the image model (``appearance``); ``render``
samples it slice by slice. ``meta`` keeps the truth: the drawn phenotype, the true LV axis and
volumes, every acquisition perturbation and the appearance draws, so tests and benchmarks can
measure each one against its distribution.
"""

from __future__ import annotations

import numpy as np

from ..records import SliceRecord, SubjectRecord
from .acquisition import SITES, draw_site, plan_exam
from .appearance import Appearance
from .heart import Heart
from .population import draw_group, draw_phenotype, normalise_population
from .render import render
from .streams import stream
from .torso import Torso
from .v1 import contraction, es_frame_for

VERSION = 2


def synth_heart(seed: int, index: int, population: dict | None = None, *, options: dict | None = None) -> Heart:
    """The heart of subject ``index`` of cohort ``seed`` (the same draws as ``synth_subject``).

    ``options`` (a later version's): ``irregular_fat``, patchy fat drawn from the subject's ``fat``
    stream, and ranges that replace ``Heart``'s (``fat_mm``, ``trab_mm``, ``trab_level``, ``pap_mm``,
    ``rv_trab_mm``, ``rv_trab_cut``)."""
    opts = dict(options or {})
    known = ("fat_mm", "irregular_fat", "trab_mm", "trab_level", "pap_mm", "rv_trab_mm", "rv_trab_cut")
    unknown = set(opts) - set(known)
    if unknown:
        raise ValueError(f"unknown heart options {sorted(unknown)}; known: {list(known)}")
    rng = stream(seed, index, "population")
    group = draw_group(rng, normalise_population(population))
    kwargs = {k: v for k, v in opts.items() if k != "irregular_fat"}
    if opts.get("irregular_fat"):
        kwargs["fat_rng"] = stream(seed, index, "fat")
    return Heart(stream(seed, index, "anatomy"), draw_phenotype(rng, group), **kwargs)


def _json(x):
    if isinstance(x, dict):
        return {k: _json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json(v) for v in x]
    if isinstance(x, np.ndarray):
        return _json(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x)
    if isinstance(x, (np.integer, int)) and not isinstance(x, bool):
        return int(x)
    return x


def synth_subject(
    subject_id: str,
    seed: int,
    index: int,
    *,
    n_frames: int,
    n_sub: int,
    population: dict | None = None,
    random_contrast: float = 0.0,
    version: int = VERSION,
    heart_options: dict | None = None,
    look_options: dict | None = None,
    plan_options: dict | None = None,
) -> SubjectRecord:
    """One version-2 subject (see ``cardiossl.datasets.synthetic.synth_subject``).

    A later version (``v3``, ``v4``) reuses this assembly with its own ``version`` tag, ``heart_options``
    (``synth_heart``), ``look_options`` (``appearance.DEFAULTS``) and ``plan_options``
    (``acquisition.PLAN_DEFAULTS``): its subject ``index`` draws the same streams, so it is this
    subject with only those models changed.

    ``random_contrast``: the probability that this subject's tissue intensities are drawn at random
    (``appearance``); the decision and the draws come from their own stream, so every other draw, and
    a subject that is not randomised, is exactly what it is without the option."""
    es_frame = es_frame_for(n_frames)
    proportions = normalise_population(population)
    heart = synth_heart(seed, index, population, options=heart_options)
    anchor = synth_heart(seed, index, population) if heart_options else None
    torso = Torso(stream(seed, index, "torso"), heart, anchor)
    site_name = draw_site(stream(seed, index, "site"))
    site = SITES[site_name]
    plans, acq = plan_exam(heart, site_name, stream(seed, index, "planning"), stream(seed, index, "breath"), torso.c,
                           options=plan_options)
    contrast_rng = None
    if random_contrast > 0:
        contrast_rng = stream(seed, index, "contrast")
        if contrast_rng.random() >= random_contrast:
            contrast_rng = None
    accel_rng = stream(seed, index, "acceleration") if (look_options or {}).get("acceleration") else None
    flow_rng = stream(seed, index, "flow") if (look_options or {}).get("flow") else None
    look = Appearance(stream(seed, index, "appearance"), site["vendor"], site["field_t"], site["pe"],
                      site["circle"], heart, torso.c, (torso.bx, torso.by), contrast_rng, options=look_options,
                      accel_rng=accel_rng, flow_rng=flow_rng)
    noise_rng, texture_rng = stream(seed, index, "noise"), stream(seed, index, "texture")
    cs = [contraction(t, n_frames, es_frame) for t in range(n_frames)]
    phases = {0: "ed", es_frame: "es"}
    n_sa = acq["sa"]["n_slices"]
    slices: list[SliceRecord] = []
    sa_content = []
    for plan in plans:
        images, labels, content = render(heart, torso, look, plan, cs, set(phases), n_sub, noise_rng, texture_rng,
                                         acq["interpolation"])
        pos = plan.index / (n_sa - 1) if plan.view == "sa" else float("nan")
        if plan.view == "sa":
            sa_content.append(content)
        for t, img in enumerate(images):
            slices.append(SliceRecord(plan.view, plan.index, t, img, plan.plane, labels.get(t), phases.get(t, ""), pos))

    vol_ed, vol_es = heart.volumes(0.0), heart.volumes(1.0)
    ph = heart.phenotype
    meta = {
        "source": "synthetic",
        "synth_version": int(version),
        "seed": int(seed),
        "index": int(index),
        "n_frames": int(n_frames),
        "ed_frame": 0,
        "es_frame": int(es_frame),
        "group": ph["group"],
        "population": proportions,
        "phenotype": ph,
        "lv_axis": {
            "base": heart.base,
            "apex": heart.apex,
            "base_es": heart.base_at(1.0),
            "s": heart.s,
            "a": heart.a,
            "w": heart.w,
            "lv_centre": heart.lv_centre(),
        },
        "volumes_ml": {"ed": vol_ed, "es": vol_es},
        "lv_ejection_fraction": 1.0 - vol_es["lv_cavity"] / vol_ed["lv_cavity"],
        "rv_ejection_fraction": 1.0 - vol_es["rv_cavity"] / vol_ed["rv_cavity"],
        "wall_thickness_mm": {"ed": heart.wall_stats(0.0), "es": heart.wall_stats(1.0)},
        "sa_slice_gap_mm": acq["sa"]["spacing_mm"],  # centre to centre, as in version 1
        "sa_slice_thickness_mm": acq["sa"]["thickness_mm"],
        "la_slice_thickness_mm": acq["la_thickness_mm"],
        "sa_slice_content": sa_content,
        "acquisition": acq,
        "appearance": look.meta(),
        "torso": torso.meta(),
    }
    if heart.fat_irregular is not None:  # a later version's: version-2 meta stays as it was
        meta["epicardial_fat"] = {"scale_mm": heart.fat, **heart.fat_irregular}
    return SubjectRecord(subject_id, slices, _json(meta)).validate()


class LaterVersion:
    """A later version as option sets over this assembly (``v3``, ``v4``): its subject ``index``
    draws version 2's streams, with only the models the options name changed."""

    def __init__(self, version: int, heart_options: dict, look_options: dict, plan_options: dict | None = None):
        self.version, self.heart_options = version, heart_options
        self.look_options, self.plan_options = look_options, plan_options

    def synth_heart(self, seed: int, index: int, population: dict | None = None) -> Heart:
        """The heart of subject ``index`` of cohort ``seed`` (the same draws as ``synth_subject``)."""
        return synth_heart(seed, index, population, options=self.heart_options)

    def synth_subject(self, subject_id: str, seed: int, index: int, *, n_frames: int, n_sub: int,
                      population: dict | None = None, random_contrast: float = 0.0) -> SubjectRecord:
        """One subject of this version (see ``cardiossl.datasets.synthetic.synth_subject``)."""
        return synth_subject(subject_id, seed, index, n_frames=n_frames, n_sub=n_sub, population=population,
                             random_contrast=random_contrast, version=self.version,
                             heart_options=self.heart_options, look_options=self.look_options,
                             plan_options=self.plan_options)
