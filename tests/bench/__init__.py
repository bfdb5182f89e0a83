"""Tests of lightning_dynamical/bench."""
