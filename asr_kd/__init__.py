"""asr-kd: knowledge distillation for speech recognition."""

__version__ = "0.1.0"
