"""Tests of the evaluate stage's components."""
