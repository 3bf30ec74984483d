"""Operator commands (`logship status`): they read what the programs keep, never change it."""
