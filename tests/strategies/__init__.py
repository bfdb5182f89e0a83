"""Tests of lightning_dynamical/strategies."""
