"""Benchmarks that print figures (never timed tests): `nets` (`python -m model bench`), `video` (`python -m model bench-video`)."""
