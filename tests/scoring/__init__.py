"""Tests of lightning_dynamical/scoring."""
