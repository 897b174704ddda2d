"""Where bfloat16 is fast: the one answer behind the precision defaults of training
(``${fast_precision:...}``) and sampling (``precision=auto``)."""

import torch

SAMPLING_PRECISIONS = ("auto", "32", "bf16-mixed")


def native_bf16(device_type: str) -> bool:
    """Whether a ``cuda`` or ``cpu`` device computes bfloat16 natively: a CUDA GPU with bf16; a
    CPU with AVX512-BF16/AMX or Arm BF16, through oneDNN. Elsewhere bf16 is emulated, and slower
    than 32-bit."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    # torch has no public query for oneDNN's native bf16
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def for_training(accelerator: str) -> str:
    """``${fast_precision:${trainer.accelerator}}``: the Trainer's ``bf16-mixed`` where
    ``accelerator`` computes bf16 natively, else ``32`` (measured in bench/RESULTS.md)."""
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if native_bf16("cuda" if gpu else "cpu") else "32"


def for_sampling(precision: str, device_type: str) -> str:
    """Sampling's ``auto`` → ``bf16-mixed`` where the device computes bf16 natively, else
    ``32``; an explicit ``32`` or ``bf16-mixed`` as given."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if native_bf16(device_type) else "32"
