"""The diffusion maths, with no Lightning: the noise schedule, the samplers, classifier-free
guidance, sampling precision and options, and the model that samples with them."""
