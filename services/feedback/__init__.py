"""Feedback loop service (port 8007): arena, votes, leaderboard, online A/B, adapter operations."""
