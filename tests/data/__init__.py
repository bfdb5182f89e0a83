"""Tests of lightning_dynamical/data."""
