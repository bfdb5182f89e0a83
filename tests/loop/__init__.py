"""Tests of lightning_dynamical/loop."""
