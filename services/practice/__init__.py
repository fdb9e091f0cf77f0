"""Peer-helper practice: persona role-play, an intent classifier and coaching feedback (port 8006)."""
