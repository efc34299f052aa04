"""`cardiossl show STORE --subject ID --pretext NAME --out FILE.png [--npz FILE.npz]`.

Draws one subject's slices (one cardiac frame: end-diastole where it is marked) with the pretext's
target over them, exactly as the data loader would make it, so a wrong plane, spacing or config is
seen before any GPU hour is spent.
"""

from __future__ import annotations

from pathlib import Path

import typer


def parse_params(params: list[str] | None) -> dict:
    """``["box_mm=20", "views=[2ch, 4ch]"]`` -> dict; values parsed with yaml.safe_load."""
    import yaml

    out: dict = {}
    for item in params or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {item!r}", param_hint="--params")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise typer.BadParameter(f"{item!r}: value is not valid YAML ({exc})", param_hint="--params") from None
    return out


def choose_frames(slices: list[dict], frame: int | None) -> dict[str, int]:
    """Per view, the frame to draw: ``frame`` if given, else the end-diastolic one, else the first."""
    chosen: dict[str, int] = {}
    for view in sorted({s["view"] for s in slices}):
        frames = sorted({int(s["frame"]) for s in slices if s["view"] == view})
        if frame is not None:
            if frame in frames:
                chosen[view] = frame
            continue
        ed = sorted({int(s["frame"]) for s in slices if s["view"] == view and s.get("phase") == "ed"})
        chosen[view] = ed[0] if ed else frames[0]
    return chosen


def load_subject_samples(store_path: Path, subject_id: str, frame: int | None = None) -> list[dict]:
    from ...datasets.store import CohortStore
    from ...datasets.torch_dataset import CohortDataset

    store = CohortStore(store_path)
    if not store.has_subject(subject_id):
        ids = store.subject_ids()
        hint = ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else "")
        raise typer.BadParameter(
            f"subject {subject_id!r} is not in {store_path} ({len(ids)} subjects: {hint or 'none'})",
            param_hint="--subject",
        )
    chosen = choose_frames(store.subject_slices(subject_id), frame)
    if not chosen:
        raise typer.BadParameter(f"subject {subject_id!r} has no frame {frame}", param_hint="--frame")
    views = tuple(chosen)
    dataset = CohortDataset(
        store_path,
        subjects=[subject_id],
        views=views,
        filter=lambda meta: chosen.get(meta["view"]) == int(meta["frame"]),
    )
    return [dataset[i] for i in range(len(dataset))]


def register(app: typer.Typer) -> None:
    @app.command("show")
    def show(
        store: Path = typer.Argument(..., help="cohort store (zarr folder)"),
        subject: str = typer.Option(..., "--subject", help="subject id"),
        pretext: str = typer.Option(..., "--pretext", help="registered pretext name (cardiossl plugins list)"),
        params: list[str] = typer.Option(None, "--params", help="pretext config key=value (repeatable)"),
        out: Path = typer.Option(..., "--out", help="PNG to write"),
        npz: Path = typer.Option(None, "--npz", help="also save targets (and trace lines) to this .npz"),
        frame: int = typer.Option(None, "--frame", help="cine frame (default: end-diastole)"),
        seed: int = typer.Option(0, "--seed", help="seed of the target generators"),
        plugin: list[str] = typer.Option([], "--plugin", help="import MODULE first (it registers plugins)"),
    ) -> None:
        """Draw a subject's slices with the pretext target over them (trace lines, boxes, masks)."""
        from ...pretexts import PRETEXTS, PretextConfigError
        from ..config import ConfigError
        from ..runtime import import_plugin_modules

        try:
            import_plugin_modules(plugin)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc), param_hint="--plugin") from None
        from ...pretexts.figures import render_targets
        from cardiossl.registry import RegistryError

        if out.suffix.lower() != ".png":
            raise typer.BadParameter(f"{out}: the figure is written as PNG, use a .png name", param_hint="--out")
        config = parse_params(params)
        try:
            task = PRETEXTS.get(pretext)(config)
        except (RegistryError, PretextConfigError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--pretext/--params") from None
        if not store.exists():
            raise typer.BadParameter(f"{store} does not exist", param_hint="STORE")
        samples = load_subject_samples(store, subject, frame)
        if not samples:
            raise typer.BadParameter(f"subject {subject!r}: no slices to draw", param_hint="--subject")
        summary = render_targets(
            samples, task, out, npz, seed=seed,
            title=f"{subject}: pretext {pretext} {task.config.model_dump_json()}",
        )
        typer.echo(
            f"wrote {summary['png']}: {summary['slices']} slices, {summary['with_target']} with a target"
            + (f"; targets in {summary['npz']}" if npz else "")
        )
