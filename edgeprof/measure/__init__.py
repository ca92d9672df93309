"""Measurement: warm-up detection, statistics, diagnoses and the profiling loop."""
