"""The web page (Gradio) of ``python -m diffusion_lit.demo``: its layout (``app``) and what its
buttons do (``actions``). Needs the ``demo`` extra."""
