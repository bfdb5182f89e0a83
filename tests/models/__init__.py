"""Tests of lightning_dynamical/models."""
