# The configs are data; this file makes conf/ the package diffusion_lit.conf (see pyproject.toml),
# which Hydra reads as pkg://diffusion_lit.conf, from a checkout or an installed wheel alike.
