"""Training: ``python -m diffusion_lit.train [overrides]``.

``train(cfg)`` does the work (and is what tests call); ``main`` only wraps it for Hydra.
"""

import errno
import logging
import os
from pathlib import Path

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from diffusion_lit import checks, cli
from diffusion_lit.errors import BadValue, UserError, first_line
from diffusion_lit.modelfile.checkpoint import read_checkpoint
from diffusion_lit.training import extension
from diffusion_lit.training.config import build, model_spec
from diffusion_lit.training.module import DiffusionModule
from diffusion_lit.training.resume import (
    NEWEST,
    check_same_model,
    continue_csv_log,
    find_checkpoint,
    interrupted_checkpoint,
    wandb_run_id,
)

log = logging.getLogger(__name__)


def _container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def _setup_wandb(cfg: DictConfig) -> None:
    """Gives the wandb logger its run's id (kept in the run dir, so a resumed run continues the
    same wandb run), and runs wandb offline instead of waiting for a login when no API key is
    set."""
    wandb_nodes = [
        c for c in (cfg.get("logger") or {}).values() if c and "WandbLogger" in str(c._target_)
    ]
    for node in wandb_nodes:
        with open_dict(node):
            node.id = node.get("id") or wandb_run_id(cfg.paths.run_dir)
            node.resume = "allow"
    netrc = Path.home() / ".netrc"
    logged_in = os.environ.get("WANDB_API_KEY") or (
        netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")
    )
    if wandb_nodes and not logged_in and "WANDB_MODE" not in os.environ:
        log.info("No wandb API key found: logging offline (sync later with `wandb sync`).")
        os.environ["WANDB_MODE"] = "offline"


def check(cfg: DictConfig) -> None:
    """The values no object the run builds checks: every other is checked by its owner (the
    data module, the UNet, the schedule, ...) as it is built, before any work."""
    checks.integer("seed", cfg.seed, 0, checks.MAX_SEED)
    if cfg.ckpt_path != NEWEST:
        checks.path("ckpt_path", cfg.ckpt_path, optional=True)
    # torch's optimizers take any lr ≥ 0 (inf too), and Lightning any max_epochs
    checks.real("optimizer.lr", OmegaConf.select(cfg, "optimizer.lr"), 0, None, above=True)
    checks.integer("trainer.max_epochs", cfg.trainer.get("max_epochs"), -1, 10**9, optional=True)


def build_trainer(cfg: DictConfig, **kwargs) -> L.Trainer:
    """The configured Trainer; a value it refuses (an accelerator this machine lacks, a
    precision it does not know) is a one-line error naming it."""
    try:
        return build(cfg.trainer, **kwargs)
    except (MisconfigurationException, ValueError, TypeError) as err:
        raise UserError(
            f"The trainer refuses its settings: {first_line(err)}. Fix the trainer.* value it "
            "names (e.g. trainer=cpu on a machine without a GPU)."
        ) from err


def build_module(
    cfg: DictConfig, datamodule, base: extension.Base | None = None, replay_mode: str = "none"
) -> DiffusionModule:
    """The model the config describes, around a UNet built from it (started from ``base``'s
    weights when given), with the training options; the optimizer and its schedule tried once
    on it, so that a value they refuse stops the run here."""
    net = build(cfg.model, "model")
    spec = model_spec(cfg, datamodule.class_names, datamodule.class_prompts,
                      datamodule.attribute_words, datamodule.synonyms)  # fmt: skip
    if base is not None:
        spec = extension.start(cfg, base, net, spec, datamodule, replay_mode)
    module = DiffusionModule(
        spec,
        spec.build(net),
        optimizer=build(cfg.optimizer, "optimizer"),
        lr_scheduler=build(cfg.lr_scheduler, "lr_scheduler") if cfg.get("lr_scheduler") else None,
        min_snr_gamma=cfg.get("min_snr_gamma"),
        text_noise=cfg.text_noise,
        channels_last=cfg.channels_last,
        compile=cfg.compile,
        compile_mode=cfg.compile_mode,
        seed=cfg.seed,
    )
    try:
        optimizer = module.optimizer(params=module.trained_parameters())
    except (ValueError, TypeError) as err:
        raise UserError(
            f"The optimizer refuses its settings: {first_line(err)}. Fix the optimizer.* value "
            "it names."
        ) from err
    if module.lr_scheduler is not None:
        try:
            module.lr_scheduler(optimizer, lambda: 1)
        except BadValue as err:
            raise err.under("lr_scheduler") from None
    return module


def train(cfg: DictConfig, extra_callbacks: list | None = None) -> tuple[dict[str, float], dict]:
    """Trains the configured model (plus ``extra_callbacks``, for scripts that watch a run),
    resuming from ``cfg.ckpt_path`` when set, else from the newest checkpoint its run dir already
    holds (a requeued or restarted job); returns the final metrics and the objects built."""
    check(cfg)
    checkpoint = find_checkpoint(cfg.ckpt_path, cfg.paths.output_dir)
    if checkpoint is None and (checkpoint := interrupted_checkpoint(cfg.paths.run_dir)):
        log.info("%s already holds %s: continuing that run", cfg.paths.run_dir, checkpoint.name)
    resumed, resumed_spec = read_checkpoint(checkpoint) if checkpoint else (None, None)
    L.seed_everything(cfg.seed, workers=True)
    # everything a value can be refused by is built before anything slow (the text encoder)
    base = extension.read_base(cfg)
    datamodule = build(cfg.data, "data")
    replay_mode, replay_classes = "none", []
    if base is not None:
        datamodule.extend(base.spec.class_names, base.spec.class_prompts, base.spec.attributes)
        replay_mode, replay_classes = extension.replayed(cfg, base, datamodule)
    module = build_module(cfg, datamodule, base, replay_mode)
    if resumed:
        check_same_model(checkpoint, resumed_spec, module.spec)
        log.info("Resuming from %s (step %d)", checkpoint, resumed["global_step"])
    _setup_wandb(cfg)
    loggers = [build(c, f"logger.{k}") for k, c in (cfg.get("logger") or {}).items() if c]
    callbacks = [build(c, f"callbacks.{k}") for k, c in (cfg.get("callbacks") or {}).items() if c]
    if not loggers:  # it has nowhere to write and would stop the run
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    callbacks += extra_callbacks or []
    trainer = build_trainer(cfg, callbacks=callbacks, logger=loggers or False)
    module.encode_prompts(build(cfg.text_encoder, "text_encoder"))
    if base is not None:
        log.info("Starting from %s: %s", base.path, ", ".join(module.spec.class_names))
        module.replay = extension.replay_set(cfg, base, datamodule, replay_mode, replay_classes)
    for logger in loggers:
        if resumed and isinstance(logger, CSVLogger) and trainer.is_global_zero:
            continue_csv_log(logger, resumed["global_step"])
        logger.log_hyperparams(_container(cfg))

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
            raise
        raise UserError(
            f"Cannot write {err.filename or 'to the run directory'}: {err.strerror}. Free some "
            "disk space or set paths.output_dir to a writable folder, then resume with "
            "ckpt_path=last; the checkpoints already saved are untouched."
        ) from err
    finally:
        if any(isinstance(logger, WandbLogger) for logger in loggers):
            import wandb

            wandb.finish()  # Lightning leaves the run open: the next train() would reuse it
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    return metrics, {"trainer": trainer, "module": module, "datamodule": datamodule}


@cli.command("train")
def main(cfg: DictConfig) -> float | None:
    metrics, _ = train(cfg)
    return metrics.get(cfg.get("optimized_metric", "val/loss"))  # for Hydra sweepers


if __name__ == "__main__":
    main()
