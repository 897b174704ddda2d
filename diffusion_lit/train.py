"""Training entry point: ``python -m diffusion_lit.train [overrides]``.

``train(cfg)`` does the work (and is what tests call); ``main`` only wraps it for Hydra.
"""

import logging
import os
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from diffusion_lit.config import build
from diffusion_lit.module import DiffusionModule

log = logging.getLogger(__name__)


def _container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def _wandb_offline_unless_logged_in(cfg: DictConfig) -> None:
    """wandb asks for a login when it has no API key; run it offline instead of waiting."""
    uses_wandb = any(
        "WandbLogger" in str(c.get("_target_")) for c in (cfg.get("logger") or {}).values() if c
    )
    netrc = Path.home() / ".netrc"
    logged_in = os.environ.get("WANDB_API_KEY") or (
        netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")
    )
    if uses_wandb and not logged_in and "WANDB_MODE" not in os.environ:
        log.info("No wandb API key found: logging offline (sync later with `wandb sync`).")
        os.environ["WANDB_MODE"] = "offline"


def train(cfg: DictConfig, extra_callbacks: list | None = None) -> tuple[dict[str, float], dict]:
    """Trains the configured model (plus ``extra_callbacks``, for scripts that watch a run);
    returns the final metrics and the objects it built."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build(cfg.data)
    encoder = build(cfg.text_encoder)  # fails here, before any work, if unavailable
    module = DiffusionModule(
        net=_container(cfg.model),
        schedule=_container(cfg.schedule),
        optimizer=_container(cfg.optimizer),
        text_encoder=_container(cfg.text_encoder),
        class_names=datamodule.class_names,
        class_prompts=datamodule.class_prompts,
        channels_last=cfg.channels_last,
        compile=cfg.compile,
    )
    module.encode_prompts(encoder)
    del encoder

    _wandb_offline_unless_logged_in(cfg)
    loggers = [build(c) for c in (cfg.get("logger") or {}).values() if c]
    callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values() if c]
    callbacks += extra_callbacks or []
    trainer = build(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(_container(cfg))

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    return metrics, {"trainer": trainer, "module": module, "datamodule": datamodule}


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    metrics, _ = train(cfg)
    return metrics.get(cfg.get("optimized_metric", "val/loss"))  # for Hydra sweepers


if __name__ == "__main__":
    main()
