"""Models: acoustic models (teacher and student from one width-scaled family) and image MLPs."""
