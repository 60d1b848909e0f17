"""vram-operator: run inference servers on GPUs by VRAM."""

__version__ = "0.1.0"
