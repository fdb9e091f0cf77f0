"""Guided (Socratic) learning: a deterministic tutoring policy, a learner model in Redis, and an
answer-leak guard around the LLM's phrasing. Port 8003. See docs/guided.md."""
