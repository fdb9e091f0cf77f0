"""Content moderation for tutorstack: the single place for the moderation rules (no FastAPI).

    from safety import get_moderator
    moderator = get_moderator()                  # models loaded once per process
    moderator.check("I want to kill myself")     # [Finding("self_harm", 0.97, "lexicon")]
    moderator.redact_pii("mail ann@example.com")  # ("mail [email]", ["email"])

See docs/safety.md.
"""

from safety.moderator import CATEGORIES, KINDS, Finding, Moderator, detect_language, get_moderator

__all__ = ["CATEGORIES", "KINDS", "Finding", "Moderator", "detect_language", "get_moderator"]
