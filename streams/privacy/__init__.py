"""Pseudonymisation: what turns a finding into a sealed finding, the only kind that
leaves the process (`sealed.py`)."""

__all__: list[str] = []
