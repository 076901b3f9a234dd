"""Optimisation: per-frame body fitting and the PINA global optimisation."""
