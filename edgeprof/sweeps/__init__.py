"""The main job: a sweep plan, its runner, and the decisions (frontier, recommendation, gate)."""
