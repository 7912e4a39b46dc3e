"""Continual-learning task streams, learners and metrics (to come; see DESIGN.md)."""
