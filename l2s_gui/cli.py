"""``l2s``: train, resume, watch, segment and demo from the command line.

Every user-facing failure prints one line ``l2s: error: ...`` and exits with status 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Iterable, Optional

from .errors import L2SError

EXAMPLES = """examples:
  l2s demo                                   train briefly on the built-in sample and segment it
  l2s train config.yaml -o runs/exp1         train (config: see resources/configs/default.yaml)
  l2s train config.yaml -o runs/exp1 --set training.steps=5000 --set data.ndim=3
  l2s resume runs/exp1 --steps 8000          continue a run (step count, optimisers, RNG restored)
  l2s watch runs/exp1                        follow a run started elsewhere
  l2s segment runs/exp1/model.safetensors scan.nii.gz -o scan_seg.nii.gz --vol volumes.csv
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="l2s", description="Learn2Synth segmentation: training and inference.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model; writes a run folder")
    t.add_argument("config", help="YAML or JSON config file")
    t.add_argument("-o", "--run-dir", required=True, help="run folder to create")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable)")
    t.add_argument("--steps", type=int, help="shortcut for --set training.steps=N")
    t.add_argument("--device", help="shortcut for --set training.device=DEVICE")
    t.add_argument("--overwrite", action="store_true", help="start anew in a non-empty run folder")
    t.add_argument("--quiet", action="store_true", help="no progress bar (events still go to the run folder)")

    r = sub.add_parser("resume", help="continue a run from its latest checkpoint")
    r.add_argument("run_dir")
    r.add_argument("--steps", type=int, help="new total number of steps")
    r.add_argument("--quiet", action="store_true")

    w = sub.add_parser("watch", help="follow the progress of a run folder (e.g. synced from a server)")
    w.add_argument("run_dir")
    w.add_argument("--once", action="store_true", help="print the current state and exit")

    s = sub.add_parser("segment", help="segment volumes with a trained model")
    s.add_argument("model", help="model file (.safetensors) or run folder")
    s.add_argument("inputs", nargs="+", help="scans (.nii, .nii.gz, .mgz) or folders")
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

    from .events import DoneEvent, LogEvent, StartEvent, StepEvent, ValidationEvent

    bar = None
    done = None
    last_dice = None
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
                bar.set_postfix_str(f"{post} {_format_theta(event.theta)}")
        elif isinstance(event, ValidationEvent):
            last_dice = event.mean_dice
            if quiet:
                print(f"step {event.step}: validation Dice {event.mean_dice:.4f}", file=out)
        elif isinstance(event, LogEvent):
            (bar.write if bar is not None else (lambda m: print(m, file=out)))(f"[{event.level}] {event.message}")
        elif isinstance(event, DoneEvent):
            done = event
    if bar is not None:
        bar.close()
    return done


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
    from .runs import RunFolder
    from .trainer import Trainer

    data = read_config_file(args.config)
    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"training.steps={args.steps}")
    if args.device:
        overrides.append(f"training.device={args.device}")
    config_dir = Path(args.config).resolve().parent
    config = Config.from_dict(_absolute_data_paths(apply_overrides(data, overrides), config_dir))
    rank, world = _init_distributed(config.training.device)
    try:
        run = RunFolder(args.run_dir)
        _on_rank0(rank, world, lambda: run.check_can_create(args.overwrite))
        # loads and checks the data before anything is written; only rank 0 writes the run folder
        trainer = Trainer(config, run=run if rank == 0 else None)
        if rank != 0:
            for _ in trainer.run():  # events are only yielded (and written) on rank 0
                pass
            return 0
        run.create(config, overwrite=args.overwrite)
        return _finish(consume(trainer.run(), quiet=args.quiet), run.path)
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


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
        return str(base / v) if isinstance(v, str) and v and not Path(v).is_absolute() else v

    for name, keys in (("data", ("label_maps", "real_images", "real_labels")), ("recovery", ("val_label_maps",)),
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
    from .runs import RunFolder
    from .trainer import Trainer

    run = RunFolder(args.run_dir)
    config = run.load_config()
    if run.latest_checkpoint() is None:
        raise L2SError(f"{run.path}: no checkpoint to resume from yet")
    if args.steps is not None:
        config.training.steps = args.steps
        from .runs import _yaml_dump, atomic_write_text

        atomic_write_text(run.config_path, _yaml_dump(config.to_dict()))
    trainer = Trainer(config, run=run, resume=True)
    return _finish(consume(trainer.run(), quiet=args.quiet), run.path)


def cmd_watch(args) -> int:
    from .events import DoneEvent, StepEvent, ValidationEvent
    from .runs import RunFolder

    run = RunFolder(args.run_dir)
    if not run.exists():
        raise L2SError(f"{run.path}: not a run folder (no config.yaml)")
    offset = 0
    while True:
        events, offset = run.read_events(offset)
        for e in events:
            if isinstance(e, StepEvent) and (args.once is False or e is events[-1]):
                print(f"step {e.step}: Ls={e.loss_synth:.4f}" + (f" Lr={e.loss_real:.4f}" if e.loss_real else "")
                      + f" {_format_theta(e.theta)} {e.it_per_s:.2f} it/s")
            elif isinstance(e, ValidationEvent):
                print(f"step {e.step}: validation Dice {e.mean_dice:.4f}")
            elif isinstance(e, DoneEvent):
                print(f"done ({e.reason}) at step {e.step} {e.message}")
        state = run.read_state()
        if args.once or state.get("status") in ("finished", "stopped", "error"):
            print(f"status: {state.get('status', 'unknown')}, step {state.get('step')}/{state.get('total_steps')}"
                  f" on {state.get('device')}")
            return 0
        time.sleep(1.0)


def cmd_segment(args) -> int:
    from .segment import segment_files

    model = Path(args.model)
    if model.is_dir():
        model = model / "model.safetensors"
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
    run.create(config, overwrite=args.overwrite)
    print(f"l2s demo: training on the built-in sample (MNI152 T1 from nilearn) in {run_dir}", file=sys.stderr)
    code = _finish(consume(trainer.run()), run_dir)
    if code:
        return code
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


COMMANDS = {"train": cmd_train, "resume": cmd_resume, "watch": cmd_watch, "segment": cmd_segment, "demo": cmd_demo}


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except L2SError as exc:
        print(f"l2s: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("l2s: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
