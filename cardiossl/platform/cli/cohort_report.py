"""What ``cardiossl cohort list`` and ``cohort info`` report, from a store's metadata (no pixels read).

* ``subject_listing``: per subject, its views with slices and frames and its labelled phases;
* ``missing_views``: which subjects lack which long-axis view;
* ``target_availability``: for every registered pretext and each of its target modes
  (``Pretext.variants``), how many SA slices get a target and why the others do not
  (``Pretext.reason``). A slice is one stack position of one subject: its cine frames share its
  geometry, so its end-diastolic frame (else its first) stands for all of them.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ...datasets.records import LA_VIEWS, PHASES, VIEWS


def subject_listing(store) -> list[dict]:
    """One dict per subject (commit order): id, views {view: {slices, frames}}, labelled phases."""
    t = store.slice_table()
    out = []
    order = np.argsort(t.subject, kind="stable")
    cuts = np.flatnonzero(np.diff(t.subject[order])) + 1
    groups = {int(t.subject[g[0]]): g for g in np.split(order, cuts) if g.size}
    for s, sid in enumerate(t.subject_ids):
        rows = groups.get(s, np.zeros(0, dtype=np.int64))
        views = {}
        for code in sorted(set(t.view[rows].tolist())):
            r = rows[t.view[rows] == code]
            views[VIEWS[code]] = {"slices": int(np.unique(t.slice_index[r]).size),
                                  "frames": int(np.unique(t.frame[r]).size)}
        lab = rows[t.has_label[rows]]
        labelled = {}
        for code in sorted(set(t.view[lab].tolist())):
            r = lab[t.view[lab] == code]
            names = sorted({PHASES[p] or f"frame {f}" for p, f in zip(t.phase[r].tolist(), t.frame[r].tolist())},
                           key=lambda x: (not x in ("ed", "es"), x))  # noqa: E713
            labelled[VIEWS[code]] = names
        out.append({"subject_id": sid, "views": views, "labelled": labelled})
    return out


def missing_views(listing: list[dict]) -> dict[str, list[str]]:
    """{view: ids of the subjects without it} for the SA and long-axis views."""
    return {v: [s["subject_id"] for s in listing if v not in s["views"]] for v in ("sa", *LA_VIEWS)}


def _representative_rows(dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per (subject, slice_index) of an SA dataset: the ED row (else the first) and the frame count."""
    metas = [dataset.meta(i) for i in range(len(dataset))]
    keys = dataset.sample_subjects.astype(np.int64) * 100_000 + np.array([m["slice_index"] for m in metas],
                                                                          dtype=np.int64)
    is_ed = np.array([m["phase"] == "ed" for m in metas], dtype=bool)
    order = np.lexsort((~is_ed, keys))  # by key, ED first
    first = np.ones(order.size, dtype=bool)
    first[1:] = keys[order][1:] != keys[order][:-1]
    _, counts = np.unique(keys, return_counts=True)
    return order[first], counts


def target_availability(store_path, pretexts=None) -> list[dict]:
    """[{pretext, config, slices, frames, with_target, reasons {why: slices}}] for every registered
    pretext's target modes, over the store's SA slices."""
    from ...datasets.torch_dataset import CohortDataset
    from ...pretexts import PRETEXTS

    ds = CohortDataset(store_path, views=("sa",))
    reps, frames = _representative_rows(ds) if len(ds) else (np.zeros(0, int), np.zeros(0, int))
    metas = [ds.meta(int(i)) for i in reps]
    out = []
    for name in (pretexts or PRETEXTS.names()):
        cls = PRETEXTS.get(name)
        for cfg in cls.variants():
            pretext = cls(cfg)
            why = Counter()
            with_target = 0
            for m in metas:
                r = pretext.reason(m)
                if r is None:
                    with_target += 1
                else:
                    why[r] += 1
            out.append({"pretext": name, "config": cfg, "slices": len(metas), "frames": int(frames.sum()),
                        "with_target": with_target, "reasons": dict(why.most_common())})
    return out
