"""Tests of lightning_dynamical/cli."""
