"""Tests of lightning_dynamical/reporting."""
