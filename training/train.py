"""Train the two-stream multi-task network (depth, semantic, motion) on the Cityscapes multi-task layout.

TI edgeai-torchvision's recipe by default (Adam 1e-4, weight decay 1e-4, 5 warm-up epochs, x0.5 at epochs
100 and 200, 250 epochs, batch 16, its augmentation, best checkpoint by motion mIoU); the task weighting of
``--multi_task_type``. Read top to bottom: get_dataset, train_one_epoch, main; parse_args at the end.

    python training/train.py --img_resize 384 768 --output_size 1024 2048 --gpus 0 1
    python training/train.py --multi_task_type uncertainty --img_resize 384 768 --output_size 1024 2048 \
        --gpus 0 1
    torchrun --nproc_per_node 2 training/train.py --device cpu ...      # DDP on the CPU (gloo)

Outputs in --output_dir: checkpoint.pt (resume), best.pt (the model the node and export_model load),
metrics.json, tensorboard/, best.onnx; one run per folder at a time (.lock). See docs/training.md.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from mtl_perception.atomic import atomic_group
from mtl_perception.cli import tool_main
from mtl_perception.data.cityscapes import num_semantic_classes
from mtl_perception.data.flow_folder import check_training_flow, make_flow_command
from mtl_perception.folder_lock import folder_lock
from mtl_perception.inference.export import export_onnx, file_source
from mtl_perception.learning.augment import TrainAugment
from mtl_perception.learning.dataset import CityscapesMultiTask, check_split
from mtl_perception.learning.distributed import (
    DistContext,
    all_reduce_mean,
    barrier,
    broadcast_object,
    check_amp,
    launch,
    launched_by_torchrun,
)
from mtl_perception.learning.evaluation import EvalResize, ShardSampler, collate_by_size, evaluate
from mtl_perception.learning.finite import NonFiniteError, check_finite_state, first_non_finite
from mtl_perception.learning.losses import TI_CLASS_WEIGHTS, build_criterion
from mtl_perception.learning.options import (
    build_parser,
    check_args,
    check_split_size,
    method_options,
    resolve_run_config,
    run_config,
)
from mtl_perception.learning.output_dir import (
    BEST,
    CHECKPOINT,
    ONNX,
    carry_best_checkpoint,
    check_output_dir,
    last_checkpoint_note,
    prepare_output_dir,
)
from mtl_perception.learning.pretrained import load_pretrained
from mtl_perception.learning.run_log import RunLog, epoch_line, peak_memory_mb, summary_line
from mtl_perception.learning.sampling import EpochShuffleSampler, SeededAugment
from mtl_perception.learning.schedule import WarmupMultiStep
from mtl_perception.learning.training_state import (
    check_resume,
    check_resume_contract,
    load_training_state,
    restore_training_state,
    save_training_state,
)
from mtl_perception.learning.weighting import build_weighting
from mtl_perception.model import FlowContract, InputContract, build_model, open_checkpoint, save_checkpoint
from mtl_perception.model.contract import contract_for

PIVOT = {
    "motion": ("val/motion_miou", +1),
    "semantic": ("val/semantic_miou", +1),
    "depth": ("val/depth_ard", -1),
}


INPUTS = ("image", "flow")


def streams_for(tasks) -> tuple[str, ...]:
    """TI's inputs: motion needs the flow stream (RGB + flow); depth and semantic alone use RGB only."""
    return ("flow", "image") if "motion" in tasks else ("image",)


def get_dataset(args, *, split: str, train: bool) -> torch.utils.data.Dataset:
    root = Path(args.data_path)
    check_split(root, split)
    use_flow = "flow" in streams_for(args.tasks)
    try:
        dataset = CityscapesMultiTask(
            root,
            split,
            use_flow=use_flow,
            flow_folder=args.flow_folder,
            semantic_mode=args.semantic_mode,
            transform=None if train else EvalResize(tuple(args.img_resize)),
        )
    except FileNotFoundError as exc:
        hint = ""
        if use_flow and args.flow_folder in str(exc):
            flow = FlowContract(size=tuple(args.img_resize))
            hint = f" (make the flow inputs with: {make_flow_command(root, split, flow, overwrite=True)})"
        raise FileNotFoundError(f"--data_path {root}, split {split!r}: {exc}{hint}") from exc
    if not train:
        return dataset
    # TI's train augmentation, drawn per (seed, epoch, sample) so resume, workers and DDP see the same data.
    augment = TrainAugment(tuple(args.img_resize), rotation=args.transform_rotation)
    return SeededAugment(dataset, augment, seed=args.seed)


def training_flow(args) -> FlowContract:
    """The flow the network learns from, as its folder's manifest records it: checked to be complete, made
    at --img_resize and alike on both splits (else one line naming the make_flow_dataset command)."""
    if "flow" not in streams_for(args.tasks):  # an RGB-only network: no flow; the size is still recorded
        return FlowContract(size=tuple(args.img_resize))
    splits = [args.train_split, args.val_split]
    return check_training_flow(args.data_path, splits, tuple(args.img_resize), folder=args.flow_folder)


def input_contract(args, config) -> InputContract:
    """The training flow, the tasks and the classes: every checkpoint of the run carries it, so the node,
    evaluation and export feed the model what it learned on."""
    return contract_for(config, training_flow(args), semantic_mode=args.semantic_mode)


def build_loaders(args, ctx: DistContext):
    if args.batch_size % ctx.world_size:
        raise ValueError(f"--batch_size {args.batch_size}: not divisible by the {ctx.world_size} processes")
    train_set = get_dataset(args, split=args.train_split, train=True)
    val_set = get_dataset(args, split=args.val_split, train=False)
    sampler = EpochShuffleSampler(
        len(train_set),
        seed=args.seed,
        global_batch=args.batch_size,
        rank=ctx.rank,
        world_size=ctx.world_size,
        steps=args.epoch_size or None,
    )
    common = {
        "num_workers": args.workers,
        "pin_memory": ctx.device.type == "cuda",
        # persistent workers are safe: the epoch reaches the dataset with each index, not through set_epoch.
        "persistent_workers": args.workers > 0,
        "prefetch_factor": args.prefetch_factor if args.workers > 0 else None,
    }
    generator = torch.Generator().manual_seed(args.seed)  # workers' base seed; saved in checkpoint.pt
    train_loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=args.batch_size // ctx.world_size,
        sampler=sampler,
        drop_last=True,
        generator=generator,
        **common,
    )
    val_loader = torch.utils.data.DataLoader(
        val_set,
        batch_size=max(1, args.batch_size // ctx.world_size),
        sampler=ShardSampler(len(val_set), rank=ctx.rank, world_size=ctx.world_size),
        collate_fn=collate_by_size,  # a split may mix cameras: ground truth of several sizes
        # its own generator: how often a loader draws worker seeds depends on the worker count, and that
        # must not move the global generator (dropout) or resume would depend on --workers
        generator=torch.Generator().manual_seed(args.seed),
        **common,
    )
    return train_loader, val_loader, sampler, generator


def build_network(args, ctx: DistContext):
    torch.manual_seed(args.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    overrides = {} if args.dropout is None else {"dropout": args.dropout}
    model = build_model(
        preset=args.preset,
        tasks=args.tasks,
        streams=streams_for(args.tasks),
        num_semantic_classes=num_semantic_classes(args.semantic_mode),
        **overrides,
    )
    if args.pretrained and not args.resume:
        report = load_pretrained(model, args.pretrained)
        if ctx.is_main:
            print(report.summary(), file=sys.stderr)
    return model


def to_device(batch: dict, ctx: DistContext, channels_last: bool) -> dict:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return {
        k: v.to(ctx.device, non_blocking=True, memory_format=fmt if k in INPUTS else torch.preserve_format)
        for k, v in batch.items()
        if isinstance(v, torch.Tensor)
    }


def train_one_epoch(
    model, criterion, weighting, optimizer, loader, *, ctx, args, epoch, global_step, log, grad_scaler=None
):
    """One pass over the training split; returns (the epoch's record, global_step). ``grad_scaler``: the
    float16 GradScaler (--amp_dtype float16); the weighting scales the backward by its scale itself. Stops
    with NonFiniteError at the first non-finite loss or state (network parameters and buffers, weighting)."""
    model.train()
    if args.freeze_bn:  # BatchNorm as a fixed affine map: running statistics, never updated
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    net = getattr(model, "module", model)
    shared_parameters = list(net.trunk[-1].parameters())  # GradNorm (paper): the last shared layer
    tasks = net.tasks
    amp = torch.autocast(ctx.device.type, dtype=amp_dtype(args)) if args.amp else contextlib.nullcontext()
    loss_sums = torch.zeros(len(tasks), dtype=torch.float64)
    weight_sums, weight_steps = dict.fromkeys(tasks, 0.0), 0
    steps, start = 0, time.perf_counter()
    bar = tqdm(
        loader,
        desc=f"epoch {epoch + 1}/{args.epochs}",
        unit="step",
        disable=not ctx.is_main,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    for step, batch in enumerate(bar):
        batch = to_device(batch, ctx, args.channels_last)
        with amp:
            if weighting.needs_features:
                predictions, features = model(batch["image"], batch.get("flow"), return_features=True)
            else:
                predictions, features = model(batch["image"], batch.get("flow")), None
            losses = criterion(predictions, batch)
        losses = {t: losses[t].float() for t in tasks}
        # One small all-reduce per step: the mean losses to log, and every rank sees a non-finite loss of
        # any rank, so all stop together instead of hanging in the next collective.
        mean = all_reduce_mean(torch.stack([losses[t].detach() for t in tasks])).cpu().double()
        bad = [(t, v) for t, v in zip(tasks, mean.tolist(), strict=True) if not math.isfinite(v)]
        where = f"epoch {epoch + 1} step {step + 1} (global step {global_step + 1})"
        if bad:
            kept = last_checkpoint_note(Path(args.output_dir))
            raise NonFiniteError(
                f"non-finite loss at {where}: "
                + ", ".join(f"{t} = {v}" for t, v in bad)
                + f"; training stopped, {kept}"
            )
        optimizer.zero_grad(set_to_none=True)
        weights = weighting.backward(
            losses, shared_features=features, shared_parameters=shared_parameters, grad_scaler=grad_scaler
        )
        if grad_scaler is None:
            optimizer.step()
        else:  # unscales, and skips the step if a gradient overflowed float16 (then lowers the scale)
            grad_scaler.step(optimizer)
            grad_scaler.update()
        if weighting.needs_losses_after_step:  # FAMO: the same batch, re-evaluated after the step
            with torch.no_grad(), amp:
                after = criterion(model(batch["image"], batch.get("flow")), batch)
            weighting.after_step(losses_after={t: after[t].float() for t in tasks})
        # what the next step computes with; the optimizer's state is checked before each save
        check_finite_state(
            where=f"after {where}",
            kept=lambda: last_checkpoint_note(Path(args.output_dir)),
            model=model,
            weighting=weighting,
        )
        loss_sums += mean
        # NaN weights: a float16 overflow step, skipped by the GradScaler
        if grad_scaler is None or all(math.isfinite(w) for w in weights.values()):
            weight_steps += 1
            for t in tasks:
                weight_sums[t] += float(weights[t])
        steps += 1
        global_step += 1
        if log is not None:  # also warns (once) when a loss explodes
            log.step(
                global_step,
                dict(zip(tasks, mean.tolist(), strict=True)),
                weights,
                optimizer.param_groups[0]["lr"],
                where=where,
            )
        bar.set_postfix(loss=f"{float(mean.sum()):.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    elapsed = time.perf_counter() - start
    record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
    for i, t in enumerate(tasks):
        record[f"loss/{t}"] = float(loss_sums[i]) / max(steps, 1)
        record[f"weight/{t}"] = weight_sums[t] / weight_steps if weight_steps else float("nan")
    record["time_per_step_s"] = elapsed / max(steps, 1)
    record["samples_per_s"] = steps * args.batch_size / elapsed if elapsed > 0 else 0.0
    record["peak_memory_mb"] = peak_memory_mb(ctx.device)
    return record, global_step


def amp_dtype(args) -> torch.dtype:
    return torch.float16 if args.amp_dtype == "float16" else torch.bfloat16


def train_worker(ctx: DistContext, args) -> dict | None:
    if args.amp:
        check_amp(ctx.device, amp_dtype(args))
    output_dir = Path(args.output_dir)
    if ctx.is_main:
        prepare_output_dir(output_dir, overwrite=args.overwrite, resume=args.resume)
    train_loader, val_loader, sampler, generator = build_loaders(args, ctx)
    model = build_network(args, ctx)
    contract = input_contract(args, model.config)
    weighting = build_weighting(args.multi_task_type, tasks=model.tasks, **method_options(args))
    # On the device before the optimizer exists: a resumed Adam state is then loaded onto the device too.
    weighting.to(ctx.device)
    model.to(ctx.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(
        [{"params": model.parameters()}, *weighting.optimizer_param_groups()],
        lr=args.lr,
        betas=(0.9, 0.999),
        weight_decay=args.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupMultiStep(args.warmup_epochs, args.warmup_factor, args.milestones, args.gamma)
    )
    class_weights = None
    if args.class_weights == "ti":
        class_weights = {t: torch.tensor(TI_CLASS_WEIGHTS[t]) for t in model.tasks if t in TI_CLASS_WEIGHTS}
    criterion = build_criterion(
        tasks=model.tasks, class_weights=class_weights, class_weight_probability=args.class_weight_probability
    )
    grad_scaler = None
    if args.amp and amp_dtype(args) == torch.float16:
        grad_scaler = torch.amp.GradScaler(ctx.device.type)
    start_epoch, global_step, best, history = 0, 0, None, []
    if args.resume:
        state = load_training_state(args.resume)
        check_resume_contract(args.resume, state, contract)
        start_epoch, global_step, best, history = restore_training_state(
            state,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            weighting=weighting,
            sampler=sampler,
            loader_generator=generator,
            grad_scaler=grad_scaler,
        )
        if ctx.is_main:
            carry_best_checkpoint(Path(args.resume).parent, output_dir)
    if ctx.distributed:
        if args.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    net = getattr(model, "module", model)
    log = None
    if ctx.is_main:
        log = RunLog(
            output_dir,
            history=history,
            resumed_at=global_step,
            semantic_mode=args.semantic_mode,
            loss_warn_factor=args.loss_warn_factor,
        )
    pivot_key, sign = next(PIVOT[t] for t in ("motion", "semantic", "depth") if t in net.tasks)
    try:
        for epoch in range(start_epoch, args.epochs):
            sampler.set_epoch(epoch)
            record, global_step = train_one_epoch(
                model,
                criterion,
                weighting,
                optimizer,
                train_loader,
                ctx=ctx,
                args=args,
                epoch=epoch,
                global_step=global_step,
                log=log,
                grad_scaler=grad_scaler,
            )
            scheduler.step()
            weighting.end_epoch(mean_losses={t: record[f"loss/{t}"] for t in net.tasks})
            check_finite_state(  # nothing non-finite is validated or saved
                where=f"at the end of epoch {epoch + 1} (global step {global_step})",
                kept=lambda: last_checkpoint_note(output_dir),
                model=model,
                weighting=weighting,
                optimizer=optimizer,
                grad_scaler=grad_scaler,
            )
            if (epoch + 1) % args.evaluate_every == 0 or epoch + 1 == args.epochs:
                metrics = evaluate(
                    model,
                    val_loader,
                    tasks=net.tasks,
                    device=ctx.device,
                    output_size=tuple(args.output_size),
                    num_semantic_classes=net.config.num_semantic_classes,
                    progress=f"validate {epoch + 1}/{args.epochs}" if ctx.is_main else None,
                )
                record.update({f"val/{k}": float(v) for k, v in metrics.items()})
            if ctx.is_main:
                # best.pt, metrics.json and checkpoint.pt replace the last epoch's together, or not at all
                with atomic_group():
                    score = record.get(pivot_key)
                    if (
                        score is not None
                        and math.isfinite(score)
                        and (best is None or sign * (score - best["value"]) > 0)
                    ):
                        best = {"metric": pivot_key, "value": score, "epoch": epoch + 1}
                        save_checkpoint(
                            output_dir / BEST,
                            net,
                            contract=contract,  # the node and evaluate.py feed it what it learned on
                            overwrite=True,
                            epoch=epoch + 1,
                            metric=pivot_key,
                            value=score,
                        )
                    if args.tensorboard_images and pivot_key in record:
                        log.predictions(
                            net, val_loader.dataset, ctx.device, global_step, args.tensorboard_images
                        )
                    log.epoch(record, global_step)
                    save_training_state(
                        output_dir / CHECKPOINT,
                        model=net,
                        optimizer=optimizer,
                        scheduler=scheduler,
                        weighting=weighting,
                        sampler=sampler,
                        epoch=epoch + 1,
                        global_step=global_step,
                        best=best,
                        history=log.history,
                        loader_generator=generator,
                        run_config=run_config(args),
                        grad_scaler=grad_scaler,
                        contract=contract,
                    )
                print(epoch_line(record, epochs=args.epochs, tasks=net.tasks, best=best), flush=True)
            best = broadcast_object(best)
            barrier()
    finally:
        if log is not None:
            log.close()
    if ctx.is_main and args.export_onnx and (output_dir / BEST).is_file():
        best_model, _, best_contract = open_checkpoint(output_dir / BEST)
        bad = first_non_finite(best_model.state_dict().items())
        if bad:  # best.pt is checked before it is saved; a file changed since is not exported
            raise NonFiniteError(f"{output_dir / BEST}: non-finite {bad}; not exported")
        source = file_source(output_dir / BEST)
        export_onnx(best_model, output_dir / ONNX, contract=best_contract, force=True, source=source)
    if ctx.is_main:
        print(summary_line(best, history=log.history, output_dir=output_dir), flush=True)
    return best


def main(args) -> dict | None:
    """Check everything that can be checked before a process starts or a file is written, then train
    (one process per GPU for --gpus 0 1) holding the lock of --output_dir. Returns the best validation
    score (single process)."""
    check_args(args)
    train_set = get_dataset(args, split=args.train_split, train=True)  # missing data fails before any write
    get_dataset(args, split=args.val_split, train=False)
    training_flow(args)  # flow made otherwise than the network trains at fails here too
    note = check_split_size(args, len(train_set))
    if note:
        print(f"train.py: {note}", file=sys.stderr)
    output_dir = Path(args.output_dir)
    check_output_dir(output_dir, overwrite=args.overwrite, resume=args.resume)  # a refusal writes nothing
    if args.resume:
        state = check_resume(args.resume, run_config(args), resolve=resolve_run_config)
        if state["epoch"] >= args.epochs:
            print(
                f"train.py: --resume {args.resume}: the run has trained {state['epoch']} epochs, --epochs "
                f"{args.epochs}: nothing to do (pass a larger --epochs to train on)",
                file=sys.stderr,
            )
            return state["best"]
    # torchrun starts every rank with this command: rank 0 holds the folder for all of them
    holder = not launched_by_torchrun() or os.environ["RANK"] == "0"
    with folder_lock(output_dir) if holder else contextlib.nullcontext():
        check_output_dir(output_dir, overwrite=args.overwrite, resume=args.resume)  # as found under the lock
        return launch(train_worker, args, gpus=args.gpus, device=args.device)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags (``mtl_perception.learning.options``); ``python training/train.py --help`` lists them."""
    return build_parser().parse_args(argv)


@tool_main("mtl_train", name="train.py")
def cli(argv: list[str] | None = None) -> int:
    """Entry point: a known problem is one line on stderr and exit status 2, never a traceback (also from
    a DataLoader worker or a spawned DDP process: mtl_perception.cli)."""
    main(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
