"""Tests of lightning_dynamical/oracles."""
