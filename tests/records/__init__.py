"""Tests of lightning_dynamical/records."""
