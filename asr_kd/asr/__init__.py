"""Speech-recognition pieces: decoding, scoring, CTC spike guidance, frame-level distillation."""
