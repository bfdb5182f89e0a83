"""Tests of lightning_dynamical/tasks."""
