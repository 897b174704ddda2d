"""Where bfloat16 is fast: the one answer behind the precision defaults of training
(``${fast_precision:...}``) and sampling (``precision=auto``)."""

import torch


def native_bf16(device_type: str) -> bool:
    """Whether a ``cuda`` or ``cpu`` device computes bfloat16 natively: a CUDA GPU with bf16; a
    CPU with AVX512-BF16/AMX or Arm BF16, through oneDNN. Elsewhere bf16 is emulated, and slower
    than 32-bit."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def sampling_precision(precision: str, device_type: str) -> str:
    """``auto`` → ``bf16-mixed`` where the device computes bf16 natively, else ``32``; an explicit
    ``32`` or ``bf16-mixed`` as given."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if native_bf16(device_type) else "32"
