"""What the Hydra commands share: the packaged configs (``conf/``, installed as the package
``diffusion_lit.conf``), the one place that registers what those configs need (the resolvers
of the training config and the ``sampling`` group), and one-line errors."""

import functools

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue

from diffusion_lit.diffusion import options, precision
from diffusion_lit.errors import UserError, first_line, report_user_errors
from diffusion_lit.runs import layout
from diffusion_lit.training import resume

CONFIG_MODULE = "diffusion_lit.conf"


def register() -> None:
    """Registers the configs' resolvers (``${run_file:...}``, ``${fast_precision:...}``,
    ``${resume_run_dir:...}``, ``${config_subdir:...}``) and the ``sampling`` config group
    (:class:`~diffusion_lit.diffusion.options.SamplingOptions`' defaults). Every command does
    it before composing its config; so must a script that composes them with Hydra's API."""
    resolvers = {
        "run_file": layout.run_file,
        "fast_precision": precision.for_training,
        "resume_run_dir": resume.resume_run_dir,
        "config_subdir": resume.config_subdir,
    }
    for name, resolver in resolvers.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True)
    ConfigStore.instance().store(group="sampling", name="default", node=options.config_group())


def command(config_name: str):
    """Makes ``run(cfg)`` a Hydra command over the packaged config ``config_name``: the
    resolvers registered first, and a :class:`UserError` (or a config value the command cannot
    read) reported as one ``error:`` line with exit status 2."""

    def wrap(run):
        @functools.wraps(run)
        def checked(cfg: DictConfig):
            try:
                return run(cfg)
            except (ConfigAttributeError, ConfigKeyError, MissingMandatoryValue) as err:
                # a key removed (~key) or left at ???
                raise UserError(
                    f"The config cannot be read: {first_line(err)}. Give the value it names."
                ) from err

        task = hydra.main(
            config_path=f"pkg://{CONFIG_MODULE}",
            config_name=config_name,
            version_base="1.3",
        )(report_user_errors(checked))

        @functools.wraps(run)
        def main():
            register()
            return task()

        return main

    return wrap


def compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """A command's config as its command line would compose it (without Hydra's own keys):
    for the web page's defaults, and for scripts."""
    register()
    if GlobalHydra.instance().is_initialized():  # inside a running command: its search path
        return hydra.compose(config_name, overrides=overrides or [])
    with hydra.initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        return hydra.compose(config_name, overrides=overrides or [])
