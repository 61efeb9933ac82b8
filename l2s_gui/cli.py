"""``l2s``: train, resume, watch, segment and demo from the command line.

Every user-facing failure prints one line ``l2s: error: ...`` and exits with status 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Iterable, Optional

from .errors import L2SError
from .starter import STARTER_NAME

EXAMPLES = """examples:
  l2s gui                                    napari with the sample loaded and training ready (Start)
  l2s demo                                   train briefly on the built-in sample and segment it
  l2s train config.yaml -o runs/exp1         train (config: see resources/configs/default.yaml)
  l2s train config.yaml -o runs/exp1 --set training.steps=5000 --set data.ndim=3
  l2s resume runs/exp1 --steps 8000          continue a run (step count, optimisers, RNG restored)
  l2s watch runs/exp1                        follow a run started elsewhere
  l2s segment scan.nii.gz -o scan_seg.nii.gz              segment with the shipped starter model
  l2s segment -m runs/exp1 scan.nii.gz -o scan_seg.nii.gz --vol volumes.csv
"""


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors (status 2, as argparse)."""

    def error(self, message: str):
        self.exit(2, f"l2s: error: {message.strip()} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="l2s", description="Learn2Synth segmentation: training and inference.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model; writes a run folder")
    t.add_argument("config", help="YAML or JSON config file")
    t.add_argument("-o", "--run-dir", required=True, help="run folder to create")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable)")
    t.add_argument("--steps", type=int, help="shortcut for --set training.steps=N")
    t.add_argument("--device", help="shortcut for --set training.device=DEVICE")
    t.add_argument("--unlabelled", action="append", default=[], metavar="PATH",
                   help="unlabelled target scans (a folder or a file; repeatable) for self-training: added to "
                        "data.unlabelled_images (rounds: self_training.rounds)")
    t.add_argument("--overwrite", action="store_true", help="start anew in a non-empty run folder")
    t.add_argument("--quiet", action="store_true", help="no progress bar (events still go to the run folder)")

    r = sub.add_parser("resume", help="continue a run from its latest checkpoint")
    r.add_argument("run_dir")
    r.add_argument("--steps", type=int, help="new total number of steps")
    r.add_argument("--quiet", action="store_true")

    g = sub.add_parser("gui", help="open napari with the built-in sample loaded and the training widget ready")
    g.add_argument("--no-sample", action="store_true", help="start without the built-in sample")
    g.add_argument("--open", metavar="RUN_DIR", help="open (and follow) a run folder")
    g.add_argument("--size", default="1280x800", help="window size WxH (default 1280x800)")

    w = sub.add_parser("watch", help="follow the progress of a run folder (e.g. synced from a server)")
    w.add_argument("run_dir")
    w.add_argument("--once", action="store_true", help="print the current state and exit")

    s = sub.add_parser("segment", help="segment volumes with a trained model (default: the shipped starter model)")
    s.add_argument("inputs", nargs="+", metavar="[MODEL] SCAN",
                   help="scans (.nii, .nii.gz, .mgz) or folders; a first argument that is a model file "
                        "(.safetensors) or a run folder is the model (as --model)")
    s.add_argument("-m", "--model", default=None,
                   help="model file (.safetensors), run folder, or 'starter' (the shipped starter model: the default)")
    s.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    s.add_argument("--vol", help="write per-label soft volumes (mm^3: posteriors summed on the scan's grid, as "
                                 "SynthSeg's --vol) to this CSV")
    s.add_argument("--no-flip", dest="flip", action="store_false",
                   help="no left/right flipped pass (by default one is averaged in when the label table allows it)")
    s.add_argument("--clean", action="store_true",
                   help="keep each structure's largest connected component (removed voxels go to their next most "
                        "probable class)")
    s.add_argument("--device", default="auto")
    s.add_argument("--overwrite", action="store_true", help="replace existing outputs (never inputs)")

    d = sub.add_parser("demo", help="a small end-to-end job on the built-in sample data")
    d.add_argument("-o", "--out", default="l2s_demo", help="output folder (default: ./l2s_demo)")
    d.add_argument("--steps", type=int, default=None, help="training steps (default from the demo config)")
    d.add_argument("--device", default=None)
    d.add_argument("--overwrite", action="store_true")
    return p


def _format_theta(theta: dict) -> str:
    parts = []
    for key, value in theta.items():
        if isinstance(value, (list, tuple)):
            parts.append(f"{key}=[{', '.join(f'{v:.3f}' for v in value)}]")
        elif isinstance(value, float):
            parts.append(f"{key}={value:.4f}")
    return " ".join(parts)


def consume(events: Iterable, quiet: bool = False, out=sys.stderr) -> Optional[object]:
    """Show trainer events as a progress bar; return the DoneEvent."""
    from tqdm import tqdm

    from .events import DoneEvent, InspectorEvent, LogEvent, StartEvent, StepEvent, ValidationEvent

    bar = None
    done = None
    last_dice = None
    last_inspector = None
    for event in events:
        if isinstance(event, StartEvent):
            print(f"l2s: {event.method} on {event.device}, {event.n_classes} classes "
                  f"(labels {event.label_values}), step {event.step}/{event.total_steps}", file=out)
            if not quiet:
                bar = tqdm(total=event.total_steps, initial=event.step, unit="it", file=out, dynamic_ncols=True)
        elif isinstance(event, StepEvent):
            if bar is not None:
                bar.update(event.step - bar.n)
                post = f"Ls={event.loss_synth:.3f}"
                if event.loss_real is not None:
                    post += f" Lr={event.loss_real:.3f}"
                if last_dice is not None:
                    post += f" dice={last_dice:.3f}"
                if last_inspector is not None:
                    post += f" insp={last_inspector:.2f}"
                bar.set_postfix_str(f"{post} {_format_theta(event.theta)}")
        elif isinstance(event, ValidationEvent):
            last_dice = event.mean_dice
            if quiet:
                print(f"step {event.step}: validation Dice {event.mean_dice:.4f}", file=out)
        elif isinstance(event, InspectorEvent):
            last_inspector = event.accuracy
            if quiet:
                print(f"step {event.step}: {_inspector_line(event)}", file=out)
        elif isinstance(event, LogEvent):
            (bar.write if bar is not None else (lambda m: print(m, file=out)))(f"[{event.level}] {event.message}")
        elif isinstance(event, DoneEvent):
            done = event
    if bar is not None:
        bar.close()
    return done


def _inspector_line(event) -> str:
    return (f"inspector accuracy {float(event.accuracy):.3f} (real {float(event.accuracy_real):.3f}, "
            f"synthetic {float(event.accuracy_synthetic):.3f}; 0.5 = indistinguishable)")


def _finish(done, run_dir: Path) -> int:
    if done is None:
        return 1
    if done.reason == "error":
        print(f"l2s: error: {done.message}", file=sys.stderr)
        return 1
    print(f"l2s: {done.reason} at step {done.step}; run folder {run_dir}"
          + (f"; model {done.model_path}" if done.model_path else ""), file=sys.stderr)
    return 0


def cmd_train(args) -> int:
    from .config import Config, apply_overrides, read_config_file
    from .run_lock import RunLock
    from .runs import RunFolder

    data = read_config_file(args.config)
    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"training.steps={args.steps}")
    if args.device:
        overrides.append(f"training.device={args.device}")
    config_dir = Path(args.config).resolve().parent
    data = _absolute_data_paths(apply_overrides(data, overrides), config_dir)
    if args.unlabelled:
        from .self_training import add_unlabelled

        data = add_unlabelled(data, args.unlabelled)
    config = Config.from_dict(data)
    rank, world = _init_distributed(config.training.device)
    try:
        run = RunFolder(args.run_dir)

        def check() -> None:
            _check_inputs_outside_run(run, [args.config], config)
            run.check_can_create(args.overwrite)

        _on_rank0(rank, world, check)
        # loads and checks the data before anything is written; only rank 0 writes the run folder
        trainer = _trainer(config, run if rank == 0 else None, world)
        if rank != 0:
            for _ in trainer.run():  # events are only yielded (and written) on rank 0
                pass
            return 0
        with RunLock(run.path, "train") as lock:
            restart = not args.overwrite and run.restartable()
            run.create(config, overwrite=args.overwrite)
            if lock.took_over:
                print(f"l2s: {lock.took_over}", file=sys.stderr)
            if restart:
                print(f"l2s: {run.path} ended before its first checkpoint; starting it again", file=sys.stderr)
            return _finish(consume(trainer.run(), quiet=args.quiet), run.path)
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _trainer(config, run, world: int = 1, resume: bool = False):
    """A :class:`~l2s_gui.trainer.Trainer`, or the self-training rounds around it when
    ``data.unlabelled_images`` and ``self_training.rounds`` ask for them (one process only)."""
    from .config import self_training_enabled
    from .trainer import Trainer

    if not self_training_enabled(config):
        return Trainer(config, run=run, resume=resume)
    if world > 1:
        raise L2SError("self-training (data.unlabelled_images) runs in one process: start `l2s train` without "
                       "torchrun, or set self_training.rounds: 0")
    from .self_training import SelfTraining

    return SelfTraining(config, run=run, resume=resume)


def _check_inputs_outside_run(run, files: list, config) -> None:
    """No input of ``l2s train`` (its config, label maps, scans) may be a file the run folder's
    creation replaces or deletes (config.yaml, metrics.jsonl, ..., previews/, checkpoints/)."""
    from .errors import OutputExistsError
    from .io import expand_paths

    managed = [run.path / name for name in ("config.yaml", "state.json", "metrics.jsonl", "control.json",
                                            "model.safetensors", "model.json", "error.log", "run.lock")]
    managed_dirs = [run.path / "previews", run.path / "checkpoints"]
    candidates = [Path(f) for f in files]
    d = config.data
    for key in ("label_maps", "real_images", "real_labels", "unlabelled_images"):
        try:
            candidates += expand_paths(getattr(d, key), f"data.{key}") if getattr(d, key) else []
        except L2SError:
            pass  # reported when the data is loaded
    for f in candidates:
        try:
            resolved = f.resolve()
        except OSError:
            continue
        if any(resolved == m.resolve() for m in managed) or any(m.resolve() in resolved.parents for m in managed_dirs):
            raise OutputExistsError(f"{f}: is inside the run folder {run.path} and would be replaced; "
                                    f"move it out or choose another -o folder (inputs are never overwritten)")


def _init_distributed(device: str) -> tuple[int, int]:
    """Under ``torchrun`` (WORLD_SIZE > 1) join the process group: NCCL on CUDA, each process on the
    GPU of its LOCAL_RANK, else gloo. The Trainer then averages the phi and theta gradients across
    ranks. Returns (rank, world size); (0, 1) without torchrun."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    from .device import resolve_device

    backend = "gloo"
    if resolve_device(device).type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise L2SError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s): "
                           f"use --nproc_per_node <= {torch.cuda.device_count()}")
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def _on_rank0(rank: int, world: int, check) -> None:
    """Run ``check`` on rank 0; when it raises, every rank stops (only rank 0 reports the error)."""
    message = None
    if rank == 0:
        try:
            check()
        except L2SError as exc:
            if world == 1:
                raise
            message = str(exc)
    if world > 1:
        import torch.distributed as dist

        box = [message]
        dist.broadcast_object_list(box, src=0)
        message = box[0]
    if message is not None:
        if rank == 0:
            raise L2SError(message)
        raise SystemExit(1)


def _absolute_data_paths(data: dict, base: Path) -> dict:
    """Relative data paths in a config file (data files, recovery.val_label_maps,
    training.init_from / init_theta_from) are relative to that file."""
    def absolute(v):
        relative = isinstance(v, str) and v and not Path(v).is_absolute() and v != STARTER_NAME
        return str(base / v) if relative else v

    for name, keys in (("data", ("label_maps", "real_images", "real_labels", "unlabelled_images")),
                       ("recovery", ("val_label_maps",)),
                       ("training", ("init_from", "init_theta_from"))):
        section = data.get(name)
        if not isinstance(section, dict):
            continue
        for key in keys:
            if key not in section:
                continue
            value = section[key]
            if key.startswith("init_"):
                section[key] = absolute(value)
                continue
            items = [value] if isinstance(value, str) else value
            if isinstance(items, list):
                section[key] = [absolute(v) for v in items]
    return data


def cmd_resume(args) -> int:
    from .config import Config, self_training_enabled
    from .errors import ConfigError
    from .run_lock import RunLock
    from .runs import RunFolder

    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps: must be a positive number of steps, got {args.steps}")
    run = RunFolder(args.run_dir)
    config = run.load_config()
    with RunLock(run.path, "resume") as lock:
        if lock.took_over:
            print(f"l2s: {lock.took_over}", file=sys.stderr)
        checkpoint, damaged = run.resume_checkpoint()
        for folder, why in damaged:
            print(f"l2s: checkpoint {folder.name} is damaged ({why}); skipping it", file=sys.stderr)
        if checkpoint is None and (damaged or not run.restartable()):
            raise L2SError(f"{run.path}: no {'intact ' if damaged else ''}checkpoint to resume from; start the "
                           f"run anew with `l2s train CONFIG -o {run.path} --overwrite`")
        step = run.checkpoint_step(checkpoint) if checkpoint is not None else 0
        if checkpoint is None:
            print(f"l2s: {run.path} ended before its first checkpoint; starting it again from step 0",
                  file=sys.stderr)
        elif damaged:
            print(f"l2s: resuming from {checkpoint.name} (step {step})", file=sys.stderr)
        if args.steps is not None:
            if args.steps <= step:
                raise ConfigError(f"--steps: the run is at step {step} already; give more than {step} steps")
            data = config.to_dict()
            data["training"]["steps"] = args.steps
            config = Config.from_dict(data)
        if checkpoint is not None and self_training_enabled(config):
            from .self_training import check_resumable

            check_resumable(config, step)
        try:  # loads and checks the data and the checkpoint before anything is written
            trainer = _trainer(config, run, resume=checkpoint is not None)
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise L2SError(f"{checkpoint}: does not fit the run's config.yaml (was it edited?): "
                           f"{_one_line(exc)[:200]}") from None
        if checkpoint is None:
            run.create(config, overwrite=True)
        else:
            run.prepare_resume(step)
            if args.steps is not None:
                run.save_config(config)
        return _finish(consume(trainer.run(), quiet=args.quiet), run.path)


def cmd_watch(args) -> int:
    from .events import DoneEvent, InspectorEvent, StepEvent, ValidationEvent
    from .runs import ENDED, RunReader

    reader = RunReader(args.run_dir)
    run = reader.run
    if not run.exists():
        raise L2SError(f"{run.path}: not a run folder (no config.yaml)")
    while True:
        events, _restarted = reader.new_events()
        for e in events:
            try:
                if isinstance(e, StepEvent) and (args.once is False or e is events[-1]):
                    print(f"step {e.step}: Ls={float(e.loss_synth):.4f}"
                          + (f" Lr={float(e.loss_real):.4f}" if e.loss_real else "")
                          + f" {_format_theta(e.theta)} {float(e.it_per_s):.2f} it/s")
                elif isinstance(e, ValidationEvent):
                    print(f"step {e.step}: validation Dice {float(e.mean_dice):.4f}")
                elif isinstance(e, InspectorEvent):
                    print(f"step {e.step}: {_inspector_line(e)}")
                elif isinstance(e, DoneEvent):
                    print(f"done ({e.reason}) at step {e.step} {e.message}")
            except (TypeError, ValueError, AttributeError):
                continue  # a malformed event: skip it
        state = run.read_state()
        status = state.get("status")
        summary = (f"status: {status or 'unknown'}, step {state.get('step')}/{state.get('total_steps')}"
                   f" on {state.get('device')}")
        if reader.more_events_pending():
            continue
        if args.once or status in ENDED:
            print(summary)
            return 0
        alive, who = run.writer_alive(state)
        if not alive:
            print(summary)
            raise L2SError(f"{run.path}: {who}; the run died without finishing "
                           f"(`l2s resume {run.path}` continues it from its last checkpoint)")
        time.sleep(1.0)


def _split_model_argument(args) -> tuple[str, list[str]]:
    """(model spec, scans) of ``l2s segment``: --model, else a first argument that is a model file or a
    run folder (the older ``l2s segment MODEL SCAN...`` form), else the starter model."""
    inputs = list(args.inputs)
    if args.model is None and len(inputs) > 1:
        first = Path(inputs[0])
        if first.suffix == ".safetensors" or (first.is_dir() and (first / "config.yaml").is_file()):
            return inputs[0], inputs[1:]
    return (args.model or STARTER_NAME), inputs


def gui_command(args) -> list[str]:
    """The command line of the GUI process (the plugin's ``python -m l2s_napari``; the engine itself
    never imports napari)."""
    argv = [sys.executable, "-m", "l2s_napari", "--size", args.size]
    if args.no_sample:
        argv.append("--no-sample")
    if args.open:
        argv += ["--open", str(args.open)]
    return argv


def cmd_gui(args) -> int:
    import subprocess

    missing = [name for name in ("napari", "l2s_napari") if importlib.util.find_spec(name) is None]
    if missing:
        raise L2SError(f"the GUI needs {' and '.join(missing)}: pip install -e \".[gui]\" (napari, Qt, the plugin)")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise L2SError("no display (DISPLAY and WAYLAND_DISPLAY are unset): napari needs a screen; on a server "
                       "use `xvfb-run -a l2s gui`, or the headless `l2s demo`")
    code = subprocess.call(gui_command(args))
    if code:
        raise L2SError(f"the GUI process ended with status {code} (its messages are above)")
    return 0


def cmd_segment(args) -> int:
    from .model_io import resolve_model_path
    from .segment import segment_files

    spec, args.inputs = _split_model_argument(args)
    model = resolve_model_path(spec)
    if spec == STARTER_NAME:
        print(f"l2s: segmenting with the shipped starter model ({model.name})", file=sys.stderr)
    if not model.is_file():
        raise L2SError(f"{model}: model file not found")
    outputs = segment_files(str(model), args.inputs, args.output, args.vol, args.device, args.overwrite,
                            flip=args.flip, clean=args.clean, log=lambda note: print(f"l2s: note: {note}", file=sys.stderr))
    for path in outputs:
        print(path)
    if args.vol:
        print(args.vol)
    return 0


def cmd_demo(args) -> int:
    from .config import Config
    from .runs import RunFolder
    from .sample_data import sample_config, sample_paths
    from .segment import segment_files
    from .trainer import Trainer

    out = Path(args.out)
    run_dir = out / "run"
    data = sample_config(out / "data")
    if args.steps is not None:
        data.setdefault("training", {})["steps"] = args.steps
    if args.device:
        data.setdefault("training", {})["device"] = args.device
    config = Config.from_dict(data)
    run = RunFolder(run_dir)
    run.check_can_create(args.overwrite)
    trainer = Trainer(config, run=run)
    from .run_lock import RunLock

    with RunLock(run.path, "demo"):
        run.create(config, overwrite=args.overwrite)
        print(f"l2s demo: training on the built-in sample (MNI152 T1 from nilearn) in {run_dir}", file=sys.stderr)
        code = _finish(consume(trainer.run()), run_dir)
    if code:
        return code
    print(demo_summary(run, trainer.table), file=sys.stderr)
    scan = sample_paths(out / "data")["scan"]
    seg_path = out / "sample_seg.nii.gz"
    csv_path = out / "sample_volumes.csv"
    segment_files(str(run.model_path), [str(scan)], str(seg_path), str(csv_path), config.training.device,
                  args.overwrite)
    print(f"\nl2s demo outputs:\n  run folder     {run_dir}\n  model          {run.model_path}\n"
          f"  segmentation   {seg_path}\n  volumes (mm^3) {csv_path}\n"
          f"  metrics        {run.metrics_path}\n  open in napari: napari {scan} {seg_path}"
          + ("" if importlib.util.find_spec("napari") else "\n  (napari and the plugin: pip install -e \".[gui]\")"))
    return 0


def demo_summary(run, table) -> str:
    """The demo's result in three lines: validation Dice of the sample's tissues (the sample labels
    white matter, grey matter and CSF only), their mean, and theta at the start and the end."""
    import numpy as np

    from .events import StepEvent, ValidationEvent
    from .sample_data import CSF, GM, WM

    events = list(run.iter_events())
    steps = [e for e in events if isinstance(e, StepEvent)]
    vals = [e for e in events if isinstance(e, ValidationEvent)]
    lines = []
    if steps:
        minutes, seconds = divmod(int(round(steps[-1].elapsed_s)), 60)
        lines.append(f"l2s demo: {steps[-1].step} steps in {minutes} min {seconds:02d} s of training")
    if vals:
        tissue_values = [table.values[c] for c in table.to_classes(np.array([WM, GM, CSF]))]
        scores = [(table.names[table.values.index(v)], vals[-1].dice.get(str(v))) for v in tissue_values]
        scores = [(n, d) for n, d in scores if d is not None]
        if scores:
            mean = float(np.mean([d for _, d in scores]))
            lines.append(f"  validation Dice at step {vals[-1].step}: "
                         + ", ".join(f"{n} {d:.3f}" for n, d in scores) + f"; mean {mean:.3f}")
    if steps:
        lines.append(f"  learned augmentation: {_format_theta(steps[0].theta)} at step {steps[0].step} -> "
                     f"{_format_theta(steps[-1].theta)} at step {steps[-1].step}")
    return "\n".join(lines)


COMMANDS = {"gui": cmd_gui, "train": cmd_train, "resume": cmd_resume, "watch": cmd_watch, "segment": cmd_segment,
            "demo": cmd_demo}


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def main(argv: Optional[list[str]] = None) -> int:
    """Run one command. Every failure is one line ``l2s: error: ...`` (exit 1); set L2S_DEBUG=1 to
    see the traceback of an unexpected error."""
    import os

    args = _parser().parse_args(argv)
    debug = bool(os.environ.get("L2S_DEBUG"))
    try:
        return COMMANDS[args.command](args)
    except L2SError as exc:
        print(f"l2s: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("l2s: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if debug:
            raise
        from .errors import os_error_reason

        where = exc.filename if exc.filename is not None else "file system"
        print(f"l2s: error: {where}: {os_error_reason(exc)}", file=sys.stderr)
        return 1
    except MemoryError:
        if debug:
            raise
        print("l2s: error: out of memory (a size in the config or the data is too large for this machine)",
              file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug: still one line, the traceback on request
        if debug:
            raise
        print(f"l2s: error: internal error ({type(exc).__name__}: {_one_line(exc)}); "
              f"run again with L2S_DEBUG=1 for details", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
